"""Train the procfaces world's small StyleGAN2 by regression on rendered faces.

Why regression, not a GAN: ProcFaces renders every image from a standard-normal latent
``u``, so a generator that maps ``z -> render(decode(u(z)))`` has, by construction, the
renderer's distribution of faces and attributes, and it trains stably on a CPU. We use
``u = PixelNorm(z)[:, :LATENT_DIM]`` (the mapping network sees only the normalised z, so u
must be a function of it; for style_dim >> LATENT_DIM these coordinates are close to
standard normal). The loss is L1 at two scales plus an extra L1 on the eyes and mouth
boxes, which a plain pixel loss blurs.

Run: ``python -m clcae.world.train_generator --out assets/procfaces/generator.pt`` (seeded;
resumes from ``<out>.state.pt``; ``--device cuda`` takes minutes on a GPU).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clcae.io import save_image_grid, save_json, save_torch
from clcae.nets.stylegan2 import (ROSINALITY_LR_MLP, Generator, estimate_latent_avg, load_generator,
                                  rosinality_state_dict, save_generator)
from clcae.world import procfaces
from clcae.world.quality import generator_quality, sample_images


@dataclass
class GeneratorTrainConfig:
    size: int = 64
    style_dim: int = 128
    n_mlp: int = 4
    channels: dict[int, int] = field(default_factory=lambda: {4: 128, 8: 128, 16: 128, 32: 64, 64: 32})
    lr_mlp: float = 1.0  # 0.01 barely moves the mapping in a regression (see DESIGN.md)
    steps: int = 20_000
    batch_size: int = 64
    lr: float = 2e-3
    lr_final: float = 5e-5  # cosine decay target
    parts_weight: float = 4.0  # extra L1 weight inside the eye and mouth boxes
    ema_beta: float = 0.998
    seed: int = 0
    max_minutes: float = 0.0  # > 0: stop (and save) after this much wall time


RESUMABLE_CHANGES = ("steps", "max_minutes")  # a resumed run may train longer


def renderer_latent(z: torch.Tensor) -> torch.Tensor:
    """The ProcFaces latent u that the generator's input z stands for: [B, LATENT_DIM]."""
    zn = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
    return zn[:, :procfaces.LATENT_DIM]


def regression_batch(z: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for z: rendered faces [B, 3, S, S] and the eye/mouth mask [B, 1, S, S].

    Rendered on z's device (the renderer's constants follow the default-device context).
    """
    with torch.device(z.device):
        params = procfaces.decode(renderer_latent(z).contiguous())
        return procfaces.render(params, size=size), procfaces.region_mask(params, size=size)


def cosine_lr(cfg: "GeneratorTrainConfig", progress: float) -> float:
    """Cosine decay over training progress in [0, 1] (steps or wall time, whichever is further)."""
    return cfg.lr_final + (cfg.lr - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def regression_loss(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, parts_weight: float):
    l1 = (image - target).abs()
    loss = l1.mean() + F.l1_loss(F.avg_pool2d(image, 2), F.avg_pool2d(target, 2))
    return loss + parts_weight * (l1 * mask).sum() / (mask.sum() * 3 + 1)


def build_generator(cfg: GeneratorTrainConfig) -> Generator:
    return Generator(cfg.size, cfg.style_dim, cfg.n_mlp, channels=cfg.channels, lr_mlp=cfg.lr_mlp)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) / 2).pow(2).mean().item()  # images in [-1, 1] -> [0, 1] scale
    return 10 * math.log10(1 / max(mse, 1e-12))


def init_from_checkpoint(G: Generator, path: str) -> None:
    """Start from a saved generator (fine-tuning), converting its lr_mlp storage scale."""
    state = rosinality_state_dict(load_generator(path))  # mapping stored at lr_mlp = 0.01
    for i in range(1, G.n_mlp + 1):
        for kind in ("weight", "bias"):
            state[f"style.{i}.{kind}"] = state[f"style.{i}.{kind}"] * (ROSINALITY_LR_MLP / G.lr_mlp)
    missing, unexpected = G.load_state_dict(state, strict=False)
    if [k for k in missing if k != "latent_avg"] or unexpected:
        raise ValueError(f"{path}: generator does not match the training config: missing {missing}, "
                         f"unexpected {unexpected}")


def train(cfg: GeneratorTrainConfig, out: str, device: str = "cpu", progress: bool = True,
          init: str | None = None, world_cnn: str | None = None) -> dict:
    """Train (or resume) and write ``out`` (rosinality layout), ``<out>.json`` (figures) and
    ``<out>.samples.png`` (an 8x8 grid).

    ``init``: a generator checkpoint to fine-tune from instead of a random init.
    ``world_cnn``: a world CNN checkpoint; adds the quality figures of :mod:`clcae.world.quality`.
    """
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    G = build_generator(cfg)
    if init:
        init_from_checkpoint(G, init)
    G = G.to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    state_path = f"{out}.state.pt"
    step, elapsed = 0, 0.0
    if os.path.exists(state_path):
        s = torch.load(state_path, map_location=device, weights_only=False)
        changed = sorted(k for k, v in dataclasses.asdict(cfg).items()
                         if k not in RESUMABLE_CHANGES and s["config"].get(k) != v)
        if changed:
            raise ValueError(f"{state_path}: saved run has other {changed}; delete it to start over")
        G.load_state_dict(s["G"]), G_ema.load_state_dict(s["G_ema"])
        opt.load_state_dict(s["opt"])
        step, elapsed = s["step"], s["elapsed"]
        torch.set_rng_state(s["rng"])
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    if step:
        gen.set_state(s["data_rng"])
    z_val = torch.randn(256, cfg.style_dim, generator=torch.Generator().manual_seed(cfg.seed + 2)).to(device)
    target_val, _ = regression_batch(z_val, cfg.size)
    start = time.time() - elapsed
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="generator")
    history = []
    while step < cfg.steps:
        elapsed = time.time() - start
        done = max(step / cfg.steps, elapsed / (cfg.max_minutes * 60) if cfg.max_minutes > 0 else 0.0)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(cfg, done)
        z = torch.randn(cfg.batch_size, cfg.style_dim, generator=gen).to(device)
        target, mask = regression_batch(z, cfg.size)
        loss = regression_loss(G(z, noise_mode="random"), target, mask, cfg.parts_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"generator regression loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            beta = min(cfg.ema_beta, (1 + step) / (10 + step))  # EMA warm-up
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - beta)
        step += 1
        bar.update(1)
        timeout = cfg.max_minutes > 0 and time.time() - start > cfg.max_minutes * 60
        if step % 500 == 0 or step == cfg.steps or timeout:
            with torch.no_grad():
                val = psnr(G_ema(z_val, noise_mode="const"), target_val)
                val_raw = psnr(G(z_val, noise_mode="const"), target_val)
            history.append({"step": step, "loss": loss.item(), "val_psnr": val, "val_psnr_raw": val_raw,
                            "lr": opt.param_groups[0]["lr"], "minutes": (time.time() - start) / 60})
            if not progress:
                print(json.dumps(history[-1]), flush=True)
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{val:.2f}")
            save_torch({"config": dataclasses.asdict(cfg), "G": G.state_dict(), "G_ema": G_ema.state_dict(),
                        "opt": opt.state_dict(), "step": step,
                        "elapsed": time.time() - start, "rng": torch.get_rng_state(),
                        "data_rng": gen.get_state()}, state_path)
        if timeout:
            break
    bar.close()
    G_ema.latent_avg.copy_(estimate_latent_avg(G_ema))
    save_generator(G_ema.cpu(), out)
    with torch.no_grad():
        val = psnr(G_ema.to(device)(z_val, noise_mode="const"), target_val)
    figures = {"init": init, "steps": step, "val_psnr_db": val, "train_minutes": (time.time() - start) / 60,
               "device": str(device), "params": sum(p.numel() for p in G.parameters()),
               "config": dataclasses.asdict(cfg), "history": history}
    save_image_grid(sample_images(G_ema, 64, cfg.seed), f"{out}.samples.png")
    if world_cnn:
        from clcae.world.world_cnn import load_world_cnn

        real = procfaces.render_split("train", 1250, 4, cfg.seed)[0]
        quality, _ = generator_quality(G_ema, load_world_cnn(world_cnn).to(device), real, n=5000, seed=cfg.seed)
        figures["quality"] = quality
    save_json(figures, f"{out}.json")
    return figures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="assets/procfaces/generator.pt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quiet", action="store_true", help="no progress bar; print a JSON line per 500 steps")
    ap.add_argument("--init", default=None, help="fine-tune from this generator checkpoint")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--world-cnn", default=None, help="world CNN checkpoint (data/world/world_cnn.pt) for the "
                                                      "quality figures")
    for f in dataclasses.fields(GeneratorTrainConfig):
        if f.type in ("int", "float"):
            ap.add_argument(f"--{f.name.replace('_', '-')}", type={"int": int, "float": float}[f.type], default=None)
    args = ap.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(GeneratorTrainConfig)
                 if getattr(args, f.name, None) is not None}
    cfg = GeneratorTrainConfig(**overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = train(cfg, args.out, args.device, progress=not args.quiet, init=args.init,
                    world_cnn=args.world_cnn)
    print(json.dumps({k: v for k, v in figures.items() if k not in ("history", "config")}, indent=1))


if __name__ == "__main__":
    main()
