"""DVC stage `train_encoder@<variant>`: the CLCAE inversion encoder -> clcae/train_encoder.py.

python stages/train_encoder.py --variant clcae        (one process)
torchrun --nproc_per_node 8 stages/train_encoder.py --variant clcae   (DDP)
"""
import argparse

from clcae.config import stage_main
from clcae.train_encoder import run

if __name__ == "__main__":
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--variant", default="clcae", help="a key of train_encoder.variants (default: clcae)")
    known, rest = ap.parse_known_args()
    stage_main(lambda params: run(params, known.variant), rest)
