"""pSp's IR-SE feature pyramid and map2style heads, restructured for CLCAE.

pSp's ``GradualStyleEncoder`` fuses feature extraction and the 18 map2style heads in one
module; CLCAE needs the pyramid alone (the aligner's image encoder reads T1 only, the
inversion encoder reads all three levels and adds attention blocks). So the pyramid is
:class:`FeaturePyramid` and the heads are :class:`Map2Style` modules owned by the model
that uses them. Module names keep pSp/CLCAE's layout (``input_layer``, ``body``,
``latlayer1``, ``latlayer2``; heads live in ``styles.N`` of the owning encoder), so an
official ``encoder.*`` state dict converts by renaming prefixes only.

Levels for an input of side S (strides 16 / 8 / 4), with C = 8 * width (512 published):
    T1 (coarse) [B, C, S/16, S/16]: the body's last stage
    T2 (medium) [B, C, S/8,  S/8 ]: upsample(T1) + latlayer1(stage 3)
    T3 (fine)   [B, C, S/4,  S/4 ]: upsample(T2) + latlayer2(stage 2)
A 256 input gives 16x16, 32x32 and 64x64; a 64 input gives 4x4, 8x8 and 16x16.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from clcae.nets.irse import MODES, UNITS, make_body, make_input_layer, stage_ends
from clcae.nets.stylegan2 import EqualLinear


def check_pyramid_sizes(who: str, image_size: int, num_layers: int, mode: str) -> None:
    """ValueError naming ``who``'s field unless the pyramid can be built: side 16 * 2**k (k >= 1),
    a known IR depth and mode."""
    side = image_size // 16
    if image_size % 16 or side < 2 or side & (side - 1):
        raise ValueError(f"{who}.image_size: expected 16 * 2**k with k >= 1 (32, 64, 128, 256, ...), got {image_size}")
    if num_layers not in UNITS:
        raise ValueError(f"{who}.num_layers: expected one of {sorted(UNITS)}, got {num_layers}")
    if mode not in MODES:
        raise ValueError(f"{who}.mode: expected one of {MODES}, got {mode!r}")


class Centred(nn.Module):
    """A model whose inputs are centred on averages kept as buffers ``image_avg`` and ``w_avg``
    (pSp/ReStyle subtract the average image; w is taken relative to the generator's latent_avg).
    The owner registers both buffers in its shape; they are saved with the weights."""

    @torch.no_grad()
    def set_averages(self, image_avg: torch.Tensor | None = None, w_avg: torch.Tensor | None = None) -> None:
        if image_avg is not None:
            self.image_avg.copy_(image_avg.reshape(self.image_avg.shape))
        if w_avg is not None:
            self.w_avg.copy_(w_avg.reshape(self.w_avg.shape))


class Pyramid(NamedTuple):
    t1: torch.Tensor  # coarse [B, C, S/16, S/16]
    t2: torch.Tensor  # medium [B, C, S/8, S/8]
    t3: torch.Tensor  # fine   [B, C, S/4, S/4]


class Map2Style(nn.Module):
    """pSp's GradualStyleBlock: stride-2 3x3 convs down to 1x1, then an equalised linear.

    ``spatial`` is the side of the input map; log2(spatial) convs reach 1x1.
    """

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        n_convs = int(math.log2(spatial)) if spatial >= 2 else 0
        if spatial < 2 or 2 ** n_convs != spatial:
            raise ValueError(f"Map2Style needs a power-of-two spatial size >= 2, got {spatial}")
        self.out_c, self.spatial = out_c, spatial
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.spatial, self.spatial):
            raise ValueError(f"Map2Style built for {self.spatial}x{self.spatial} maps got shape {list(x.shape)}")
        x = self.convs(x)  # [B, out_c, 1, 1]
        return self.linear(x.flatten(1))  # [B, out_c]


class FeaturePyramid(nn.Module):
    """IR-SE body plus pSp's two lateral 1x1 convs: image -> (T1, T2, T3).

    ``lateral=False`` builds the body alone (only :meth:`coarse` works then), for models such
    as the aligner's image encoder that read T1 only and must not carry unused parameters
    (DDP refuses those unless told to search for them every step).
    """

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", width: int = 64, in_channels: int = 3,
                 lateral: bool = True):
        super().__init__()
        self.channels = 8 * width
        self.input_layer = make_input_layer(in_channels, width)
        self.body = make_body(num_layers, mode, width)
        self.taps = stage_ends(num_layers)[1:]  # last units of stages 2, 3, 4
        self.lateral = lateral
        if lateral:
            self.latlayer1 = nn.Conv2d(4 * width, 8 * width, 1)
            self.latlayer2 = nn.Conv2d(2 * width, 8 * width, 1)

    def stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Body outputs after stages 2, 3 and 4: [B, 2w, S/4], [B, 4w, S/8], [B, 8w, S/16]."""
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"FeaturePyramid needs sides divisible by 16, got input shape {list(x.shape)}")
        x = self.input_layer(x)  # [B, w, S, S]
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                taps.append(x)
        return tuple(taps)

    def coarse(self, x: torch.Tensor) -> torch.Tensor:
        """T1 alone, skipping the lateral merges."""
        return self.stages(x)[-1]  # [B, 8w, S/16, S/16]

    def forward(self, x: torch.Tensor) -> Pyramid:
        if not self.lateral:
            raise RuntimeError("FeaturePyramid(lateral=False) has no T2/T3; call .coarse(x)")
        c1, c2, c3 = self.stages(x)
        t2 = upsample_add(c3, self.latlayer1(c2))  # [B, 8w, S/8, S/8]
        t3 = upsample_add(t2, self.latlayer2(c1))  # [B, 8w, S/4, S/4]
        return Pyramid(c3, t2, t3)


def upsample_add(x: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """Bilinear (align_corners=True, as pSp) upsampling of x to the lateral map's size, plus it."""
    return F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral
