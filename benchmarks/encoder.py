"""Inversion encoder: training step time, images/s and peak memory; inference images/s.

Three parts (``--only`` runs one):

* ``train``: the default world's training step at its size (64 px), both variants (``clcae``,
  ``psp``), through the trainer's own pieces (``build_encoder``, ``TrainStep``, the world's
  judges, the aligner's ``AlignLoss``, ``make_optimizer``), bf16 autocast on CUDA as the trainer
  (and on the CPU with ``--cpu-amp`` or ``shared.cpu_amp``).
  Judges: the world stage's world CNN (``data/world/``) and aligner (``data/aligner/aligner.pt``)
  when present, else randomly initialised nets of the params' sizes (said in the output):
  speed does not depend on the weights.
* ``paper``: the paper configuration, one 256 px image through an IR-SE50 (width 64) encoder
  and a randomly initialised 1024 px config-f generator, on the CPU at batch 1 (and on CUDA
  at batch 4 when there is one). Loss: L2, identity through a random IR-SE50 ArcFace, F
  regularisation, align through a random paper-size aligner; LPIPS-AlexNet only when its
  weights are on disk (otherwise skipped, and said).
* ``infer``: ``clcae.inversion.invert`` (G(w), G(w+), G(w+, f)): the default world's encoder
  (``data/encoder/clcae/encoder.pt`` if trained, else a fresh one) at batch 32, and the paper
  configuration at batch 1 on the CPU (16 on CUDA).

Inputs are generator samples. Warm-up steps are excluded; figures are medians over the
timed steps (forward, backward and optimizer step apart; CUDA synchronised between them).
Every case runs in its own subprocess, so its peak RSS (``getrusage``) is its own; on CUDA
``torch.cuda.max_memory_allocated`` is reported too.

Run: ``python benchmarks/encoder.py [--device cuda] [--steps 10] [--only train|paper|infer]
[--json reports/bench_encoder.json] [--quick]``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PAPER_SIZE, PAPER_G = 256, 1024


# ----------------------------------------------------------------------------- measuring


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def peak_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory(device: torch.device, rss_setup: float) -> dict:
    out = {"rss_setup_mib": round(rss_setup), "peak_rss_mib": round(peak_rss_mib())}
    if device.type == "cuda":
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def timed(phases, warmup: int, steps: int, device: torch.device) -> dict[str, float]:
    """``phases(i)`` gives step i's [(name, callable)], run in turn; ``warmup + steps`` steps.
    Median seconds per phase over the timed steps, and the median of their per-step sum."""
    times: dict[str, list[float]] = {}
    for i in range(warmup + steps):
        for name, fn in phases(i):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times.setdefault(name, []).append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    med["total"] = statistics.median([sum(parts) for parts in zip(*times.values())])
    return med


# ----------------------------------------------------------------------------- building


def samples(G, n: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """``n`` generator images in [-1, 1] at ``size`` (the inputs: timing does not depend on them)."""
    from clcae.data import resize_square

    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.inference_mode():
        for z in torch.randn(n, G.style_dim, generator=g).split(8):
            out.append(resize_square(G(z.to(device)), size).clamp(-1, 1))
    return torch.cat(out).clone()


def default_world(params, device: torch.device, notes: list[str]):
    from clcae.worlds import load_world

    try:
        world = load_world(params, device)
        notes.append(f"world: {world.name} judges from {params.world.out_dir}")
        return world
    except FileNotFoundError as e:
        if params.shared.world != "procfaces":
            raise
        from clcae.worlds.procfaces.world import ProcFacesWorld
        from clcae.worlds.procfaces.world_cnn import WorldCNN

        wc = params.world.world_cnn
        notes.append(f"world: RANDOM WorldCNN{tuple(wc.widths)} ({e.__class__.__name__}: "
                     f"{str(e).split(' (')[0]}); timing does not depend on the weights")
        torch.manual_seed(0)
        return ProcFacesWorld(WorldCNN(widths=tuple(wc.widths), emb_dim=wc.emb_dim), params.world.out_dir).to(device)


def default_aligner(params, G, device: torch.device, notes: list[str]):
    from clcae.nets.aligner import Aligner, load_aligner
    from clcae.pipeline.train_aligner import aligner_config

    path = Path(params.train_aligner.out_dir) / "aligner.pt"
    if path.is_file():
        notes.append(f"aligner: {path}")
        return load_aligner(path, device)
    notes.append(f"aligner: RANDOM ({path} missing)")
    cfg = aligner_config(params.train_aligner, params.synthesize.resolution or G.size, G.style_dim)
    torch.manual_seed(0)
    return Aligner(cfg).to(device).eval()


def paper_config(notes: list[str]):
    """The paper's encoder training settings: configs/ffhq.yaml's ``train_encoder`` (variant
    clcae) when it has one, else the paper's values (DESIGN.md) over the defaults."""
    from clcae.config import EncoderTrainConfig, load_params, read_yaml

    path = ROOT / "configs" / "ffhq.yaml"
    if path.is_file() and "train_encoder" in read_yaml(path):
        cfg = load_params(path).train_encoder.variant("clcae")
        notes.append(f"paper settings: {path.relative_to(ROOT)} train_encoder.variants.clcae")
    else:
        cfg = EncoderTrainConfig()
        notes.append("paper settings: DESIGN.md values (configs/ffhq.yaml has no train_encoder block)")
    return dataclasses.replace(cfg, image_size=cfg.image_size or PAPER_SIZE, num_layers=50, width=64,
                               l2=1.0, identity=0.1, freg=1.0, align=0.1, optimizer="ranger")


def paper_generator(device: torch.device):
    from clcae.nets.stylegan2 import Generator

    torch.manual_seed(0)
    return Generator(PAPER_G, 512, 8, channel_multiplier=2).to(device).eval().requires_grad_(False)


def paper_judges(cfg, G, device: torch.device, notes: list[str]):
    """(cfg with perceptual set to what can run, perceptual, identity, aligner): random IR-SE50
    ArcFace and aligner; LPIPS-AlexNet only if its backbone file is there."""
    from clcae.nets.aligner import Aligner, AlignerConfig
    from clcae.nets.irse import Backbone, IDEncoder

    torch.manual_seed(0)
    identity = IDEncoder(Backbone(112, 50, "ir_se")).to(device)
    notes.append("identity: RANDOM ArcFace IR-SE50 (face crop, 112 px)")
    aligner = Aligner(AlignerConfig(image_size=cfg.image_size, style_dim=G.style_dim)).to(device).eval()
    notes.append("align: RANDOM paper-size aligner (IR-SE50, 512-d)")
    perceptual = None
    try:
        from clcae.worlds.ffhq.judges import load_lpips_alex

        lp = load_lpips_alex().to(device)
        perceptual = lambda x, y: lp(x, y).flatten()  # noqa: E731 - [B]
        notes.append("perceptual: LPIPS-AlexNet")
    except (FileNotFoundError, ImportError) as e:
        notes.append(f"perceptual: LPIPS SKIPPED ({str(e).split('. ')[0]})")
        cfg = dataclasses.replace(cfg, perceptual=0.0)
    return cfg, perceptual, identity.forward, aligner


# ----------------------------------------------------------------------------- cases


def train_case(cfg, G, image_size: int, judge, aligner, batch: int, steps_per_epoch: int,
               device: torch.device, warmup: int, steps: int, notes: list[str], cpu_amp: bool = False,
               channels_last: bool = False) -> dict:
    """The trainer's step (clcae/pipeline/train_encoder.py): autocast forward, backward, optimizer step."""
    from clcae.losses import AlignLoss, InversionLoss
    from clcae.optim import make_optimizer
    from clcae.pipeline.train_encoder import TrainStep, build_encoder, loss_config
    from clcae.steps import check_finite

    torch.manual_seed(0)
    encoder = build_encoder(cfg, G, image_size).to(device).train()
    if channels_last:   # as the trainer: the encoder (and the frozen aligner) in NHWC
        encoder.to(memory_format=torch.channels_last)
        if aligner is not None:
            aligner.to(memory_format=torch.channels_last)
        notes.append("encoder, generator and judges in channels_last (shared.channels_last)")
    align = AlignLoss(aligner, mode="infonce") if cfg.align > 0 else None
    loss_fn = InversionLoss(loss_config(cfg), judge, align)
    opt = make_optimizer(cfg.optimizer, encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step_fn = TrainStep(encoder, G, loss_fn, cfg, image_size, steps_per_epoch)
    x = samples(G, batch, image_size, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" or cpu_amp)
    if cpu_amp and device.type == "cpu":
        notes.append("forward in bf16 autocast on the CPU (shared.cpu_amp)")
    state: dict = {}
    rss_setup = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def forward(i):
        with autocast:
            state["loss"], terms = step_fn(x, i)
        check_finite(terms, i, "benchmark")  # the trainer's host sync, once per step
        state["terms"] = sorted(k for k in terms if k != "total")

    def backward():
        opt.zero_grad(set_to_none=True)
        state.pop("loss").backward()

    t = timed(lambda i: [("forward", lambda: forward(i)), ("backward", backward), ("optimizer", opt.step)],
              warmup, steps, device)
    notes.append("terms: " + " ".join(state["terms"]))
    return {"batch": batch, "image_size": image_size, "generator_size": G.size, "warmup": warmup, "steps": steps,
            "parameters": sum(p.numel() for p in encoder.parameters()),
            "ms": {k: round(v * 1000, 1) for k, v in t.items()}, "images_per_s": round(batch / t["total"], 3),
            **memory(device, rss_setup)}


def infer_case(encoder, G, batch: int, device: torch.device, warmup: int, steps: int) -> dict:
    from clcae.inversion import invert

    images = samples(G, batch, encoder.cfg.image_size, device)
    rss_setup = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = timed(lambda i: [("invert", lambda: invert(encoder, G, images, batch_size=batch))], warmup, steps, device)
    return {"batch": batch, "image_size": encoder.cfg.image_size, "generator_size": G.size, "warmup": warmup,
            "steps": steps, "parameters": sum(p.numel() for p in encoder.parameters()),
            "ms": {"total": round(t["total"] * 1000, 1)}, "images_per_s": round(batch / t["total"], 3),
            **memory(device, rss_setup)}


def run_case(name: str, args) -> dict:
    """One case in this process: ``train/<variant>``, ``paper/<device>``, ``infer/world``, ``infer/paper-<device>``."""
    from clcae.config import load_params
    from clcae.nets.stylegan2 import load_generator

    part, what = name.split("/")
    notes: list[str] = []
    quick = args.quick
    if part == "paper" or what.startswith("paper"):
        device = torch.device("cpu" if what.endswith("cpu") else "cuda")
        warmup, steps = (0, 1) if quick else (args.paper_warmup, args.paper_steps)
        G = paper_generator(device)
        cfg = paper_config(notes)
        if part == "paper":
            batch = args.paper_batch if device.type == "cpu" else args.paper_batch_cuda
            from clcae.worlds.base import CallableJudge

            cfg, perceptual, identity, aligner = paper_judges(cfg, G, device, notes)
            result = train_case(cfg, G, cfg.image_size, CallableJudge(perceptual, identity), aligner, batch, 1000,
                                device, warmup, steps, notes)
        else:
            from clcae.pipeline.train_encoder import build_encoder

            batch = args.paper_infer_batch if device.type == "cpu" else args.paper_infer_batch_cuda
            torch.manual_seed(0)
            encoder = build_encoder(cfg, G, cfg.image_size).to(device).eval()
            notes.append("encoder: fresh paper configuration (IR-SE50, width 64)")
            result = infer_case(encoder, G, batch, device, warmup, steps)
    else:
        device = torch.device(args.device)
        warmup, steps = (1, 2) if quick else (args.warmup, args.steps)
        params = load_params(args.params)
        G = load_generator(params.shared.generator, device=device, channels_last=params.shared.channels_last)
        G.eval().requires_grad_(False)
        if part == "train":
            cfg = params.train_encoder.variant(what)
            image_size = cfg.image_size or G.size
            batch = args.batch or cfg.batch_size
            world = default_world(params, device, notes)
            aligner = default_aligner(params, G, device, notes) if cfg.align > 0 else None
            per_epoch = max(1, params.world.train_people * params.world.train_per_person // batch)
            result = train_case(cfg, G, image_size, world, aligner, batch, per_epoch,
                                device, warmup, steps, notes, cpu_amp=args.cpu_amp or params.shared.cpu_amp,
                                channels_last=params.shared.channels_last)
        else:
            from clcae.nets.encoder import load_encoder
            from clcae.pipeline.train_encoder import build_encoder

            path = Path(params.train_encoder.out_dir) / "clcae" / "encoder.pt"
            if path.is_file():
                encoder = load_encoder(path, device)
                notes.append(f"encoder: {path}")
            else:
                cfg = params.train_encoder.variant("clcae")
                torch.manual_seed(0)
                encoder = build_encoder(cfg, G, cfg.image_size or G.size).to(device)
                notes.append(f"encoder: fresh clcae ({path} missing)")
            result = infer_case(encoder.eval(), G, args.infer_batch, device, warmup, steps)
    return {"case": name, "device": str(device), **result, "notes": notes}


# ----------------------------------------------------------------------------- driver


def cases(args) -> list[str]:
    cuda = torch.cuda.is_available() and not args.no_cuda
    parts = [args.only] if args.only else ["train", "paper", "infer"]
    out = []
    for part in parts:
        if part == "train":
            out += ["train/clcae", "train/psp"]
        elif part == "paper":
            out += ["paper/cpu"] + (["paper/cuda"] if cuda else [])
        else:
            out += ["infer/world", "infer/paper-cpu"] + (["infer/paper-cuda"] if cuda else [])
    return out


def in_subprocess(name: str, argv: list[str]) -> dict:
    """Run one case in a fresh interpreter, so that its peak RSS is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "case.json"
        cmd = [sys.executable, __file__, *argv, "--case", name, "--case-out", str(out)]
        proc = subprocess.run(cmd, cwd=os.getcwd())
        if proc.returncode or not out.is_file():
            return {"case": name, "error": f"exit status {proc.returncode}", "notes": []}
        return json.loads(out.read_text())


def machine() -> dict:
    return {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def print_table(rows: list[dict]) -> None:
    head = (f"{'case':18s} {'device':6s} {'batch':>5s} {'px':>4s} {'G px':>5s} {'fwd ms':>9s} {'bwd ms':>9s} "
            f"{'opt ms':>7s} {'ms/step':>9s} {'img/s':>8s} {'RSS setup/peak':>16s} {'peak CUDA':>9s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['case']:18s} FAILED ({r['error']})")
            continue
        ms = r["ms"]
        cell = lambda k, ms=ms: f"{ms[k]:.1f}" if k in ms else "-"
        cuda = f"{r['peak_cuda_mib']} MiB" if "peak_cuda_mib" in r else "-"
        print(f"{r['case']:18s} {r['device']:6s} {r['batch']:5d} {r['image_size']:4d} {r['generator_size']:5d} "
              f"{cell('forward'):>9s} {cell('backward'):>9s} {cell('optimizer'):>7s} {ms['total']:9.1f} "
              f"{r['images_per_s']:8.{2 if r['images_per_s'] >= 1 else 3}f} {r['rss_setup_mib']:6d}/{r['peak_rss_mib']:5d} MiB {cuda:>9s}")
    notes = {}
    for r in rows:
        for n in r.get("notes", []):
            notes.setdefault(n, []).append(r["case"])
    for n, where in notes.items():
        print(f"  note [{', '.join(where)}]: {n}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="device of the default world's parts (train, infer/world)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median), default-world cases")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first, default-world cases")
    ap.add_argument("--paper-steps", type=int, default=3, help="timed steps of the paper cases")
    ap.add_argument("--paper-warmup", type=int, default=1)
    ap.add_argument("--only", choices=("train", "paper", "infer"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 warm-up + 2 steps (paper: 0 + 1)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--batch", type=int, default=0, help="training batch (0: the params' batch_size)")
    ap.add_argument("--cpu-amp", action="store_true", help="train cases: bf16 autocast on the CPU (shared.cpu_amp)")
    ap.add_argument("--infer-batch", type=int, default=32)
    ap.add_argument("--paper-batch", type=int, default=1)
    ap.add_argument("--paper-batch-cuda", type=int, default=4)
    ap.add_argument("--paper-infer-batch", type=int, default=1)
    ap.add_argument("--paper-infer-batch-cuda", type=int, default=16)
    ap.add_argument("--no-cuda", action="store_true", help="skip the paper cases on CUDA")
    ap.add_argument("--in-process", action="store_true",
                    help="all cases in this process (faster; peak RSS then accumulates over cases)")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case
    ap.add_argument("--case-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.case:
        result = run_case(args.case, args)
        args.case_out.write_text(json.dumps(result))
        return
    info = machine()
    print(f"machine: {info['processor']}, {info['cpu_count']} CPUs, {info['torch_threads']} torch threads, "
          f"torch {info['torch']}" + (f", {info['cuda']}" if info["cuda"] else "") + ("  [--quick]" if args.quick else ""))
    child, skip = [], False  # the children get our flags but --json
    for a in argv:
        if not skip and not a.startswith("--json"):
            child.append(a)
        skip = a == "--json"
    rows = []
    for name in cases(args):
        print(f"... {name}", flush=True)
        rows.append(run_case(name, args) if args.in_process else in_subprocess(name, child))
    print_table(rows)
    if args.json:
        from clcae.io import save_json

        save_json({"machine": info, "quick": args.quick, "cases": rows}, args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
