"""Synthesize throughput vs the bare generator forward at the same batch size.

Prints pairs/s of the `synthesize` stage code (mapping, synthesis, uint8 conversion, shard
writes) and images/s of a bare ``G(z)`` at the same batch size; the stage should keep >= 90%.
Run: ``python benchmarks/synthesize.py [--generator PATH] [--device cuda] [--n 2000]``.
"""
import argparse
import tempfile
import time

import torch

from clcae.nets.stylegan2 import load_generator
from clcae.pipeline.synthesize import PairSpec, synthesize


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--generator", default="assets/procfaces/generator.pt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    device = torch.device(args.device)
    G = load_generator(args.generator, device)
    z = torch.randn(args.batch, G.style_dim, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        G(z)  # warm-up
        sync()
        start, n = time.perf_counter(), 0
        while n < args.n:
            G(z)
            n += args.batch
        sync()
        bare = n / (time.perf_counter() - start)
    spec = PairSpec(generator=args.generator, n_pairs=args.n, shard_size=max(args.batch, args.n // 4),
                    truncation=1.0, noise_mode="const", resolution=G.size, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        synthesize(G, spec, tmp, batch_size=args.batch, progress=False)
        sync()
        stage = args.n / (time.perf_counter() - start)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}, {args.n} pairs of "
          f"{G.size} px: bare G(z) {bare:.1f} img/s | synthesize {stage:.1f} pairs/s | ratio {stage / bare:.2f}")


if __name__ == "__main__":
    main()
