"""IR / IR-SE residual nets (ArcFace), in the key layout of pSp's ``model_ir_se50.pth``.

The same units build two things: :class:`Backbone`, the ArcFace recognition net behind the
identity loss and metric (input 112, L2-normalised 512-d embedding), and the body of pSp's
feature pyramid (:mod:`clcae.nets.psp`). Module names follow pSp (``input_layer``,
``body.N.res_layer.M``, ``body.N.shortcut_layer``, ``output_layer``), so the published
weights load with ``load_state_dict(strict=True)``.

Depths: 50, 100 and 152 are pSp's tables. 18 and 34 are additions for the small CPU world
(InsightFace's IR-18/IR-34 unit counts, same units); no published ArcFace weights use them.
``width`` scales every channel count (64 is the published nets; stage widths are
width, 2*width, 4*width, 8*width).
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from clcae.io import CheckpointError, load_state_strict, read_state_dict

# units per stage; each stage halves the resolution in its first unit
UNITS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
MODES = ("ir", "ir_se")
FACE_CROP = (35, 223, 32, 220)  # rows, cols of the face box in a 256 x 256 aligned face (pSp's IDLoss)


class Unit(NamedTuple):
    """One residual unit of the table: channels in, channels out, stride of its second conv."""
    in_channel: int
    depth: int
    stride: int


def get_blocks(num_layers: int, width: int = 64) -> list[list[Unit]]:
    """The unit table: four stages of units, the first unit of each with stride 2."""
    if num_layers not in UNITS:
        raise ValueError(f"num_layers must be one of {sorted(UNITS)}, got {num_layers}")
    widths = (width, width, 2 * width, 4 * width, 8 * width)
    return [[Unit(widths[s] if u == 0 else widths[s + 1], widths[s + 1], 2 if u == 0 else 1) for u in range(n)]
            for s, n in enumerate(UNITS[num_layers])]


def stage_ends(num_layers: int) -> tuple[int, ...]:
    """Index in ``body`` of the last unit of each stage (IR-50: 2, 6, 20, 23)."""
    ends, total = [], 0
    for n in UNITS[num_layers]:
        total += n
        ends.append(total - 1)
    return tuple(ends)


class SEModule(nn.Module):
    """Squeeze-and-excitation: channel gates from the global average (bias-free 1x1 convs)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean((2, 3), keepdim=True)  # [B, C, 1, 1]
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class BottleneckIR(nn.Module):
    """Pre-activation residual unit of ArcFace (BN -> conv -> PReLU -> strided conv -> BN [-> SE])."""

    def __init__(self, in_channel: int, depth: int, stride: int, se: bool = False):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # parameter-free subsampling
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        layers = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class BottleneckIRSE(BottleneckIR):
    """IR unit with squeeze-and-excitation (pSp's ``bottleneck_IR_SE``)."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__(in_channel, depth, stride, se=True)


def make_input_layer(in_channels: int = 3, width: int = 64) -> nn.Sequential:
    """Stem: 3x3 conv (no bias) -> BN -> PReLU, full resolution."""
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.PReLU(width))


def make_body(num_layers: int = 50, mode: str = "ir_se", width: int = 64) -> nn.Sequential:
    """All residual units in one flat Sequential (pSp's ``body``): stride 16 overall."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    unit = BottleneckIRSE if mode == "ir_se" else BottleneckIR
    return nn.Sequential(*[unit(*u) for stage in get_blocks(num_layers, width) for u in stage])


class Backbone(nn.Module):
    """ArcFace IR / IR-SE recognition net: aligned face [B, 3, s, s] -> unit embedding [B, 512].

    ``Backbone(112, 50, 'ir_se')`` has the exact key layout of ``model_ir_se50.pth``.
    """

    def __init__(self, input_size: int = 112, num_layers: int = 50, mode: str = "ir_se",
                 drop_ratio: float = 0.4, affine: bool = True, width: int = 64, embed_dim: int = 512):
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16 (the body's stride), got {input_size}")
        self.input_size = input_size
        side = input_size // 16
        self.input_layer = make_input_layer(3, width)
        self.body = make_body(num_layers, mode, width)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(8 * width),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(8 * width * side * side, embed_dim),
            nn.BatchNorm1d(embed_dim, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)  # [B, 64, 112, 112]
        x = self.body(x)  # [B, 512, 7, 7]
        x = self.output_layer(x)  # [B, 512]
        return F.normalize(x, dim=1)


def arcface_embed(net: Backbone, image: torch.Tensor) -> torch.Tensor:
    """Identity embedding of aligned faces in [-1, 1], as pSp's IDLoss computes it.

    A 256 x 256 face is cropped to its face box [35:223, 32:220] and average-pooled to the
    net's input size; other square sizes are first average-pooled to 256.
    """
    if image.shape[-1] != image.shape[-2]:
        raise ValueError(f"arcface_embed expects square images, got shape {list(image.shape)}")
    if image.shape[-1] != 256:
        image = F.adaptive_avg_pool2d(image, (256, 256))
    top, bottom, left, right = FACE_CROP
    face = image[:, :, top:bottom, left:right]  # [B, 3, 188, 188]
    face = F.adaptive_avg_pool2d(face, (net.input_size, net.input_size))  # [B, 3, 112, 112]
    return net(face)


class IDEncoder(nn.Module):
    """A frozen ArcFace behind the identity loss and metric; stays in eval mode under .train()."""

    def __init__(self, net: Backbone):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> IDEncoder:
        return super().train(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return arcface_embed(self.net, image)  # [B, 512], unit norm


# ----------------------------------------------------------------------------- checkpoints


def infer_body(state: dict, prefix: str = "", source: str = "<state dict>") -> dict:
    """num_layers, mode and width of an IR body from its state dict's shapes."""
    stem = f"{prefix}input_layer.0.weight"
    if stem not in state:
        raise CheckpointError(f"{source}: not an IR/IR-SE state dict: missing {stem!r}")
    width = int(state[stem].shape[0])
    depths, se = {}, False
    for key, value in state.items():
        parts = key[len(prefix):].split(".")
        if not key.startswith(f"{prefix}body.") or len(parts) < 4:
            continue
        if parts[2:] == ["res_layer", "1", "weight"]:
            depths[int(parts[1])] = int(value.shape[0])
        se = se or parts[2:4] == ["res_layer", "5"]
    stage_widths = (width, 2 * width, 4 * width, 8 * width)
    counts = tuple(sum(1 for d in depths.values() if d == w) for w in stage_widths)
    table = {v: k for k, v in UNITS.items()}
    if counts not in table or sorted(depths) != list(range(len(depths))):
        raise CheckpointError(f"{source}: IR body with units per stage {counts} matches no known depth "
                              f"(known: {UNITS})")
    return {"num_layers": table[counts], "mode": "ir_se" if se else "ir", "width": width}


def infer_backbone_config(state: dict, source: str = "<state dict>") -> dict:
    """Backbone(...) keyword arguments from an ArcFace state dict."""
    cfg = infer_body(state, "", source)
    key = "output_layer.3.weight"
    if key not in state:
        raise CheckpointError(f"{source}: not an ArcFace state dict: missing {key!r}")
    embed_dim, flat = state[key].shape
    side = math.isqrt(flat // (8 * cfg["width"]))
    if 8 * cfg["width"] * side * side != flat:
        raise CheckpointError(f"{source}: {key} has {flat} inputs, not 8 * width * side**2 for width {cfg['width']}")
    cfg.update(input_size=16 * side, embed_dim=int(embed_dim), affine="output_layer.4.weight" in state)
    return cfg


def load_arcface(path: str | os.PathLike, device: str | torch.device = "cpu", trust: bool | None = None) -> Backbone:
    """Load an ArcFace state dict file (e.g. ``model_ir_se50.pth``); eval mode, frozen.

    The architecture (depth, mode, width, input size) is inferred from the shapes. Read
    weights-only by :func:`clcae.io.read_checkpoint` (``trust`` as there).
    """
    state, source = read_state_dict(os.fspath(path), trust=trust)
    net = Backbone(**infer_backbone_config(state, source))
    load_state_strict(net, state, source)
    return net.to(device).eval().requires_grad_(False)
