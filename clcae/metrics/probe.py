"""Linear-probe accuracy: can a linear classifier tell two feature sets apart?

50% means indistinguishable, 100% trivially separable (used on real vs generated features).
Moved from the procfaces world's generator checks.
"""
from __future__ import annotations

import numpy as np


def probe_accuracy(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> float:
    """Held-out accuracy of a linear classifier separating real from fake features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([real, fake])
    y = np.concatenate([np.zeros(len(real)), np.ones(len(fake))])
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=y)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(x_tr, y_tr)
    return float(clf.score(x_te, y_te))
