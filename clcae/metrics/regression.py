"""R^2 of attribute regressions (how well a classifier's readout predicts the true labels).

Moved from the procfaces world CNN; the attribute names are now the caller's.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def attribute_r2(pred: torch.Tensor, target: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """sklearn R^2 per attribute (columns of ``pred``/``target`` ``[N, K]``, named by ``names``)
    plus their ``mean``."""
    from sklearn.metrics import r2_score

    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != len(names):
        raise ValueError(f"attribute_r2: pred {tuple(pred.shape)} and target {tuple(target.shape)} must be "
                         f"[N, {len(names)}] for names {list(names)}")
    out = {name: float(r2_score(target[:, j].numpy(), pred[:, j].numpy()))
           for j, name in enumerate(names)}
    out["mean"] = float(np.mean(list(out.values())))
    return out
