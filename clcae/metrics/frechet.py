"""Frechet distance between two feature sets, each summarised by a Gaussian (FID's formula).

    FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

The features are the caller's: Inception pool features make it FID-like in the ffhq world,
world-CNN pooled features in procfaces; the caller names the figure after its features (a
Frechet distance through the world CNN is not FID). The matrix square root is scipy's
``sqrtm`` with pytorch-fid's handling: when the product is singular (non-finite root) eps is
added to both diagonals, and an imaginary part from rounding is dropped if it is small
(else an error).
"""
from __future__ import annotations

import numpy as np
import torch

SQRTM_EPS = 1e-6
IMAG_ATOL = 1e-3


def feature_stats(feats: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (float64, unbiased as np.cov) of features ``[N, D]``."""
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().numpy()
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"feature_stats: expected features [N >= 2, D], got shape {feats.shape}")
    return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


def frechet_from_stats(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray,
                       eps: float = SQRTM_EPS) -> float:
    """Frechet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b)."""
    from scipy import linalg

    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, np.float64)), np.atleast_1d(np.asarray(mu_b, np.float64))
    sigma_a, sigma_b = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != mu_a.shape * 2:
        raise ValueError(f"frechet_from_stats: shapes do not match: mu {mu_a.shape} vs {mu_b.shape}, "
                         f"sigma {sigma_a.shape} vs {sigma_b.shape}")
    diff = mu_a - mu_b
    covmean = linalg.sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(covmean).all():  # singular product: regularise both covariances
        offset = np.eye(sigma_a.shape[0]) * eps
        covmean = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_ATOL):
            raise ValueError(f"frechet_from_stats: sqrtm has an imaginary part of "
                             f"{np.abs(covmean.imag).max():.3g} (covariances not positive semi-definite?)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean))


def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to features ``[N_a, D]`` and ``[N_b, D]``."""
    return frechet_from_stats(*feature_stats(feats_a), *feature_stats(feats_b))


class FrechetReference:
    """Frechet distances of many feature sets to one fixed reference set (an editing sweep's
    real test images): the reference's covariance root ``R`` is computed once, and each set
    costs one symmetric eigenproblem, since tr((S_r S)^(1/2)) = sum sqrt(eig(R S R)).
    Agrees with :func:`frechet_distance` (scipy's ``sqrtm``) to rounding."""

    def __init__(self, feats: torch.Tensor | np.ndarray):
        self.mu, self.sigma = feature_stats(feats)
        evals, evecs = np.linalg.eigh(self.sigma)
        self.root = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T   # symmetric S_r^(1/2)

    def distance(self, feats: torch.Tensor | np.ndarray) -> float:
        mu, sigma = feature_stats(feats)
        if mu.shape != self.mu.shape:
            raise ValueError(f"FrechetReference: features of dimension {mu.shape[0]}, reference {self.mu.shape[0]}")
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(self.root @ sigma @ self.root), 0, None)).sum()
        diff = mu - self.mu
        return float(diff @ diff + np.trace(sigma) + np.trace(self.sigma) - 2 * cross)
