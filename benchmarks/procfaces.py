"""Benchmark: ProcFaces render speed (images/s) for the train and test splits.

Usage: python benchmarks/procfaces.py [n_images]   (default 20000, batch 500)
"""

from __future__ import annotations

import sys
import time

import torch

from clcae.world import procfaces as pf


def main(n: int = 20_000, batch: int = 500) -> None:
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for split in ("train", "test"):
        t0 = time.perf_counter()
        images, u, pid, labels = pf.render_split(split, n_people=n // 10, per_person=10, seed=0,
                                                 batch_size=batch)
        dt = time.perf_counter() - t0
        print(f"{split}: {images.shape[0]} images {tuple(images.shape[1:])} in {dt:.1f} s "
              f"-> {images.shape[0] / dt:.0f} img/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
