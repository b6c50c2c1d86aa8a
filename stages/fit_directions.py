"""DVC stage `fit_directions`: InterFaceGAN and GANSpace directions -> clcae/pipeline/fit_directions.py."""
from clcae.pipeline import stage_main
from clcae.pipeline.fit_directions import run

if __name__ == "__main__":
    stage_main(run)
