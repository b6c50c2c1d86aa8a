"""DVC stage `world`: ProcFaces splits, world CNN, generator check -> clcae/worlds/procfaces/stage.py."""
from clcae.config import stage_main
from clcae.worlds.procfaces.stage import run

if __name__ == "__main__":
    stage_main(run)
