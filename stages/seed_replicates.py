"""DVC stages of seeds/dvc.yaml (`dvc repro seeds/dvc.yaml`) -> clcae/seed_replicates.py.

python stages/seed_replicates.py train --seed 1 --variant clcae   (torchrun works as for train_encoder)
python stages/seed_replicates.py evaluate --seed 1
python stages/seed_replicates.py report
"""
import argparse

from clcae import seed_replicates
from clcae.config import stage_main

if __name__ == "__main__":
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("step", choices=["train", "evaluate", "report"])
    ap.add_argument("--seed", type=int, help="a seed of seeds.seeds (train, evaluate)")
    ap.add_argument("--variant", help="a variant of seeds.variants (train)")
    known, rest = ap.parse_known_args()
    if known.step != "report" and known.seed is None or known.step == "train" and known.variant is None:
        ap.error(f"{known.step} needs --seed" + (" and --variant" if known.step == "train" else ""))
    steps = {"train": lambda p: seed_replicates.train(p, known.seed, known.variant),
             "evaluate": lambda p: seed_replicates.evaluate(p, known.seed),
             "report": seed_replicates.report}
    stage_main(steps[known.step], rest)
