"""StyleGAN2 generator, compatible with rosinality/stylegan2-pytorch checkpoints.

Pure PyTorch: the FIR up/down-sampling that the reference does with a compiled
``upfirdn2d`` op is done here with depthwise (transposed) convolutions, so the same
code runs on CPU and GPU. Parameter names and storage scales follow the rosinality
layout exactly (``style.N``, ``input.input``, ``conv1``, ``to_rgb1``, ``convs.N``,
``to_rgbs.N``, ``noises.noise_N``), so ``stylegan2-ffhq-config-f.pt`` loads as is.

Layer numbering used by CLCAE's F space: conv layer 1 is ``conv1`` (4x4); layer k >= 2
is ``convs[k - 2]``; layer 5 is the second conv at 16x16 (G5 in the paper).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clcae.io import CheckpointError, read_checkpoint, save_torch  # noqa: F401 (re-exported)

NOISE_MODES = ("const", "random", "none")
FEATURE_INSERTS = ("next_conv", "replace")  # where f enters the generator: Generator.synthesis
DEFAULT_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}


# ----------------------------------------------------------------------------- ops


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """Separable FIR taps -> normalised 2-D kernel."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d_reference(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
                        pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Literal upsample -> pad -> FIR -> downsample, for testing the fast paths.

    Same semantics as the reference ``upfirdn2d_native`` (kernel flipped, i.e. true
    convolution); slow, not used in the forward.
    """
    b, c, h, w = x.shape
    x = x.reshape(b * c, 1, h, w)
    if up > 1:
        x = F.pad(x[:, :, :, None, :, None], (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b * c, 1, h * up, w * up)
    x = F.pad(x, (max(pad[0], 0), max(pad[1], 0), max(pad[0], 0), max(pad[1], 0)))
    k = torch.flip(kernel, [0, 1])[None, None].to(x)
    x = F.conv2d(x, k)
    x = x[:, :, ::down, ::down]
    return x.reshape(b, c, x.shape[-2], x.shape[-1])


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = 2 ** 0.5) -> torch.Tensor:
    """Bias + leaky ReLU + gain, as the reference ``FusedLeakyReLU``."""
    bias = bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x + bias, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class Blur(nn.Module):
    """Depthwise FIR filter with symmetric-or-not padding (``upfirdn2d`` with up=down=1)."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor ** 2
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        # kernel is flipped for a true convolution, as upfirdn2d does
        weight = torch.flip(self.kernel, [0, 1]).to(x.dtype).expand(c, 1, *self.kernel.shape)
        p0, p1 = self.pad
        if p0 == p1:
            return F.conv2d(x, weight, padding=p0, groups=c)
        return F.conv2d(F.pad(x, (p0, p1, p0, p1)), weight, groups=c)


class Upsample(nn.Module):
    """2x FIR upsampling (``upfirdn2d`` up=2) as one depthwise transposed conv."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        k = self.kernel.shape[0]
        weight = self.kernel.to(x.dtype).expand(c, 1, k, k)  # transposed conv == flipped corr.
        # upfirdn2d(up=f, pad=(p0, p1)) == conv_transpose2d(stride=f, padding=k - 1 - p0),
        # cropped/padded on the far side to the reference's output size.
        pad0, pad1 = self.pad
        out = F.conv_transpose2d(x, weight, stride=self.factor, padding=k - 1 - pad0, groups=c)
        h, w = x.shape[-2:]
        target_h = h * self.factor + pad0 + pad1 - k + 1
        target_w = w * self.factor + pad0 + pad1 - k + 1
        return out[..., :target_h, :target_w]


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights stored at 1/lr_mul scale)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class ModulatedConv2d(nn.Module):
    """Style-modulated, optionally demodulated conv; optional fused 2x upsampling.

    Implemented without a grouped per-sample weight: modulation scales the input
    channels and demodulation scales the output channels, which is the same linear map
    as the reference's grouped conv and much faster on CPU (one dense conv per layer).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)  # [B, in]
        weight = self.scale * self.weight[0]  # [out, in, k, k]
        x = x * s[:, :, None, None]
        if self.upsample:
            # conv_transpose2d wants [in, out, k, k]
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=0)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # demod[b, o] = 1 / sqrt(sum_{i,k} (w[o, i, k] s[b, i])^2)
            w2 = weight.pow(2).sum(dim=(2, 3))  # [out, in]
            demod = torch.rsqrt(s.pow(2) @ w2.t() + 1e-8)  # [B, out]
            out = out * demod[:, :, None, None]
        if self.upsample:
            out = self.blur(out)
        return out


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


def clamp_activation(x: torch.Tensor, conv_clamp: float | None) -> torch.Tensor:
    """StyleGAN2-ADA's ``conv_clamp``: activations held in [-c, c] (None: unclamped, rosinality)."""
    return x if conv_clamp is None else x.clamp(-conv_clamp, conv_clamp)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + leaky ReLU [-> clamp]: one 'conv layer' of F space."""

    def __init__(self, in_channel: int, out_channel: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, 3, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return clamp_activation(self.activate(self.noise(self.conv(x, style), noise)), self.conv_clamp)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB [-> clamp], plus the upsampled skip image of the lower resolutions."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = clamp_activation(self.conv(x, style) + self.bias, self.conv_clamp)   # ADA clamps before the skip sum
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ----------------------------------------------------------------------------- generator


def channel_table(size: int, channels: dict[int, int] | None, channel_multiplier: int,
                  what: str) -> dict[int, int]:
    """Resolution -> channels for a ``size`` network: the given table checked, or config-f's."""
    log_size = int(math.log2(size))
    if size < 8 or 2 ** log_size != size:
        raise ValueError(f"{what} size must be a power of two >= 8, got {size}")
    if channels is None:
        channels = {r: DEFAULT_CHANNELS[r] if r <= 32 else DEFAULT_CHANNELS[r] * channel_multiplier // 2
                    for r in (2 ** i for i in range(2, log_size + 1))}
    missing = [2 ** i for i in range(2, log_size + 1) if 2 ** i not in channels]
    if missing:
        raise ValueError(f"channels table has no entry for resolutions {missing}")
    return channels


class Generator(nn.Module):
    """z -> w (mapping) -> W+ (one w per layer) -> image, with F-space injection.

    ``channels`` maps resolution -> channels (e.g. ``{4: 512, ..., 1024: 32}``). ``conv_clamp``:
    StyleGAN2-ADA's activation clamp (its generators trained with it, e.g. 256; None: rosinality's).
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8,
                 channels: dict[int, int] | None = None, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), lr_mlp: float = 0.01,
                 conv_clamp: float | None = None):
        super().__init__()
        log_size = int(math.log2(size))
        channels = channel_table(size, channels, channel_multiplier, "generator")
        self.size, self.style_dim, self.n_mlp = size, style_dim, n_mlp
        self.channels = {int(r): int(c) for r, c in channels.items() if r <= size}
        self.blur_kernel = list(blur_kernel)
        self.lr_mlp = lr_mlp
        self.conv_clamp = None if conv_clamp is None else float(conv_clamp)
        self.log_size = log_size
        self.num_layers = (log_size - 2) * 2 + 1  # conv layers (= noise inputs)
        self.n_latent = log_size * 2 - 2

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)])
        self.input = ConstantInput(self.channels[4])
        clamp = self.conv_clamp
        self.conv1 = StyledConv(self.channels[4], self.channels[4], style_dim, blur_kernel=blur_kernel, conv_clamp=clamp)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False, conv_clamp=clamp)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        in_channel = self.channels[4]
        for i in range(3, log_size + 1):
            out_channel = self.channels[2 ** i]
            self.convs.append(StyledConv(in_channel, out_channel, style_dim, upsample=True, blur_kernel=blur_kernel,
                                         conv_clamp=clamp))
            self.convs.append(StyledConv(out_channel, out_channel, style_dim, blur_kernel=blur_kernel, conv_clamp=clamp))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel, conv_clamp=clamp))
            in_channel = out_channel
        self.register_buffer("latent_avg", torch.zeros(style_dim))
        self.memory_format = torch.contiguous_format   # of the synthesis activations: use_channels_last

    def use_channels_last(self, on: bool = True) -> Generator:
        """Keep the synthesis activations in channels_last (NHWC), oneDNN's and cuDNN's fast layout:
        the world generator renders about 20% faster on a 2-core CPU. The outputs stay NCHW-contiguous
        and equal NCHW's up to float rounding (``shared.channels_last``)."""
        self.memory_format = torch.channels_last if on else torch.contiguous_format
        return self

    # -- config -------------------------------------------------------------------------

    @property
    def config(self) -> dict:
        cfg = {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
               "channels": dict(self.channels), "blur_kernel": list(self.blur_kernel), "lr_mlp": self.lr_mlp}
        return cfg if self.conv_clamp is None else {**cfg, "conv_clamp": self.conv_clamp}

    def feature_shape(self, layer: int) -> tuple[int, int, int]:
        """(C, H, W) of conv layer ``layer``'s output (1-based, conv1 = 1)."""
        if not 1 <= layer <= self.num_layers:
            raise ValueError(f"feature_layer must be in 1..{self.num_layers}, got {layer}")
        res = 2 ** ((layer + 4) // 2)
        return self.channels[res], res, res

    # -- forward ------------------------------------------------------------------------

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, style_dim] -> w [B, style_dim]."""
        return self.style(z)

    def _noise(self, i: int, mode: str, ref: torch.Tensor) -> torch.Tensor | None:
        """Noise input of conv layer i + 1 (stored buffer, fresh, or none)."""
        if mode == "const":
            return getattr(self.noises, f"noise_{i}")
        if mode == "random":
            res = 2 ** ((i + 5) // 2)
            return torch.randn(ref.shape[0], 1, res, res, device=ref.device, dtype=ref.dtype)
        return None

    def feature_insert_problem(self, feature_layer: int, feature_insert: str) -> str | None:
        """Why f given at ``feature_layer`` would have no effect, or None."""
        if feature_insert == "next_conv" and feature_layer == self.num_layers:
            return (f"feature_layer {feature_layer} is the generator's last conv layer: with feature_insert "
                    f"'next_conv' no conv follows it, so f would never be used")
        return None

    def synthesis(self, wplus: torch.Tensor, noise_mode: str = "const", feature: torch.Tensor | None = None,
                  feature_layer: int = 5, return_features: bool = False, feature_blend: float = 1.0,
                  feature_insert: str = "next_conv", max_size: int | None = None, features_only: bool = False):
        """W+ codes [B, n_latent, style_dim] -> image [B, 3, size, size] (about [-1, 1]).

        ``feature`` [B, C, H, W] enters at conv layer ``feature_layer``, blended as
        ``(1 - s) x + s f`` with ``s = feature_blend``. Where it enters (``feature_insert``):
          * ``"next_conv"`` (the official CLCAE generator, ``insert_feature`` in its
            ``models/stylegan2/model.py``): the layer's toRGB skip is computed from the generator's
            own output; f replaces that output only as the input of the next conv;
          * ``"replace"`` (an ablation; this project before the fix): f replaces the layer's output
            everywhere, its toRGB skip included.
        ``return_features`` also returns the layer's own output (before f): ``(image, G_k(w+))``.
        ``max_size``: stop at that resolution and return the skip image there [B, 3, max_size,
        max_size]: a preview that costs only the layers up to it (the web page's slider).
        ``features_only``: return G_k(w+) alone, computed by the layers up to ``feature_layer`` only
        (:meth:`layer_features`).
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if feature_insert not in FEATURE_INSERTS:
            raise ValueError(f"feature_insert must be one of {FEATURE_INSERTS}, got {feature_insert!r}")
        if wplus.ndim != 3 or wplus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"wplus must be [B, {self.n_latent}, {self.style_dim}], got {list(wplus.shape)}")
        if features_only and feature is not None:
            raise ValueError("synthesis: features_only returns G's own layer output; it takes no feature to insert")
        if feature is not None or return_features or features_only:
            expected = self.feature_shape(feature_layer)
            if feature is not None and tuple(feature.shape[1:]) != expected:
                raise ValueError(f"feature for layer {feature_layer} must be [B, {', '.join(map(str, expected))}], "
                                 f"got {list(feature.shape)}")
            if feature is not None and (problem := self.feature_insert_problem(feature_layer, feature_insert)):
                raise ValueError(problem)
        captured = None

        def at_layer(layer: int, own: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(what the layer's toRGB sees, what the next conv sees) for conv layer ``layer``'s output."""
            nonlocal captured
            if layer != feature_layer:
                return own, own
            captured = own
            if feature is None:
                return own, own
            x = feature if feature_blend == 1.0 else (1 - feature_blend) * own + feature_blend * feature
            x = x.contiguous(memory_format=self.memory_format)   # the layers above f in the same layout
            return (own, x) if feature_insert == "next_conv" else (x, x)

        const = self.input(wplus.shape[0]).contiguous(memory_format=self.memory_format)
        rgb_in, x = at_layer(1, self.conv1(const, wplus[:, 0], self._noise(0, noise_mode, wplus)))
        if features_only and captured is not None:
            return captured.contiguous()
        skip = self.to_rgb1(rgb_in, wplus[:, 1])
        for j, to_rgb in enumerate(self.to_rgbs):
            up, conv = self.convs[2 * j], self.convs[2 * j + 1]
            _, x = at_layer(2 * j + 2, up(x, wplus[:, 2 * j + 1], self._noise(2 * j + 1, noise_mode, wplus)))
            if features_only and captured is not None:
                return captured.contiguous()
            rgb_in, x = at_layer(2 * j + 3, conv(x, wplus[:, 2 * j + 2], self._noise(2 * j + 2, noise_mode, wplus)))
            if features_only and captured is not None:
                return captured.contiguous()
            skip = to_rgb(rgb_in, wplus[:, 2 * j + 3], skip)
            if max_size is not None and skip.shape[-1] >= max_size:
                break
        if return_features:
            return skip.contiguous(), captured.contiguous()
        return skip.contiguous()

    def layer_features(self, wplus: torch.Tensor, feature_layer: int = 5, noise_mode: str = "const") -> torch.Tensor:
        """G_k(w+) ``[B, C, H, W]``, conv layer ``feature_layer``'s output, without rendering the
        layers above it: what an F edit and the F regularisation read of G(w+) when its image is
        not needed (the same numbers as ``synthesis(..., return_features=True)[1]``)."""
        return self.synthesis(wplus, noise_mode=noise_mode, feature_layer=feature_layer, features_only=True)

    def mapped(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """z [B, style_dim] -> w [B, style_dim], pulled toward ``latent_avg`` by ``truncation``
        (the truncation trick: ``latent_avg + psi (w - latent_avg)``; 1 leaves w as mapped)."""
        w = self.mapping(z)
        return w if truncation == 1.0 else self.latent_avg + truncation * (w - self.latent_avg)

    def forward(self, z: torch.Tensor, truncation: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        """z [B, style_dim] -> image, with truncation toward ``latent_avg``."""
        w = self.mapped(z, truncation)
        return self.synthesis(w[:, None].expand(-1, self.n_latent, -1), noise_mode=noise_mode)


# ----------------------------------------------------------------------------- discriminator


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate (weights stored at unit scale)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class ConvLayer(nn.Sequential):
    """[blur ->] equalised conv [-> bias + leaky ReLU], in rosinality's numbered layout.

    ``downsample``: anti-aliasing blur, then a stride-2 conv (the reference's order).
    ``activate=False``: a linear conv with its own (optional) bias.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride, padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Two 3x3 convs (the second halves the resolution) plus a 1x1 skip, summed at unit variance."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel,
                              activate=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class MinibatchStdDev(nn.Module):
    """Appends the mean feature std over groups of samples, so D can see a collapsed batch."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        group = min(b, self.group_size)
        while b % group:  # the largest group <= group_size that divides the batch
            group -= 1
        y = x.reshape(group, -1, c, h, w)  # [G, B/G, C, H, W]; sample i is in group i % (B/G)
        std = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))  # [B/G]
        std = std.reshape(1, -1, 1, 1, 1).expand(group, -1, 1, h, w).reshape(b, 1, h, w)
        return torch.cat([x, std], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: image [B, 3, S, S] -> realness logit [B, 1].

    Parameter names follow rosinality's ``Discriminator`` (``convs.N``, ``final_conv``,
    ``final_linear``), so the ``'d'`` entry of its training checkpoints loads.
    """

    def __init__(self, size: int, channels: dict[int, int] | None = None, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        log_size = int(math.log2(size))
        channels = channel_table(size, channels, channel_multiplier, "discriminator")
        convs: list[nn.Module] = [ConvLayer(3, channels[size], 1)]
        in_channel = channels[size]
        for i in range(log_size, 2, -1):
            convs.append(ResBlock(in_channel, channels[2 ** (i - 1)], blur_kernel))
            in_channel = channels[2 ** (i - 1)]
        self.convs = nn.Sequential(*convs)
        self.stddev = MinibatchStdDev()
        self.final_conv = ConvLayer(in_channel + 1, channels[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(channels[4] * 4 * 4, channels[4], activation=True),
                                          EqualLinear(channels[4], 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.final_conv(self.stddev(self.convs(image)))  # [B, C4, 4, 4]
        return self.final_linear(x.flatten(1))


# ----------------------------------------------------------------------------- checkpoints


ROSINALITY_LR_MLP = 0.01  # every rosinality checkpoint stores its mapping at this scale
_REQUIRED = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight", "convs.0.conv.weight")


def generator_state(ckpt, path: str = "<checkpoint>") -> tuple[dict, torch.Tensor | None]:
    """Pick the generator state dict (and latent_avg) out of any rosinality-style checkpoint."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    latent_avg = ckpt.get("latent_avg")
    for key in ("g_ema", "g"):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key], latent_avg
    if "style.1.weight" in ckpt:  # a bare state dict
        return ckpt, ckpt.get("latent_avg")
    raise CheckpointError(f"{path}: not a StyleGAN2 generator checkpoint: no 'g_ema' or 'g' entry and no "
                          f"generator keys at the top level (found keys: {sorted(ckpt)[:8]})")


def infer_generator_config(state: dict, path: str = "<checkpoint>") -> dict:
    """size, style_dim, n_mlp, channels and blur kernel from the state dict's shapes."""
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a StyleGAN2 generator state dict: missing {missing}")
    style_dim = state["style.1.weight"].shape[1]
    n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
    channels = {4: int(state["input.input"].shape[1])}
    n_up = sum(1 for k in state if k.startswith("convs.") and k.endswith(".conv.weight")) // 2
    for i in range(n_up):
        key = f"convs.{2 * i}.conv.weight"
        if key not in state:
            raise CheckpointError(f"{path}: missing {key}")
        channels[2 ** (i + 3)] = int(state[key].shape[1])
    blur_kernel = [1, 3, 3, 1]
    if "convs.0.conv.blur.kernel" in state:
        taps = state["convs.0.conv.blur.kernel"].float().sum(dim=1)
        blur_kernel = (taps / taps.min()).round(decimals=4).tolist()
    return {"size": 2 ** (n_up + 2), "style_dim": int(style_dim), "n_mlp": n_mlp, "channels": channels,
            "blur_kernel": blur_kernel}


@torch.no_grad()
def estimate_latent_avg(G: Generator, n: int = 10_000, seed: int = 0) -> torch.Tensor:
    """Mean of mapping(z) over ``n`` seeded samples (for checkpoints without latent_avg)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.style_dim, generator=gen).to(G.latent_avg.device)
    return torch.cat([G.mapping(chunk) for chunk in z.split(2_000)]).mean(0)


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu", trust: bool | None = None,
                   channels_last: bool = False) -> Generator:
    """Load a StyleGAN2 generator; eval mode, requires_grad off; ``channels_last``: see
    :meth:`Generator.use_channels_last` (the stages pass ``shared.channels_last``).

    A rosinality-layout checkpoint (``.pt``: ``g_ema``, ``latent_avg`` [, ``conv_clamp``]) is read
    weights-only by :func:`clcae.io.read_checkpoint` (``trust`` as there). A StyleGAN2-ADA
    training snapshot (``network-snapshot-*.pkl``) is read by the restricted unpickler of
    :mod:`clcae.nets.stylegan2_ada`, which runs nothing from the file whatever ``trust`` says, and
    its ``G_ema`` converted (``w_avg`` as ``latent_avg``, its ``conv_clamp`` kept)."""
    path = os.fspath(path)
    if path.endswith(".pkl"):
        from clcae.nets.stylegan2_ada import ada_to_rosinality, read_snapshot  # imports this module

        ada = ada_to_rosinality(read_snapshot(path), path)
        G = generator_from_state(ada.state, ada.latent_avg, path, device, conv_clamp=ada.conv_clamp)
    else:
        ckpt = read_checkpoint(path, trust=trust)
        state, latent_avg = generator_state(ckpt, path)
        G = generator_from_state(state, latent_avg, path, device, conv_clamp=ckpt.get("conv_clamp"))
    return G.use_channels_last(channels_last)


def generator_from_state(state: dict, latent_avg: torch.Tensor | None = None, path: str = "<state dict>",
                         device: str | torch.device = "cpu", conv_clamp: float | None = None) -> Generator:
    """A rosinality-layout state dict (+ latent_avg, estimated when None) -> Generator; eval, frozen.

    Shared by :func:`load_generator` and loaders of checkpoints that embed a generator (CLCAE's
    ``decoder.*``); ``path`` names the source in errors.
    """
    cfg = infer_generator_config(state, path)
    G = Generator(cfg["size"], cfg["style_dim"], cfg["n_mlp"], channels=cfg["channels"],
                  blur_kernel=cfg["blur_kernel"], lr_mlp=ROSINALITY_LR_MLP, conv_clamp=conv_clamp)
    state = {k: v for k, v in state.items() if k != "latent_avg"}
    result = G.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k != "latent_avg"]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{path}: generator state dict does not match the inferred architecture "
                              f"(size {cfg['size']}, style_dim {cfg['style_dim']}): missing {missing[:8]}, "
                              f"unexpected {result.unexpected_keys[:8]}")
    G = G.to(device).eval().requires_grad_(False)
    if latent_avg is None:
        latent_avg = estimate_latent_avg(G)
    elif tuple(latent_avg.shape) not in ((G.style_dim,), (1, G.style_dim)):
        raise CheckpointError(f"{path}: latent_avg has shape {list(latent_avg.shape)}, expected [{G.style_dim}]")
    G.latent_avg.copy_(latent_avg.reshape(-1).to(device))
    return G


def rosinality_state_dict(G: Generator) -> dict:
    """G's weights in the rosinality layout (mapping stored at lr_mlp = 0.01 scale)."""
    state = {k: v.detach().cpu().clone() for k, v in G.state_dict().items() if k != "latent_avg"}
    rescale = G.lr_mlp / ROSINALITY_LR_MLP
    if rescale != 1.0:
        for i in range(1, G.n_mlp + 1):
            state[f"style.{i}.weight"] *= rescale
            state[f"style.{i}.bias"] *= rescale
    return state


def save_generator(G: Generator, path: str | os.PathLike, **extra) -> None:
    """Write ``{'g_ema': ..., 'latent_avg': ...[, 'conv_clamp': c]}`` atomically (temp file, then rename);
    ``conv_clamp`` only for generators that have one (the rosinality layout has no such key)."""
    clamp = {} if G.conv_clamp is None else {"conv_clamp": G.conv_clamp}
    save_torch({"g_ema": rosinality_state_dict(G), "latent_avg": G.latent_avg.detach().cpu().clone(), **clamp, **extra},
               path)
