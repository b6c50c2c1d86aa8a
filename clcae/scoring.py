"""One scoring path for reconstructions: the metric registry's figures and the world's judges, per image.

``train_encoder`` (its held-out figures) and ``evaluate`` score through :func:`score_reconstructions`,
so a figure has one name in every metrics file: the registry's (``mse`` on [0, 1], ``l2_psp`` on
[-1, 1], ``ssim``, ...), the world's perceptual distance (``world.perceptual_name``) and
``<identity>_similarity`` (cosine of the identity embeddings, :func:`identity_column`).
"""
from __future__ import annotations

import torch

from clcae.metrics import compute, get_metric


def identity_column(world) -> str:
    """The column of the identity similarity to the input, e.g. ``world_id_similarity``."""
    return f"{world.identity_name}_similarity"


@torch.inference_mode()
def score_reconstructions(world, rec: torch.Tensor, target: torch.Tensor, target_id: torch.Tensor,
                          metrics: list[str], ctx: dict | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Reconstructions ``rec`` of ``target`` (both [B, 3, S, S] in [-1, 1]; ``rec`` is clamped) ->
    ({column: per-image figure [B]}, the world's features of ``rec`` [B, F] for Frechet distances).

    ``metrics``: registry names; ``ctx``: what some of them need (e.g. the LPIPS network);
    ``target_id`` [B, D]: the targets' identity embeddings (judged once per split by the caller)."""
    rec = rec.clamp(-1, 1)
    ctx = ctx or {}
    cols = {name: compute(name, rec, target, **{k: v for k, v in ctx.items() if k in get_metric(name).context})
            for name in metrics}
    if world.perceptual_name not in cols:   # ffhq: the world's perceptual distance is lpips itself
        cols[world.perceptual_name] = world.perceptual(rec, target)
    readout = world.describe(rec)
    cols[identity_column(world)] = (readout["identity"] * target_id).sum(1)
    return cols, readout["features"]
