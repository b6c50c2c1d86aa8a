"""Peak signal-to-noise ratio on [0, 1] images (data range 1), as scikit-image computes it.

Per image, so a paired bootstrap over images is possible. The MSE is floored at 1e-12 (120 dB)
so identical images give a finite figure rather than scikit-image's inf.
"""
from __future__ import annotations

import math

import torch

from clcae.metrics.mse import mse01
from clcae.metrics.registry import register_metric

MSE_FLOOR = 1e-12


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of MSEs on [0, 1] images (data range 1)."""
    return 10 * torch.log10(1 / mse.clamp_min(MSE_FLOOR))


@register_metric("psnr", higher_is_better=True)
@torch.inference_mode()
def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image ``[B]`` of [-1, 1] inputs, computed on their [0, 1] scale."""
    return psnr_from_mse(mse01(x, y))


def batch_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """One PSNR for a whole batch: of the MSE pooled over all its pixels (a training log's
    figure; not the mean of the per-image :func:`psnr`). Inputs in [-1, 1]."""
    mse = ((a - b) / 2).pow(2).mean().item()  # images in [-1, 1] -> [0, 1] scale
    return 10 * math.log10(1 / max(mse, MSE_FLOOR))
