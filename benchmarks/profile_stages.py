"""Where the time goes: cProfile of one encoder training step and of ``evaluate``, by project call.

    python benchmarks/profile_stages.py step [--variant clcae] [--steps 4]
    python benchmarks/profile_stages.py evaluate [--test-images 256] [--edit-images 32]

``step``: the ``train_encoder`` stage's own step (``benchmarks/encoder.py``'s ``train`` case: the
default world's judges and trained aligner, batch ``cfg.batch_size``, 64 px), a warm-up step, then
``--steps`` profiled. ``evaluate``: the stage's ``run`` on the committed encoders and directions,
on the first ``--test-images`` test images (editing on ``--edit-images``), writing to a temporary
folder. Prints the cumulative seconds of the calls that matter (the encoder, the generator's
renders, the world's judges, the aligner, the metrics, backward and the optimizer), each as a share
of the whole, and the project's 15 costliest functions by cumulative time. Timings include the
profiler's overhead (small: the work is in torch's kernels).
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

# (label, file suffix, function name): the calls a reader asks about, matched in the profile
CALLS = [
    ("encoder forward", "nets/encoder.py", "forward"),
    ("generator renders", "nets/stylegan2.py", "synthesis"),
    ("world CNN: perceptual", "worlds/procfaces/world.py", "perceptual"),
    ("world CNN: identity", "worlds/procfaces/world.py", "identity"),
    ("world CNN: describe", "worlds/procfaces/world.py", "describe"),
    ("aligner (L_align)", "losses.py", "__call__"),
    ("inversion loss", "losses.py", "forward"),
    ("metric registry", "metrics/registry.py", "compute"),
    ("invert", "clcae/inversion.py", "invert"),
    ("editing sweep", "editing/scores.py", "edit_sweep"),
    ("editing consistency", "editing/scores.py", "editing_consistency"),
    ("Editor.apply", "editing/edit.py", "apply"),
    ("backward", "torch/_tensor.py", "backward"),
    ("optimizer step", "torch/optim/optimizer.py", "wrapper"),
]


def summarise(profile: cProfile.Profile, total: float, what: str) -> None:
    stats = pstats.Stats(profile)
    rows = stats.stats   # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    print(f"# {what}: {total:.2f} s wall, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'call':<24} {'calls':>6} {'cum s':>8} {'share':>6}")
    for label, suffix, name in CALLS:
        hits = [(v[1], v[3]) for (file, _, fn), v in rows.items() if fn == name and file.endswith(suffix)]
        if hits:
            calls, cum = sum(h[0] for h in hits), max(h[1] for h in hits)   # recursion: the outermost
            print(f"{label:<24} {calls:>6} {cum:>8.2f} {cum / total:>6.0%}")
    print("\nthe project's costliest functions (cumulative):")
    own = sorted(((v[3], v[1], f"{Path(file).relative_to(ROOT) if file.startswith(str(ROOT)) else file}:{line} {fn}")
                  for (file, line, fn), v in rows.items() if file.startswith(str(ROOT / "clcae"))), reverse=True)
    for cum, calls, where in own[:15]:
        print(f"  {cum:8.2f} s {calls:>6}x  {where}")


def profile_step(args) -> None:
    from encoder import default_aligner, default_world, samples

    from clcae.config import load_params
    from clcae.losses import AlignLoss, InversionLoss
    from clcae.nets.stylegan2 import load_generator
    from clcae.optim import make_optimizer
    from clcae.pipeline.train_encoder import TrainStep, build_encoder, loss_config

    params, notes = load_params(args.params), []
    G = load_generator(params.shared.generator).eval().requires_grad_(False)
    cfg = params.train_encoder.variant(args.variant)
    size = cfg.image_size or G.size
    world = default_world(params, torch.device("cpu"), notes)
    aligner = default_aligner(params, G, torch.device("cpu"), notes) if cfg.align > 0 else None
    torch.manual_seed(0)
    encoder = build_encoder(cfg, G, size).train()
    loss_fn = InversionLoss(loss_config(cfg), world, AlignLoss(aligner, mode="infonce") if aligner is not None else None)
    opt = make_optimizer(cfg.optimizer, encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = TrainStep(encoder, G, loss_fn, cfg, size, 500)
    x = samples(G, cfg.batch_size, size, torch.device("cpu"))

    def one(i):
        loss, _ = step(x, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    one(0)   # warm-up
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    for i in range(1, args.steps + 1):
        one(i)
    profile.disable()
    total = time.perf_counter() - start
    for note in notes:
        print(f"note: {note}")
    summarise(profile, total, f"train_encoder@{args.variant}: {args.steps} steps of batch {cfg.batch_size} "
                              f"at {size} px ({1000 * total / args.steps:.0f} ms per step)")


def profile_evaluate(args) -> None:
    from clcae.config import load_params
    from clcae.pipeline.evaluate import run

    params = load_params(args.params)
    out = Path(tempfile.mkdtemp(prefix="clcae-profile-"))
    params = dataclasses.replace(params, evaluate=dataclasses.replace(
        params.evaluate, test_images=args.test_images, edit_images=args.edit_images,
        consistency_images=min(params.evaluate.consistency_images, args.edit_images),
        report_dir=str(out / "evaluate"), metrics_file=str(out / "metrics.json")))
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    run(params)
    profile.disable()
    total = time.perf_counter() - start
    summarise(profile, total, f"evaluate on {args.test_images} test images, editing on {args.edit_images}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("step", "evaluate"))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--variant", default="clcae")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--test-images", type=int, default=256)
    ap.add_argument("--edit-images", type=int, default=32)
    args = ap.parse_args(argv)
    {"step": profile_step, "evaluate": profile_evaluate}[args.what](args)


if __name__ == "__main__":
    main()
