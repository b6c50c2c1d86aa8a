"""DVC stage `world`: ProcFaces splits, world CNN, generator check -> clcae/pipeline/world.py."""
from clcae.pipeline import stage_main
from clcae.pipeline.world import run

if __name__ == "__main__":
    stage_main(run)
