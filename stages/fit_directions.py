"""DVC stage `fit_directions`: InterFaceGAN and GANSpace directions -> clcae/fit_directions.py."""
from clcae.config import stage_main
from clcae.fit_directions import run

if __name__ == "__main__":
    stage_main(run)
