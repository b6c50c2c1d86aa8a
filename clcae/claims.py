"""The paper's claims, tested on per-image numbers with bootstrap intervals (``clcae.stats``).

Each comparison pairs two (variant, space) cells on the same test images: the mean difference
A - B, its 95% interval (paired over images, a person's images resampled together when the
frames carry ``person_id``; over seeds and images when they carry more than one ``seed``) and a
verdict: ``holds`` when the interval lies on A's better side, ``reversed`` when on B's,
``inconclusive`` when it contains 0, or when the training seeds' own differences disagree in sign
(a claim one seed reverses does not hold, however narrow the pooled interval). A claim whose cells are missing
from the run (e.g. no ``no_align`` variant was trained) is listed as not tested, with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from clcae.spaces import SPACES, label
from clcae.stats import hierarchical_bootstrap, paired_bootstrap, verdict


def higher_is_better(metrics: list[str], identity_column: str) -> dict[str, bool]:
    from clcae.metrics import get_metric, is_valid_metric

    return {m: (get_metric(m).higher_is_better if is_valid_metric(m) else m == identity_column) for m in metrics}


def claim_columns(recon: pd.DataFrame) -> tuple[list[str], str, dict[str, bool]]:
    """``(figure columns, identity column, {claim metric: higher_is_better})`` of a per-image
    reconstruction frame; the claims skip psnr and l2_psp (mse restated)."""
    identity_col = next(c for c in recon.columns if c.endswith("_similarity"))
    figure_cols = [c for c in recon.columns if c not in ("variant", "space", "image", "name", "person_id", "seed")]
    hib = higher_is_better(figure_cols, identity_col)
    return figure_cols, identity_col, {m: hib[m] for m in figure_cols if m not in ("l2_psp", "psnr")}


@dataclass(frozen=True)
class Cell:
    variant: str
    space: str

    def __str__(self) -> str:
        return f"{self.variant} {label(self.space)}"


def paired_values(frame: pd.DataFrame, a: Cell, b: Cell, value: str):
    """``(A [S, N], B [S, N], groups [N] or None)``: the two cells' values on the images (and seeds)
    both have, joined on ``image`` (and ``seed``); None when a cell is absent. ``groups`` is the
    ``person_id`` column when there is one (a person's photos are resampled together)."""
    keys = ["seed", "image"] if "seed" in frame else ["image"]
    cells = []
    for cell in (a, b):
        rows = frame[(frame.variant == cell.variant) & (frame.space == cell.space)]
        if rows.empty or value not in rows:
            return None
        cells.append(rows[keys + (["person_id"] if "person_id" in rows else []) + [value]])
    both = cells[0].merge(cells[1], on=keys + (["person_id"] if "person_id" in cells[0] else []),
                          suffixes=("_a", "_b"))
    if both.empty:
        raise ValueError(f"compare {a} vs {b} on {value}: the two cells share no image")
    seeds = both["seed"] if "seed" in both else pd.Series(0, index=both.index)
    both = both.assign(seed=seeds).sort_values(["seed", "image"])
    va = both.pivot(index="seed", columns="image", values=f"{value}_a").dropna(axis=1)
    vb = both.pivot(index="seed", columns="image", values=f"{value}_b")[va.columns]
    groups = None
    if "person_id" in both:
        groups = both.drop_duplicates("image").set_index("image").loc[va.columns, "person_id"].to_numpy()
    return va.to_numpy(), vb.to_numpy(), groups


def compare(frame: pd.DataFrame, claim: str, a: Cell, b: Cell, metric: str, higher_is_better: bool,
            n_boot: int = 2000, seed: int = 0) -> dict:
    """One row of the claims table: is A better than B on ``metric``?"""
    row = {"claim": claim, "a": str(a), "b": str(b), "metric": metric, "higher_is_better": higher_is_better}
    values = paired_values(frame, a, b, metric)
    if values is None:
        present = {(v, s) for v, s in zip(frame.variant, frame.space)}
        missing = " and ".join(str(c) for c in (a, b) if (c.variant, c.space) not in present)
        return {**row, "verdict": "not tested", "note": f"{missing or metric} not in this run"}
    va, vb, groups = values
    iv = (hierarchical_bootstrap(va, vb, n_boot, seed=seed, groups=groups) if va.shape[0] > 1
          else paired_bootstrap(va[0], vb[0], n_boot, seed=seed, groups=groups))
    per_seed = (va - vb).mean(1)                                     # [S]: each training seed's A - B
    on_a_side = int((per_seed > 0).sum() if higher_is_better else (per_seed < 0).sum())
    call, note = verdict(iv, lower_is_better=not higher_is_better), "" if iv.n_seeds > 1 else "one training seed"
    if iv.n_seeds > 1 and call != "inconclusive" and on_a_side not in (0, iv.n_seeds):
        call, note = "inconclusive", f"seeds disagree in sign ({on_a_side} of {iv.n_seeds} on A's side)"
    return {**row, "a_mean": float(va.mean()), "b_mean": float(vb.mean()), **iv.as_dict(),
            "seed_diffs": " ".join(f"{d:.4g}" for d in per_seed),
            "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else None,
            "seeds_on_a_side": on_a_side, "verdict": call, "note": note}


def paper_claims(recon: pd.DataFrame, editing: pd.DataFrame | None, metrics: dict[str, bool],
                 edit_strength: float, baseline: str = "psp", ablation: str = "no_align",
                 n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The claims of CLCAE's paper (section 4) on this run's frames.

    ``recon``: per-image reconstruction figures (variant, space, image[, seed], one column per
    metric); ``metrics``: metric -> higher_is_better; ``editing``: per-image editing scores
    (variant, space, direction, strength, image, identity) or None.
    """
    rows = []
    for space in SPACES:
        for m, hib in metrics.items():
            rows.append(compare(recon, f"the align loss improves {str(Cell('', space)).strip()} reconstruction",
                                Cell("clcae", space), Cell(ablation, space), m, hib, n_boot, seed))
    for a, b in (("f", "wplus"), ("wplus", "w")):
        for m, hib in metrics.items():
            rows.append(compare(recon, "distortion: F < W+ < W", Cell("clcae", a), Cell("clcae", b), m, hib, n_boot, seed))
    for a, b in (("f", "wplus"), ("wplus", "wplus")):
        for m, hib in metrics.items():
            rows.append(compare(recon, "CLCAE beats the pSp-style baseline", Cell("clcae", a), Cell(baseline, b), m,
                                hib, n_boot, seed))
    if editing is not None:
        edits = editing[editing.strength.abs() == edit_strength]
        # one number per image: identity averaged over the directions and both signs
        keys = ["variant", "space", "image"] + [k for k in ("seed", "person_id") if k in edits]
        per_image = edits.groupby(keys, as_index=False)[["identity", "target_gain"]].mean()
        claim = f"F edits keep identity better than W+ edits (strength +-{edit_strength:g})"
        control = f"(control) F edits move the attribute as far as W+ edits (strength +-{edit_strength:g})"
        for b in (Cell("clcae", "wplus"), Cell(baseline, "wplus")):
            rows.append(compare(per_image, claim, Cell("clcae", "f"), b, "identity", True, n_boot, seed))
        for b in (Cell("clcae", "wplus"), Cell(baseline, "wplus")):
            rows.append(compare(per_image, control, Cell("clcae", "f"), b, "target_gain", True, n_boot, seed))
        # not a claim of the paper: the official edit (w moved inside the encoder) against the edit of the codes
        setting = f"(setting) the official edit through the encoder vs the edit of w+ (strength +-{edit_strength:g})"
        for space in ("f", "wplus"):
            for m in ("identity", "target_gain"):
                rows.append(compare(per_image, setting, Cell("clcae", space), Cell("clcae", space + "_latent"), m, True,
                                    n_boot, seed))
    return pd.DataFrame(rows)
