"""Benchmark: ProcFaces render speed (images/s), train split (plain) and test split (details).

Usage: python benchmarks/procfaces.py [n_images] [batch_size]   (default 20000, 500)

Prints the overall rate and the median per-batch rate: on a shared machine the overall figure
also measures the neighbours, the median batch is closer to what the renderer itself does.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from clcae.images import to_uint8
from clcae.worlds.procfaces import procfaces as pf


def bench(split: str, n: int, batch: int) -> None:
    u, _ = pf.sample_split(split, n_people=max(1, n // 10), per_person=10, seed=0)
    details = pf.sample_details(n, torch.Generator().manual_seed(0)) if split == "test" else None
    out = torch.empty(n, 3, 64, 64, dtype=torch.uint8)
    times = []
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        t = time.perf_counter()
        sl = slice(i, min(n, i + batch))
        d = None if details is None else {k: v[sl] for k, v in details.items()}
        out[sl] = to_uint8(pf.render(pf.decode(u[sl]), details=d))
        times.append((time.perf_counter() - t) / (sl.stop - sl.start))
    total = time.perf_counter() - t0
    print(f"{split:5s}: {n} images in {total:.1f} s -> {n / total:.0f} img/s overall, "
          f"{1 / statistics.median(times):.0f} img/s median batch (batch {batch})")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for split in ("train", "test"):
        bench(split, n, batch)


if __name__ == "__main__":
    main()
