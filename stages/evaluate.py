"""DVC stage `evaluate`: the trained variants on the test split -> clcae/evaluate.py."""
from clcae.config import stage_main
from clcae.evaluate import run

if __name__ == "__main__":
    stage_main(run)
