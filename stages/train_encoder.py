"""DVC stage `train_encoder@<variant>`: the CLCAE inversion encoder -> clcae/pipeline/train_encoder.py.

python stages/train_encoder.py --variant clcae        (one process)
torchrun --nproc_per_node 8 stages/train_encoder.py --variant clcae   (DDP)
python stages/train_encoder.py --variant clcae --seed 1   (seeds/dvc.yaml: a seed of seeds.seeds, its own folders)
"""
import argparse

from clcae.pipeline import stage_main
from clcae.pipeline.train_encoder import run
from clcae.seeds import seed_params

if __name__ == "__main__":
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--variant", default="clcae", help="a key of train_encoder.variants (default: clcae)")
    ap.add_argument("--seed", type=int, help="a seed of seeds.seeds (seeds/dvc.yaml's replicates)")
    known, rest = ap.parse_known_args()
    if known.seed is None:
        stage_main(lambda params: run(params, known.variant), rest)
    else:
        stage_main(lambda params: run(seed_params(params, known.seed, known.variant), known.variant), rest)
