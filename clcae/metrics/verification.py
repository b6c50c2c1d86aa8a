"""Face verification from identity embeddings: is this pair the same person?

Moved from the procfaces world CNN (its world stage reports ``verification_acc`` with it; the
code path and its RNG use are unchanged, so the figures are bit-identical).
"""
from __future__ import annotations

import numpy as np
import torch


def verification_accuracy(emb: torch.Tensor, person_id: torch.Tensor, seed: int = 0) -> float:
    """Same/different-person accuracy with a threshold fitted on the other half of the people.

    People are split in two halves; each half gets all its same-person pairs and as many
    random different-person pairs. The cosine threshold that maximises accuracy on one half is
    scored on the other; the two folds are averaged.
    """
    g = torch.Generator().manual_seed(seed)
    people = torch.unique(person_id)
    people = people[torch.randperm(len(people), generator=g)]
    halves = [people[: len(people) // 2], people[len(people) // 2:]]
    pairs = [_pairs(emb, person_id, h, g) for h in halves]
    accs = []
    for fit, score in ((0, 1), (1, 0)):
        thr = _best_threshold(*pairs[fit])
        sims, same = pairs[score]
        accs.append(float(((sims > thr) == same).float().mean()))
    return float(np.mean(accs))


def same_person_threshold(emb: torch.Tensor, person_id: torch.Tensor, seed: int = 0) -> float:
    """The threshold from the verification curve: the cosine above which a pair is called the
    same person, fitted (accuracy-maximising) on all same-person pairs of ``emb`` ``[N, D]``
    (unit rows) and as many random different-person pairs. Used to say whether an edit kept
    the identity."""
    g = torch.Generator().manual_seed(seed)
    return _best_threshold(*_pairs(emb, person_id, torch.unique(person_id), g))


def _pairs(emb, person_id, people, g) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and same-person flags for one half of the people."""
    idx = torch.nonzero(torch.isin(person_id, people)).squeeze(1)
    pid = person_id[idx]
    same_i, same_j = torch.triu_indices(len(idx), len(idx), offset=1)
    keep = pid[same_i] == pid[same_j]
    pos = (idx[same_i[keep]], idx[same_j[keep]])
    n_neg = int(keep.sum())
    a = torch.randint(0, len(idx), (4 * n_neg,), generator=g)
    b = torch.randint(0, len(idx), (4 * n_neg,), generator=g)
    diff = pid[a] != pid[b]
    neg = (idx[a[diff][:n_neg]], idx[b[diff][:n_neg]])
    i = torch.cat([pos[0], neg[0]])
    j = torch.cat([pos[1], neg[1]])
    sims = (emb[i] * emb[j]).sum(1)
    same = torch.cat([torch.ones(len(pos[0]), dtype=torch.bool), torch.zeros(len(neg[0]), dtype=torch.bool)])
    return sims, same


def _best_threshold(sims: torch.Tensor, same: torch.Tensor) -> float:
    """The midpoint between the two sorted similarities where "same above" is most accurate."""
    order = torch.argsort(sims)
    s, y = sims[order], same[order].float()
    # predicting "same" for everything above position k: correct = negatives below + positives above
    neg_below = torch.cat([torch.zeros(1), torch.cumsum(1 - y, 0)])
    pos_above = y.sum() - torch.cat([torch.zeros(1), torch.cumsum(y, 0)])
    k = int(torch.argmax(neg_below + pos_above))
    lo = s[k - 1] if k > 0 else s[0] - 1
    hi = s[k] if k < len(s) else s[-1] + 1
    return float((lo + hi) / 2)
