"""Is the world's generator a faithful model of ProcFaces? Figures through the world CNN.

Two checks, both on world-CNN outputs of generator samples G(z) vs train-split images:
- attribute spread: per-attribute mean and std of the predicted attributes;
- a linear probe (logistic regression on pooled features) that tries to tell samples from
  real images; 50% is indistinguishable, 100% trivially separable. ``blur_reference`` calibrates
  it: the same probe on real images vs a Gaussian blur of other real images.

``python -m clcae.worlds.procfaces.quality --world-cnn data/world/world_cnn.pt --generator G.pt --blur 0.6``
prints the figures of any generator checkpoint and of the blur references.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from clcae.images import gaussian_blur, to_float, to_uint8
from clcae.metrics.probe import probe_accuracy
from clcae.worlds.procfaces import procfaces
from clcae.worlds.procfaces.procfaces import ATTRIBUTES


@torch.inference_mode()
def sample_images(G, n: int, seed: int, batch_size: int = 32, noise_mode: str = "const") -> torch.Tensor:
    """n generator samples as uint8 [n, 3, S, S] (z seeded, truncation 1)."""
    device = G.latent_avg.device
    z = torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([to_uint8(G(chunk.to(device), noise_mode=noise_mode)).cpu() for chunk in z.split(batch_size)])


@torch.inference_mode()
def cnn_outputs(cnn, images_u8: torch.Tensor, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(attributes [N, A], pooled features [N, F]) of uint8 images."""
    device = next(cnn.parameters()).device
    attrs, pooled = [], []
    for chunk in images_u8.split(batch_size):
        x = to_float(chunk).to(device)
        attrs.append(cnn.attributes(x).float().cpu())
        pooled.append(cnn.pooled(x).float().cpu())
    return torch.cat(attrs).numpy(), torch.cat(pooled).numpy()


def train_images(n: int, seed: int) -> torch.Tensor:
    """n train-split renders (4 per person) as uint8 [n, 3, 64, 64]: the real side of the checks."""
    return procfaces.render_split("train", (n + 3) // 4, 4, seed)[0][:n]


def generator_quality(G, cnn, real_u8: torch.Tensor, n: int = 5000, seed: int = 0) -> dict:
    """Attribute spread and real-vs-sample probe accuracy; ``real_u8`` are train images."""
    fake_u8 = sample_images(G, n, seed)
    real_u8 = real_u8[:n]
    real_attr, real_feat = cnn_outputs(cnn, real_u8)
    fake_attr, fake_feat = cnn_outputs(cnn, fake_u8)
    spread = {}
    for i, name in enumerate(ATTRIBUTES):
        r, f = real_attr[:, i], fake_attr[:, i]
        spread[name] = {"real_mean": float(r.mean()), "sample_mean": float(f.mean()),
                        "real_std": float(r.std()), "sample_std": float(f.std()),
                        # mean gap in units of the real std; std ratio - 1
                        "mean_gap": float(abs(f.mean() - r.mean()) / (r.std() + 1e-8)),
                        "std_gap": float(abs(f.std() / (r.std() + 1e-8) - 1))}
    worst = max(max(s["mean_gap"], s["std_gap"]) for s in spread.values())
    return {"n_samples": int(len(fake_u8)), "n_real": int(len(real_u8)),
            "attribute_spread": spread, "attribute_worst_gap": worst,
            "probe_accuracy": probe_accuracy(real_feat, fake_feat, seed)}, fake_u8


def blur_reference(cnn, real_u8: torch.Tensor, sigmas: list[float], seed: int = 0) -> dict[str, float]:
    """Probe accuracy of one half of ``real_u8`` vs a Gaussian blur (sigma px) of the other half:
    how much softness alone the probe sees. Sigma 0 measures the probe's chance level."""
    half = len(real_u8) // 2
    _, real_feat = cnn_outputs(cnn, real_u8[:half])
    other = to_float(real_u8[half:2 * half])
    out = {}
    for sigma in sigmas:
        blurred = to_uint8(gaussian_blur(other, other.new_full((len(other),), sigma)))
        out[f"{sigma:g}"] = probe_accuracy(real_feat, cnn_outputs(cnn, blurred)[1], seed)
    return out


def main(argv=None):
    from clcae.nets.stylegan2 import load_generator
    from clcae.worlds.procfaces.world_cnn import load_world_cnn

    ap = argparse.ArgumentParser(description="Generator quality through a world CNN, and the probe's "
                                             "blur calibration")
    ap.add_argument("--world-cnn", required=True, help="the judge (data/world/world_cnn.pt)")
    ap.add_argument("--generator", action="append", default=[], help="checkpoint; repeat for several")
    ap.add_argument("--blur", type=float, nargs="*", default=[], help="blur references, sigma in px")
    ap.add_argument("-n", type=int, default=5000, help="samples and train images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cnn = load_world_cnn(args.world_cnn)
    real = train_images(args.n, args.seed)
    out = {}
    for path in args.generator:
        quality, _ = generator_quality(load_generator(path), cnn, real, n=args.n, seed=args.seed)
        out[path] = {"probe_accuracy": quality["probe_accuracy"],
                     "attribute_worst_gap": quality["attribute_worst_gap"]}
    if args.blur:
        out["blur_reference_probe"] = blur_reference(cnn, real, args.blur, args.seed)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
