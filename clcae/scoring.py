"""One scoring path for reconstructions: the metric registry's figures and the world's judges, per image.

``train_encoder`` (its held-out figures) and ``evaluate`` score through :func:`score_reconstructions`,
so a figure has one name in every metrics file: the registry's (``mse`` on [0, 1], ``l2_psp`` on
[-1, 1], ``ssim``, ...), the world's perceptual distance (``world.perceptual_name``) and
``<identity>_similarity`` (cosine of the identity embeddings, :func:`identity_column`).

The judges see the target once and every space's reconstructions in one batch
(:meth:`~clcae.worlds.World.judge`): for procfaces, two world-CNN passes per batch of targets
however many spaces are scored.
"""
from __future__ import annotations

import torch

from clcae.metrics import compute, get_metric


def identity_column(world) -> str:
    """The column of the identity similarity to the input, e.g. ``world_id_similarity``."""
    return f"{world.identity_name}_similarity"


@torch.inference_mode()
def score_reconstructions(world, recs: dict[str, torch.Tensor], target: torch.Tensor, metrics: list[str],
                          ctx: dict | None = None, target_id: torch.Tensor | None = None,
                          ) -> dict[str, tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Reconstructions ``{space: [B, 3, S, S]}`` of ``target`` [B, 3, S, S] (in [-1, 1]; renders are
    clamped) -> ``{space: ({column: per-image figure [B]}, the world's features of the render [B, F]
    for Frechet distances)}``.

    ``metrics``: registry names; ``ctx``: what some of them need (e.g. the LPIPS network);
    ``target_id`` [B, D]: the targets' identity embeddings when the caller judged them already."""
    ctx = ctx or {}
    spaces = list(recs)
    recs = {space: rec.clamp(-1, 1) for space, rec in recs.items()}
    cols = {space: {name: compute(name, rec, target, **{k: v for k, v in ctx.items() if k in get_metric(name).context})
                    for name in metrics} for space, rec in recs.items()}
    perceptual = world.perceptual_name not in metrics   # ffhq: the world's perceptual distance is lpips itself
    judged_target = world.judge(target, perceptual=perceptual, identity=target_id is None)
    target_id = judged_target.identity if target_id is None else target_id
    judged = world.judge(torch.cat([recs[s] for s in spaces]), perceptual=perceptual, features=True)
    distance = world.perceptual_between(judged, judged_target).split(len(target)) if perceptual else None
    similarity = (judged.identity.view(len(spaces), len(target), -1) * target_id).sum(-1)   # [spaces, B]
    out = {}
    for i, (space, features) in enumerate(zip(spaces, judged.features.split(len(target)))):
        if perceptual:
            cols[space][world.perceptual_name] = distance[i]
        cols[space][identity_column(world)] = similarity[i]
        out[space] = (cols[space], features)
    return out
