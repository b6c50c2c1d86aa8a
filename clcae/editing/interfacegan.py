"""InterFaceGAN (Shen et al., CVPR 2020): an attribute's direction is the unit normal of a linear
SVM separating latents whose images score high from those that score low.

As in InterFaceGAN's ``train_boundary``: sort the samples by score, keep the most confident
fraction of each side (``chosen_frac``), split those into train and validation, fit a linear SVM
(scikit-learn's ``SVC(kernel='linear')``), and report the accuracy on the held-out chosen samples
and on the remaining (ambiguous) ones labelled by the midpoint of the extreme scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Boundary:
    normal: torch.Tensor      # [D], unit; positive side = high scores
    val_accuracy: float       # held-out part of the chosen samples
    remaining_accuracy: float  # the samples not chosen (nan when there are none)
    n_train: int
    n_val: int
    latent_std: float         # std of the sampled latents projected on the normal (one "sigma" of strength)


def fit_boundary(latents: torch.Tensor, scores: torch.Tensor, chosen_frac: float = 0.02,
                 train_frac: float = 0.7, C: float = 1.0, seed: int = 0) -> Boundary:
    """``latents [N, D]``, ``scores [N]`` -> the SVM's unit normal and its accuracies."""
    from sklearn.svm import SVC

    x = latents.double().cpu().numpy()
    s = scores.double().cpu().numpy().reshape(-1)
    if x.ndim != 2 or len(x) != len(s):
        raise ValueError(f"fit_boundary: latents [N, D] and scores [N], got {list(latents.shape)} and {list(scores.shape)}")
    n_chosen = int(len(s) * chosen_frac)
    if not 0 < chosen_frac <= 0.5 or n_chosen < 4:
        raise ValueError(f"fit_boundary: chosen_frac {chosen_frac} of {len(s)} samples leaves {n_chosen} per side")
    order = np.argsort(-s, kind="stable")  # high scores first
    pos, neg = order[:n_chosen], order[-n_chosen:]
    rng = np.random.default_rng(seed)
    pos, neg = rng.permutation(pos), rng.permutation(neg)
    n_train = int(n_chosen * train_frac)
    train_idx = np.concatenate([pos[:n_train], neg[:n_train]])
    val_idx = np.concatenate([pos[n_train:], neg[n_train:]])
    labels = np.zeros(len(s), dtype=np.int64)
    labels[pos] = 1
    svm = SVC(kernel="linear", C=C).fit(x[train_idx], labels[train_idx])
    val_acc = float(svm.score(x[val_idx], labels[val_idx])) if len(val_idx) else float("nan")
    rest = order[n_chosen:len(s) - n_chosen]
    if len(rest):
        midpoint = (s[order[0]] + s[order[-1]]) / 2
        rest_acc = float(svm.score(x[rest], (s[rest] >= midpoint).astype(np.int64)))
    else:
        rest_acc = float("nan")
    normal = torch.tensor(svm.coef_.reshape(-1), dtype=torch.float32)
    normal = normal / normal.norm()
    return Boundary(normal, val_acc, rest_acc, 2 * n_train, len(val_idx),
                    latent_std=float((latents.float().cpu() @ normal).std()))


def project_out(primal: torch.Tensor, *conditions: torch.Tensor) -> torch.Tensor:
    """InterFaceGAN's conditional direction: ``primal [D]`` with the span of the condition
    normals removed, renormalised (editing along it leaves those attributes' SVM scores unchanged)."""
    if not conditions:
        return primal / primal.norm()
    basis, _ = torch.linalg.qr(torch.stack([c.double().reshape(-1) for c in conditions], dim=1))  # [D, c]
    p = primal.double().reshape(-1)
    p = p - basis @ (basis.T @ p)
    if p.norm() < 1e-8:
        raise ValueError("project_out: the primal direction lies in the span of its conditions")
    return (p / p.norm()).to(primal.dtype)
