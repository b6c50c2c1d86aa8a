"""What every trainer's step shares, whatever its loop: the learning rate (linear warm-up, cosine
decay: :func:`lr_at`, :func:`set_lr`) and the non-finite check before the optimiser step
(:func:`check_finite`).

Its own module so that the world CNN and the generator trainer, which run their own loops, do not
import :mod:`clcae.training`: a change to the encoders' Loop then leaves the `world` stage cached.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def lr_at(step: float, base_lr: float, warmup_steps: int, total_steps: float, final_frac: float = 0.0) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps`` ((step + 1) / warmup_steps), then cosine
    decay to ``final_frac * base_lr`` at ``total_steps``, held after it.

    ``step`` may be a fraction of training (``warmup_steps=0, total_steps=1``) for trainers whose
    progress is steps or wall time, whichever is further.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def check_finite(loss, step: int, term: str) -> None:
    """Raise FloatingPointError naming ``term`` and ``step`` when ``loss`` is NaN or inf.

    ``loss``: a tensor or float, or a dict of them (the message names the bad ones; one host
    sync for all). Call it before the optimiser step, so the last resume point stays good.
    """
    if isinstance(loss, Mapping):
        values = torch.stack([torch.as_tensor(v).detach().to("cpu", torch.float64).reshape(()) for v in loss.values()])
        if bool(torch.isfinite(values).all()):
            return
        bad = {k: v for k, v in zip(loss, values.tolist()) if not math.isfinite(v)}
        raise FloatingPointError(f"{term} step {step}: non-finite {bad}")
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise FloatingPointError(f"{term} step {step}: non-finite {value}")
