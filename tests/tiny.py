"""Tiny models and readers that several test modules share (one definition each)."""
from __future__ import annotations

from pathlib import Path

import torch

from clcae.nets.stylegan2 import Generator


def tiny_generator(size: int = 32, style_dim: int = 32, seed: int | None = 3, latent_avg: bool = False) -> Generator:
    """A 2-layer-mapping generator with channels {4, 8: style_dim, 16: style_dim / 2, 32+: 8}, eval mode.

    ``seed`` None: from the test's RNG as it stands. ``latent_avg``: the mean w of 1000 samples
    (else the zero vector a fresh Generator holds)."""
    if seed is not None:
        torch.manual_seed(seed)
    channels = {4: style_dim, 8: style_dim, 16: style_dim // 2, 32: 8, 64: 8}
    G = Generator(size, style_dim, 2, channels=channels).eval()
    if latent_avg:
        with torch.no_grad():
            G.latent_avg.copy_(G.mapping(torch.randn(1000, style_dim)).mean(0))
    return G


def curve_steps(report_dir: str | Path, name: str = "holdout/i2w_top1") -> list[int]:
    """The steps of one dvclive curve's rows under ``report_dir/live`` (a stage's report folder)."""
    rows = (Path(report_dir) / "live" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()[1:]
    return [int(r.split("\t")[0]) for r in rows]
