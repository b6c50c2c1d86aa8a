"""DVC stage `synthesize`: image-latent pairs from the generator -> clcae/pipeline/synthesize.py."""
from clcae.pipeline import stage_main
from clcae.pipeline.synthesize import run

if __name__ == "__main__":
    stage_main(run)
