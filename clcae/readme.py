"""The README's results block, made from the committed run's reports (regenerate, never type numbers).

``python -m clcae.readme`` rewrites the text between ``<!-- results:start -->`` and
``<!-- results:end -->`` in README.md from ``reports/reconstruction_intervals.csv``,
``reports/metrics.json`` (its editing block) and ``reports/seeds/claims.csv`` (the claims across
training seeds); ``--check`` exits 1 when the README's block is not what those files give.
``tests/test_readme.py`` runs the check, so a rerun of the pipeline that moves a figure also has to
regenerate the block.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from clcae.io import save_text
from clcae.spaces import label

START, END = "<!-- results:start -->", "<!-- results:end -->"
RECON_METRICS = ("mse", "ssim", "ms_ssim", "world_perceptual", "world_id_similarity")
EDIT_FIGURES = ("right_way", "identity_kept", "target_gain")
HEADLINE_SPACES = ("f", "f_latent")   # of variants other than the first (with F), else W+ (a W+-only baseline)


def _num(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 0.1 else f"{x:.3f}"


def reconstruction_table(intervals: pd.DataFrame) -> str:
    """variant, space x metric: mean [95% interval] (the report's bootstrap over people)."""
    lines = ["| variant, space | " + " | ".join(RECON_METRICS) + " |", "|---" * (len(RECON_METRICS) + 1) + "|"]
    for (variant, space), rows in intervals.groupby(["variant", "space"], sort=False):
        by_metric = rows.set_index("metric")
        cells = [f"{_num(r['mean'])} [{_num(r['low'])}, {_num(r['high'])}]" for r in
                 (by_metric.loc[m] for m in RECON_METRICS if m in by_metric.index)]
        lines.append(f"| {variant}, {label(space)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table(claims: pd.DataFrame) -> str:
    """One row per claim and comparison: each metric's verdict across seeds, with A - B [95% interval]."""
    lines = ["| claim | A vs B | A - B [95% interval] and verdict across seeds, per metric |", "|---|---|---|"]
    for (claim, a, b), rows in claims.groupby(["claim", "a", "b"], sort=False):
        cells = "<br>".join(f"{r.metric}: {r.diff:.3g} [{r.low:.3g}, {r.high:.3g}] "
                            + (f"**{r.verdict}**" if r.verdict == "holds" else r.verdict) for r in rows.itertuples())
        lines.append(f"| {claim} | {a} vs {b} | {cells} |")
    counts = claims.verdict.value_counts()
    seeds = int(claims.n_seeds.max())
    lines.append("")
    lines.append(f"{len(claims)} comparisons over {seeds} training seeds: "
                 + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("holds", "reversed", "inconclusive")) + ".")
    return "\n".join(lines)


def editing_table(editing: dict) -> str:
    """variant, space x direction: right way / identity kept / target gain at the scored strength."""
    variants = [v for v, spaces in editing.items() if isinstance(spaces, dict) and v not in ("frechet",)
                and all(isinstance(d, dict) for d in spaces.values())]
    directions = sorted({d for v in variants for s in editing[v].values() for d in s})
    lines = ["| variant, space | " + " | ".join(directions) + " |", "|---" * (len(directions) + 1) + "|"]
    for variant in variants:
        for space, by_direction in editing[variant].items():
            best = HEADLINE_SPACES if any(s in editing[variant] for s in HEADLINE_SPACES) else ("wplus",)
            if variant != variants[0] and space not in best:   # the other variants: their best space only
                continue
            cells = [" / ".join(f"{by_direction[d][k]:.3f}" for k in EDIT_FIGURES) if d in by_direction else "-"
                     for d in directions]
            lines.append(f"| {variant}, {label(space)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_block(root: Path) -> str:
    """The block's text from the reports under ``root``."""
    reports = root / "reports"
    intervals = pd.read_csv(reports / "reconstruction_intervals.csv")
    metrics = json.loads((reports / "metrics.json").read_text())
    editing = metrics["editing"]
    parts = [
        f"**Reconstruction** of the {metrics['test_images']} test images (`reports/reconstruction_intervals.csv`; "
        "one training seed per variant; mean and 95% bootstrap interval, resampling people; MSE on [0, 1] images):",
        "", reconstruction_table(intervals), "",
    ]
    if "strength" in editing:
        parts += [
            f"**Editing** the first {editing['images']} test images by strength +-{editing['strength']:g} along the "
            "InterFaceGAN normals (`reports/metrics.json`, block `editing`; both signs pooled): the share moved the "
            "right way / the share still the same person (identity above the world's same-person threshold "
            f"{editing['same_person_threshold']:.3f}) / the target attribute's change. CLCAE's plain rows are the "
            "official edit (w moved inside the encoder), \"(w+ edit)\" the edit of the codes:",
            "", editing_table(editing), "",
        ]
    seeds = reports / "seeds" / "claims.csv"
    if seeds.exists():
        parts += [
            "**The paper's claims across training seeds** (`reports/seeds/claims.csv`, `dvc repro seeds/dvc.yaml`; "
            "A - B over seeds and test images with a 95% two-level bootstrap interval; a verdict *holds* or "
            "*reversed* only when the interval excludes 0 and every seed's difference has that sign):",
            "", claims_table(pd.read_csv(seeds)), "",
        ]
    return "\n".join(parts).rstrip("\n")


def replace_block(readme: str, block: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README.md has no {START} ... {END} block")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md's block is out of date")
    args = parser.parse_args(argv)
    path = args.root / "README.md"
    readme = path.read_text()
    wanted = replace_block(readme, results_block(args.root))
    if args.check:
        if wanted != readme:
            print(f"{path}: the results block is not what the reports give; run `python -m clcae.readme`",
                  file=sys.stderr)
            return 1
        return 0
    if wanted != readme:
        save_text(wanted, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
