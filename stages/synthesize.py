"""DVC stage `synthesize`: image-latent pairs from the generator -> clcae/synthesize.py."""
from clcae.config import stage_main
from clcae.synthesize import run

if __name__ == "__main__":
    stage_main(run)
