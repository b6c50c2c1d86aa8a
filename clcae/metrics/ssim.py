"""SSIM and MS-SSIM, written in torch (batched, per image).

SSIM follows scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=...)`` (Wang et al. 2004): an 11-tap
Gaussian window (sigma 1.5, truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, population
covariances, the mean of the SSIM map per channel, then the mean over channels. Borders:
scikit-image filters with reflection and then crops (11 - 1) / 2 = 5 px from each side before
averaging; the cropped region never sees the reflection, so the 'valid' convolution here gives
the same map, and the numbers agree to float rounding (tested). Images are not clamped.

MS-SSIM (Wang et al. 2003) multiplies the contrast-structure term of scales 1..N-1 and the SSIM of
scale N, each to its weight, per channel (negative terms clipped to 0, as pytorch_msssim does),
then averages the channels. Each scale halves the image by 2x2 average pooling (odd sides drop
their last row/column). A scale needs a side of at least 11 px for the window, so the number of
scales is the largest N <= 5 with ``min(H, W) // 2 ** (N - 1) >= 11``: 256 px -> 5 scales,
128 -> 4, 64 -> 3 (64, 32, 16), 32 -> 2, 11..21 -> 1 (= SSIM). The standard five weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333) are truncated to the first N and renormalised to sum 1
when N < 5; at 5 scales they are used as published (their sum is 1.0001), so the figure is the
standard MS-SSIM, pytorch_msssim's ``ms_ssim`` (tested; its code refuses images under 161 px).
Written here because neither pytorch_msssim nor torchmetrics allows fewer scales on small images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clcae.metrics.registry import register_metric

WIN_SIZE = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int = WIN_SIZE, sigma: float = SIGMA, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps ``[size]`` (scipy.ndimage's kernel for radius (size - 1) / 2)."""
    r = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-r.square() / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype)


def _blur_valid(maps: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of every channel, no padding: ``[B, C, H, W] -> [B, C, H-10, W-10]``."""
    c, k = maps.shape[1], win.numel()
    h = F.conv2d(maps, win.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(h, win.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and contrast-structure per image and channel ``([B, C], [B, C])``; [0, 1] inputs."""
    if min(x.shape[-2:]) < WIN_SIZE:
        raise ValueError(f"ssim: images need sides of at least {WIN_SIZE} px, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    win = gaussian_window(dtype=x.dtype, device=x.device)
    stats = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), win)  # [B, 5C, H-10, W-10]
    ux, uy, uxx, uyy, uxy = stats.split(c, dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = K1 ** 2, K2 ** 2  # data range 1
    cs = (2 * vxy + c2) / (vx + vy + c2)
    ssim_map = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1) * cs
    return ssim_map.mean(dim=(2, 3)), cs.mean(dim=(2, 3))


@register_metric("ssim", higher_is_better=True)
@torch.inference_mode()
def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM per image ``[B]`` of [-1, 1] inputs on their [0, 1] scale (scikit-image's figure)."""
    return _ssim_and_cs((x + 1) / 2, (y + 1) / 2)[0].mean(dim=1)


def ms_ssim_scales(height: int, width: int | None = None) -> int:
    """How many MS-SSIM scales an image allows: the largest N <= 5 whose smallest scale keeps
    a side of at least 11 px (64 px -> 3)."""
    side = min(height, width if width is not None else height)
    if side < WIN_SIZE:
        raise ValueError(f"ms_ssim: images need sides of at least {WIN_SIZE} px, got {side}")
    n = 1
    while n < len(MS_SSIM_WEIGHTS) and side // 2 ** n >= WIN_SIZE:
        n += 1
    return n


@register_metric("ms_ssim", higher_is_better=True)
@torch.inference_mode()
def ms_ssim(x: torch.Tensor, y: torch.Tensor, scales: int | None = None) -> torch.Tensor:
    """MS-SSIM per image ``[B]`` of [-1, 1] inputs; ``scales`` defaults to what the size allows."""
    allowed = ms_ssim_scales(*x.shape[-2:])
    n = allowed if scales is None else int(scales)
    if not 1 <= n <= allowed:
        raise ValueError(f"ms_ssim: {tuple(x.shape[-2:])} px images allow 1..{allowed} scales, got {n}")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:n], dtype=x.dtype, device=x.device)  # [N]
    if n < len(MS_SSIM_WEIGHTS):
        weights = weights / weights.sum()
    x, y = (x + 1) / 2, (y + 1) / 2
    terms = []
    for level in range(n):  # scales, not samples: the batch stays whole
        s, cs = _ssim_and_cs(x, y)  # [B, C] each
        terms.append(cs if level < n - 1 else s)
        if level < n - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    terms = torch.stack(terms).relu()  # [N, B, C]
    return (terms ** weights.view(-1, 1, 1)).prod(dim=0).mean(dim=1)  # [B]
