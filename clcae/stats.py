"""Intervals for paired comparisons: how sure a claim "A beats B" is, from per-image numbers.

* :func:`paired_bootstrap`: one trained model per side, the same test images: resample the
  images (or, with ``groups``, whole groups of images: a person's several photos are not
  independent) with replacement and recompute the mean difference; a percentile interval. It
  measures the uncertainty over test images for *these weights*.
* :func:`hierarchical_bootstrap`: several training seeds per side (``[S, N]``, seed s of A paired
  with seed s of B, every seed on the same images): each resample draws S seeds and one set of
  images (groups) shared by all of them, since the images are the same for every seed; the
  interval then also carries the seed-to-seed spread. Resampling the two crossed factors
  independently is Owen's pigeonhole bootstrap (Ann. Appl. Stat. 2007): it counts the seed x image
  interaction more than once, which widens the interval, but with few seeds S its seed level
  understates the spread between seeds by about (S - 1) / S in variance and draws among S values
  only; ``clcae.claims.compare`` therefore also asks every seed to agree in sign.

A claim holds when the whole interval lies on its side of zero (:func:`verdict`). Written with
numpy (vectorised resampling of group sums) rather than ``scipy.stats.bootstrap``, which resamples
neither clusters nor two levels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Interval:
    """Mean difference A - B with its ``level`` bootstrap interval; ``relative`` is diff / mean(B)."""
    diff: float
    low: float
    high: float
    relative: float
    level: float
    n_images: int
    n_groups: int
    n_seeds: int = 1

    def as_dict(self) -> dict:
        return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _group_sums(d: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sums ``[S, G]`` of ``d [S, N]`` and image counts ``[G]`` (each image its own
    group when ``groups`` is None)."""
    if groups is None:
        return d, np.ones(d.shape[1])
    groups = np.asarray(groups)
    if groups.shape != (d.shape[1],):
        raise ValueError(f"bootstrap: one group label per image ({d.shape[1]}), got {groups.shape}")
    _, index = np.unique(groups, return_inverse=True)
    sums = np.zeros((d.shape[0], index.max() + 1))
    np.add.at(sums, (slice(None), index), d)
    return sums, np.bincount(index).astype(np.float64)


def _resample(d: np.ndarray, groups, n_boot: int, level: float, seed: int) -> tuple[float, float, int]:
    """Percentile interval of the mean of ``d [S, N]`` under seed x group resampling."""
    sums, counts = _group_sums(d, groups)                       # [S, G], [G]
    S, G = sums.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, S, size=(n_boot, S)) if S > 1 else np.zeros((n_boot, 1), dtype=np.int64)
    draw = rng.integers(0, G, size=(n_boot, G))                 # one image (group) draw for every seed
    per_seed = sums[:, draw].sum(-1) / counts[draw].sum(-1)     # [S, boot]: mean over the drawn images
    samples = per_seed[seeds, np.arange(n_boot)[:, None]].mean(1)   # [boot]: mean over the drawn seeds
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high), G


def paired_bootstrap(a, b, n_boot: int = 2000, level: float = 0.95, seed: int = 0, groups=None) -> Interval:
    """Interval of mean(a - b) over images; ``a``, ``b``: per-image values ``[N]``; ``groups``:
    optional cluster label per image (resampled as units)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired_bootstrap: paired per-image values [N >= 2], got {a.shape} and {b.shape}")
    d = a - b
    low, high, G = _resample(d[None], groups, n_boot, level, seed)
    return Interval(float(d.mean()), low, high, float(d.mean() / b.mean()) if b.mean() else float("nan"),
                    level, len(d), G)


def hierarchical_bootstrap(a, b, n_boot: int = 2000, level: float = 0.95, seed: int = 0, groups=None) -> Interval:
    """Interval of the mean difference over seeds and images; ``a``, ``b``: ``[S, N]``, the same
    N images (in the same order) for every seed. With one seed: :func:`paired_bootstrap`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"hierarchical_bootstrap: paired values [S, N >= 2], got {a.shape} and {b.shape}")
    d = a - b
    low, high, G = _resample(d, groups, n_boot, level, seed)
    return Interval(float(d.mean()), low, high, float(d.mean() / b.mean()) if b.mean() else float("nan"),
                    level, d.shape[1], G, d.shape[0])


def verdict(interval: Interval, lower_is_better: bool) -> str:
    """'holds' (A better, interval excludes 0), 'reversed' (B better, interval excludes 0) or
    'inconclusive' (the interval contains 0)."""
    better = interval.high < 0 if lower_is_better else interval.low > 0
    worse = interval.low > 0 if lower_is_better else interval.high < 0
    return "holds" if better else "reversed" if worse else "inconclusive"
