"""Memory of one rank reading the aligner's batches from memory-mapped shards, and the step time.

1. Peak memory: synthetic 256 px pair shards (random uint8 images, 1,000 pairs per shard) of
   ``--small`` and ``--large`` pairs; a fresh process per size opens them as ``train_aligner`` does
   (``clcae.pipeline.synthesize.open_pairs``), reads ``--steps`` batches of the aligner's global batch and
   converts each to float, as the step does. Printed: peak RSS (``ru_maxrss``: private memory plus
   the file pages the process has touched, which the ranks of a node share through the page cache
   and the kernel can drop) and peak private memory (``RssAnon``), with the in-memory path
   (``load_pairs``: every shard read and concatenated) for the small set. The issue's bar: the
   peak RSS of the two sizes differs by under 0.5 GiB. Each reader starts from a cold page cache
   when the benchmark runs as root (``/proc/sys/vm/drop_caches``); otherwise the file pages in
   RSS depend on what the cache holds (just-written shards map in large folios).
2. Step time at 64 px: the default aligner's training step (params.yaml's train_aligner) fed by
   in-memory indexing (the old path) and by the DataLoader over the mapped shards (0 and 2 workers).

Run: ``python benchmarks/shards.py [--small 5000] [--large 25000] [--steps 40] [--dir /tmp/x]``.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from clcae.io import save_torch


def write_pairs(folder: Path, n: int, size: int, style_dim: int = 512, shard: int = 1000) -> None:
    """Random pairs in synthesize's layout (shards, stats.pt; no manifest: treated as finished)."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for k, start in enumerate(range(0, n, shard)):
        m = min(shard, n - start)
        save_torch({"images": torch.randint(0, 256, (m, 3, size, size), dtype=torch.uint8, generator=gen),
                    "w": torch.randn(m, style_dim, generator=gen), "shard_seed": k}, folder / f"shard_{k:05d}.pt")
    save_torch({"w_avg": torch.zeros(style_dim), "image_avg": torch.zeros(1, 3, size, size)}, folder / "stats.pt")


def rss_anon_gib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def drop_page_cache() -> bool:
    """Start each measurement from a cold page cache (root only). Freshly written shards sit in the
    cache as large folios, and a fault on a mapped page then maps the whole folio: the touched file
    pages in RSS would depend on what ran before, not on the reader."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def read_batches(folder: str, steps: int, batch: int, mode: str) -> dict:
    """In a fresh process: the aligner's batches, peak memory."""
    from clcae.images import to_float
    from clcae.pipeline.synthesize import load_pairs, open_pairs
    from clcae.shards import batch_loader
    from clcae.training import BatchSchedule

    peak_anon, start = 0.0, time.perf_counter()
    if mode == "mapped":
        pairs, _ = open_pairs(folder)
        schedule = BatchSchedule(len(pairs), batch, seed=0)
        for images_u8, _w in batch_loader(pairs, schedule, 0, steps):
            x = to_float(images_u8)
            peak_anon = max(peak_anon, rss_anon_gib())
        n = len(pairs)
    else:
        images, w, _ = load_pairs(folder)
        schedule = BatchSchedule(len(w), batch, seed=0)
        for step in range(steps):
            idx = schedule(step)
            x = to_float(images[idx])
            peak_anon = max(peak_anon, rss_anon_gib())
        n = len(w)
    del x
    return {"pairs": n, "mode": mode, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_private_gib": peak_anon, "seconds": time.perf_counter() - start}


def memory(args, root: Path) -> None:
    gib = 3 * 256 * 256 / 2**30
    rows = []
    for n in (args.small, args.large):
        folder = root / f"pairs_{n}"
        if not (folder / "stats.pt").exists():
            print(f"writing {n} pairs of 256 px ({n * gib:.2f} GiB) to {folder} ...", flush=True)
            write_pairs(folder, n, 256)
        for mode in (("mapped", "in_memory") if n == args.small else ("mapped",)):
            cold = drop_page_cache()
            out = subprocess.run([sys.executable, __file__, "--child", str(folder), mode, str(args.steps),
                                  str(args.batch)], capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['pairs']:>6} pairs ({r['pairs'] * gib:5.2f} GiB of images), {r['mode']:>9}: "
                  f"peak RSS {r['peak_rss_gib']:.2f} GiB, peak private {r['peak_private_gib']:.2f} GiB "
                  f"({args.steps} batches of {args.batch}, {r['seconds']:.1f} s, "
                  f"{'cold page cache' if cold else 'page cache as left (not root: not dropped)'})", flush=True)
    mapped = [r for r in rows if r["mode"] == "mapped"]
    print(f"mapped: peak RSS {args.large} - {args.small} pairs = "
          f"{mapped[1]['peak_rss_gib'] - mapped[0]['peak_rss_gib']:+.2f} GiB (bar: < 0.5 GiB); "
          f"peak private {mapped[1]['peak_private_gib'] - mapped[0]['peak_private_gib']:+.2f} GiB", flush=True)


def step_time(args, root: Path) -> None:
    from clcae.config import load_params
    from clcae.images import to_float
    from clcae.losses import InfoNCELoss
    from clcae.nets.aligner import Aligner
    from clcae.pipeline.synthesize import load_pairs, open_pairs
    from clcae.pipeline.train_aligner import aligner_config
    from clcae.shards import batch_loader
    from clcae.training import BatchSchedule

    cfg = load_params("params.yaml").train_aligner
    folder = root / "pairs_64"
    if not (folder / "stats.pt").exists():
        write_pairs(folder, 16000, 64, shard=4000)   # the default run's 16,000 pairs at 64 px
    torch.manual_seed(0)
    model = Aligner(aligner_config(cfg, 64, 512)).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = InfoNCELoss(cfg.lambda_i2w)

    def step(images_u8, w):
        h_i, h_w, scale = model(to_float(images_u8), w)
        loss = loss_fn(h_i, h_w, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(batches) -> float:
        it = iter(batches)
        step(*next(it))   # warm-up (and the workers' start)
        start, n = time.perf_counter(), 0
        for b in it:
            step(*b)
            n += 1
        return (time.perf_counter() - start) / n * 1000

    images, w, _ = load_pairs(folder)
    schedule = BatchSchedule(len(w), cfg.batch_size, seed=0)
    in_memory = timed((images[schedule(s)], w[schedule(s)]) for s in range(args.time_steps + 1))
    pairs, _ = open_pairs(folder)
    results = {"in memory (old)": in_memory}
    for workers in (0, 2):
        results[f"mapped, {workers} workers"] = timed(batch_loader(pairs, schedule, 0, args.time_steps + 1,
                                                                  workers=workers))
    print(f"aligner step at 64 px, batch {cfg.batch_size}, {torch.get_num_threads()} threads, "
          f"{args.time_steps} steps: " + ", ".join(f"{k} {v:.0f} ms ({v / in_memory - 1:+.1%})"
                                                    for k, v in results.items()), flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        folder, mode, steps, batch = sys.argv[2:6]
        print(json.dumps(read_batches(folder, int(steps), int(batch), mode)))
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--large", type=int, default=25000)
    ap.add_argument("--steps", type=int, default=40, help="batches read per size")
    ap.add_argument("--batch", type=int, default=128, help="the aligner's global batch (default params)")
    ap.add_argument("--time-steps", type=int, default=20)
    ap.add_argument("--dir", default=None, help="where the synthetic shards go (default: a temp dir, removed)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    if args.dir:
        memory(args, Path(args.dir))
        step_time(args, Path(args.dir))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            memory(args, Path(tmp))
            step_time(args, Path(tmp))


if __name__ == "__main__":
    main()
