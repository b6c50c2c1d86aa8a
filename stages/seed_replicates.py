"""DVC stages train_encoder@<seed>-<variant> and evaluate@<seed> of seeds/dvc.yaml -> clcae/seed_replicates.py.

python stages/seed_replicates.py train --seed 1 --variant clcae   (torchrun works as for train_encoder)
python stages/seed_replicates.py evaluate --seed 1
"""
import argparse

from clcae import seed_replicates
from clcae.config import stage_main

if __name__ == "__main__":
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("step", choices=["train", "evaluate"])
    ap.add_argument("--seed", type=int, required=True, help="a seed of seeds.seeds")
    ap.add_argument("--variant", help="a variant of seeds.variants (train)")
    known, rest = ap.parse_known_args()
    if known.step == "train" and known.variant is None:
        ap.error("train needs --variant")
    steps = {"train": lambda p: seed_replicates.train(p, known.seed, known.variant),
             "evaluate": lambda p: seed_replicates.evaluate(p, known.seed)}
    stage_main(steps[known.step], rest)
