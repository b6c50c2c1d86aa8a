"""Mean squared error, in the two conventions the literature mixes up.

``mse01`` is the MSE of images scaled to [0, 1] (what "MSE" means in most inversion tables);
``l2_psp`` is pSp's L2, ``F.mse_loss`` on [-1, 1] images, the figure of pSp's and CLCAE's tables
("L2 0.034"). The two differ by exactly a factor 4: ``l2_psp == 4 * mse01``.
"""
from __future__ import annotations

import torch

from clcae.metrics.registry import register_metric


@register_metric("mse", higher_is_better=False)
@torch.inference_mode()
def mse01(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MSE on [0, 1] images ``[B]`` from [-1, 1] inputs (not clamped)."""
    return ((x - y) / 2).square().mean(dim=(1, 2, 3))  # [B]; (x - y) / 2 is the [0, 1] difference


@register_metric("l2_psp", higher_is_better=False)
@torch.inference_mode()
def l2_psp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """pSp's L2: MSE on the [-1, 1] images themselves ``[B]`` (= 4 x :func:`mse01`)."""
    return (x - y).square().mean(dim=(1, 2, 3))  # [B]
