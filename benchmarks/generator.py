"""Generator forward speed: images/s and peak memory, ours vs the reference's ops, NCHW vs NHWC.

The "reference ops" path swaps in the rosinality CPU path on the same weights: a grouped
conv with per-sample modulated weights and the native upfirdn2d (zero-insert, pad,
conv, per call). "NHWC" is ours with the activations in channels_last (``shared.channels_last``,
``Generator.use_channels_last``), timed right after the NCHW run. Also the committed world
generator when present. Run: ``python benchmarks/generator.py [--device cuda]``.
"""
import argparse
import contextlib
import platform
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from clcae.nets import stylegan2 as sg
from clcae.nets.stylegan2 import Generator


def _reference_modconv(self, x, style):
    b, c, h, w = x.shape
    s = self.modulation(style).view(b, 1, c, 1, 1)
    weight = self.scale * self.weight * s  # [B, out, in, k, k]
    if self.demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, -1, 1, 1, 1)
    k = self.kernel_size
    if self.upsample:
        weight = weight.transpose(1, 2).reshape(b * c, self.out_channel, k, k)
        out = F.conv_transpose2d(x.reshape(1, b * c, h, w), weight, stride=2, groups=b)
        out = self.blur(out.view(b, self.out_channel, *out.shape[-2:]))
    else:
        out = F.conv2d(x.reshape(1, b * c, h, w), weight.view(b * self.out_channel, c, k, k),
                       padding=self.padding, groups=b)
        out = out.view(b, self.out_channel, *out.shape[-2:])
    return out


@contextlib.contextmanager
def reference_ops():
    saved = (sg.ModulatedConv2d.forward, sg.Blur.forward, sg.Upsample.forward)
    sg.ModulatedConv2d.forward = _reference_modconv
    sg.Blur.forward = lambda self, x: sg.upfirdn2d_reference(x, self.kernel, pad=self.pad)
    sg.Upsample.forward = lambda self, x: sg.upfirdn2d_reference(x, self.kernel, up=self.factor, pad=self.pad)
    try:
        yield
    finally:
        sg.ModulatedConv2d.forward, sg.Blur.forward, sg.Upsample.forward = saved


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.inference_mode()
def images_per_s(G, batch, device, seconds=3.0):
    z = torch.randn(batch, G.style_dim, device=device)
    G(z)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        G(z)
        n += batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    device = torch.device(args.device)
    configs = {
        "64px (64 ch)": Generator(64, 256, 4, channels={4: 64, 8: 64, 16: 64, 32: 64, 64: 64}),
        "256px (config-f/4 ch)": Generator(256, 512, 8, channels={4: 128, 8: 128, 16: 128, 32: 128, 64: 128,
                                                                  128: 64, 256: 32}),
    }
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {device}, batch {args.batch}")
    world = Path(__file__).resolve().parents[1] / "assets/procfaces/generator.pt"
    if world.is_file():
        configs["world generator (64px)"] = sg.load_generator(world, device)
    for name, G in configs.items():
        G = G.to(device).eval()
        z = torch.randn(2, G.style_dim, device=device)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # exact check
        with torch.inference_mode():
            ours = G(z)
            with reference_ops():
                ref = G(z)
        assert (ours - ref).abs().max() < 1e-3, "fast and reference ops disagree"
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        fast = images_per_s(G, args.batch, device, args.seconds)
        mem = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib())
        nhwc = images_per_s(G.use_channels_last(), args.batch, device, args.seconds)
        G.use_channels_last(False)
        with reference_ops():
            slow = images_per_s(G, args.batch, device, args.seconds)
        print(f"{name:24s} ours {fast:8.1f} img/s (NHWC {nhwc:8.1f}) | reference ops {slow:8.1f} img/s | "
              f"speed-up x{fast / slow:.2f} | peak {'GPU' if device.type == 'cuda' else 'RSS'} {mem:.0f} MiB")


if __name__ == "__main__":
    main()
