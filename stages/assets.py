"""DVC stage `assets` of ffhq/dvc.yaml: the paper config's external files -> clcae/worlds/ffhq/assets.py."""
from clcae.pipeline import stage_main
from clcae.worlds.ffhq.assets import run

if __name__ == "__main__":
    stage_main(run)
