"""DVC stage `evaluate`: the trained variants on the test split -> clcae/pipeline/evaluate.py.

python stages/evaluate.py             (the default run)
python stages/evaluate.py --seed 1    (seeds/dvc.yaml: a seed of seeds.seeds, its own folders)
"""
import argparse

from clcae.pipeline import stage_main
from clcae.pipeline.evaluate import run
from clcae.seeds import seed_params

if __name__ == "__main__":
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--seed", type=int, help="a seed of seeds.seeds (seeds/dvc.yaml's replicates)")
    known, rest = ap.parse_known_args()
    stage_main(run if known.seed is None else (lambda params: run(seed_params(params, known.seed))), rest)
