"""Stage `report`: ``reports/report.md`` and its figures, every number read from the pipeline's files.

Reads ``reports/metrics.json`` and the per-image CSVs of ``evaluate``, the encoders' dvclive
curves and the directions' metrics; tests the paper's claims (``clcae.claims``: paired bootstrap
over test images, 95% intervals) and writes ``reports/claims.csv``, ``reports/report.md`` and
``reports/figures/`` (metric bars with intervals, training curves). Nothing here runs a network.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from clcae.claims import claim_columns, paper_claims
from clcae.io import save_csv, save_figure, save_json, save_text
from clcae.spaces import LABELS, SPACES, label
from clcae.stats import paired_bootstrap
from clcae.tables import fmt, read_csv, read_json, table


def mean_intervals(recon: pd.DataFrame, metrics: list[str], n_boot: int, seed: int) -> pd.DataFrame:
    """Mean and 95% bootstrap interval of every metric per (variant, space)."""
    rows = []
    for (variant, space), frame in recon.groupby(["variant", "space"], sort=False):
        for m in metrics:
            x = frame[m].to_numpy(np.float64)
            iv = paired_bootstrap(x, np.zeros_like(x), n_boot, seed=seed)   # interval of the mean itself
            rows.append({"variant": variant, "space": space, "metric": m, "mean": iv.diff, "low": iv.low,
                         "high": iv.high})
    return pd.DataFrame(rows)


def plot_bars(intervals: pd.DataFrame, metrics: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(intervals.variant))   # the colours of the training curves too
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        d = intervals[intervals.metric == m]
        labels = [f"{v} {label(s)}" for v, s in zip(d.variant, d.space)]
        colors = [f"C{variants.index(v)}" for v in d.variant]
        ax.bar(range(len(d)), d["mean"], color=colors,
               yerr=[d["mean"] - d["low"], d["high"] - d["mean"]], capsize=3)
        ax.set_xticks(range(len(d)), labels, fontsize=7, rotation=45, ha="right")
        ax.set_title(m, fontsize=9)
    fig.suptitle("test split: mean and 95% bootstrap interval", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_training(report_dir: Path, variants: list[str], path: Path) -> None:
    """The encoders' loss curves (dvclive TSVs): total and each term, one line per variant."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = ["total", "l2", "perceptual", "identity", "freg", "align"]
    styles = dict(zip(SPACES, (":", "--", "-")))
    fig, axes = plt.subplots(1, len(terms), figsize=(2.9 * len(terms), 2.6))
    for j, variant in enumerate(variants):
        live = report_dir / variant / "live" / "plots" / "metrics" / "train"
        for ax, term in zip(axes, terms):
            # a term is one file, or a folder with one file per render (w, wplus, f)
            files = [(live / f"{term}.tsv", "-", variant)] + [
                (live / term / f"{space}.tsv", style, f"{variant} {label(space)}") for space, style in styles.items()]
            for tsv, style, name in files:
                if tsv.is_file():
                    d = pd.read_csv(tsv, sep="\t")
                    ax.plot(d["step"], d[d.columns[-1]], style, color=f"C{j}", label=name)
    for ax, term in zip(axes, terms):
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    axes[1].legend(fontsize=6)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def claims_section(claims: pd.DataFrame) -> str:
    rows = []
    for _, c in claims.iterrows():
        if c.verdict == "not tested":
            rows.append([c.claim, f"{c.a} vs {c.b}", c.metric, "-", "-", "-", "-", f"not tested: {c.note}"])
            continue
        rows.append([c.claim, f"{c.a} vs {c.b}", c.metric, fmt(c.a_mean), fmt(c.b_mean),
                     f"{fmt(c['diff'], 3)} [{fmt(c.low, 3)}, {fmt(c.high, 3)}]", f"{100 * c.relative:+.1f}%",
                     f"**{c.verdict}**" if c.verdict == "holds" else c.verdict])
    tested = claims[claims.verdict != "not tested"]
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(claims.verdict.value_counts().items()))
    seeds = sorted(set(tested.n_seeds.astype(int))) if len(tested) else [1]
    groups = "people (a person's test images resampled together)" if len(tested) and \
        (tested.n_groups < tested.n_images).any() else "test images"
    seed_text = ("one training seed per variant: the interval covers the test images, not the training seed; "
                 "`dvc repro seeds/dvc.yaml` retrains with more seeds and tests each claim across them in "
                 "`reports/seeds/report.md`"
                 if seeds == [1] else f"{'/'.join(map(str, seeds))} training seeds per variant: seeds and images "
                 "resampled (a two-level bootstrap; every seed must also agree in sign)")
    return (f"Each row: A - B over the same test images, mean difference and 95% bootstrap interval "
            f"({len(tested)} comparisons, {seed_text}; resampling units: {groups}). *holds*: the interval lies "
            f"on A's better side; *reversed*: on B's; *inconclusive*: it contains 0. Each interval is 95% on its "
            f"own, with no correction for the number of comparisons: about 1 in 20 of the comparisons with no "
            f"true difference will not read inconclusive. Verdicts: {counts}.\n\n"
            + table(["claim", "A vs B", "metric", "A", "B", "A - B [95% CI]", "relative", "verdict"], rows))


def editing_section(ed: dict, variants: list[str], directions: dict, editing: pd.DataFrame, figures: list[Path]) -> str:
    if "skipped" in ed:
        return f"Not scored in this run: {ed['skipped']}."
    fd = ed["frechet"]
    rows = []
    for v in variants:
        for space in sorted(ed.get(v, {}), key=list(LABELS).index):
            for d, f in ed[v][space].items():
                rows.append([v, label(space), d, fmt(f["right_way"], 3), fmt(f.get("identity_kept"), 3),
                             fmt(f["identity"], 3), fmt(f["target_gain"], 3), fmt(f["other_drift"], 3),
                             f"{fmt(f[fd], 3)} ({fmt(f[f'{fd}_unedited'], 3)})", fmt(f["lec_perceptual"], 3)])
    dir_rows = [[a, fmt(m["remaining_accuracy"], 3), fmt(m["val_accuracy"], 3), fmt(m["latent_std"], 3)]
                for a, m in directions.get("interfacegan", {}).items() if "val_accuracy" in m]
    threshold = (f"{fmt(ed['same_person_threshold'], 4)}, from {ed['threshold_source']}"
                 if ed.get("same_person_threshold") is not None else "no threshold: the test split has no person ids")
    first = next(iter(ed[variants[0]].values()))
    grids = "\n".join(f"\n![{p.stem}](evaluate/figures/{p.name})" for p in sorted(figures))
    return f"""InterFaceGAN directions fitted by `fit_directions`: the SVM's accuracy on the samples it did
not choose as confident (the informative figure), on the held-out part of the confident ones (the
classic InterFaceGAN figure, near 1 by construction), and the std of sampled w along the normal
(one "sigma" of strength):

{table(["attribute", "accuracy, remaining samples", "accuracy, held-out confident", "w std along normal"], dir_rows)}

Editing the first {ed['images']} test images by strength +-{fmt(ed['strength'])} (both signs pooled):
`right_way` is the share whose target attribute moved the way the edit should move it, `target
gain` the mean change in that direction (in the attribute classifier's units),
`other drift` the mean absolute change of the other attributes, `identity` the cosine to the
*input*'s identity and `identity_kept` the share above the same-person threshold ({threshold}),
`{fd}` the Frechet distance of the edited set to the real test images (in brackets: the unedited
reconstructions on the same images; it is not comparable with the reconstruction table's, which
uses all test images), `LEC` e4e's editing consistency (edit, re-invert, edit back) as a world
perceptual distance.

Two edit settings (`clcae/editing/edit.py`). W, W+ and F are edited as the official CLCAE code
edits: the direction moves w *inside the encoder*, before the cross-attention, so w+ and f are
computed again from w' = w + d, and F renders G(w+(w'), f(w') + G5(w+(w')) - G5(w+)). "W+ (w+ edit)"
and "F (w+ edit)" edit the codes instead (e4e / HFGI style): G(w+ + d), and G(w+ + d, f + G5(w+ + d)
- G5(w+)); the claims table compares the two settings on identity and attribute change. (The
pSp-style baseline builds w+ without w, so its edits are w+ + d in both settings.)

{table(["variant", "space", "direction", "right_way", "identity_kept", "identity", "target gain",
        "other drift", fd, "LEC"], rows)}

![editing curves](evaluate/figures/editing_curves.png)

Strength sweeps: `reports/evaluate/editing.csv`. Edit grids on one test image, rows = directions
({", ".join(first)}), columns = strengths {", ".join(fmt(x) for x in sorted(pd.unique(editing.strength)))}:
{grids}
"""


def write_report(paths: dict, out: Path, n_boot: int, seed: int) -> dict:
    """Everything the report says, from the files in ``paths``; returns the claims' verdict counts."""
    metrics = read_json(paths["metrics"])
    recon = read_csv(paths["reconstruction"])
    editing = read_csv(paths["editing_per_image"])
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    variants = list(metrics["reconstruction"])
    figure_cols, identity_col, claim_metrics = claim_columns(recon)
    ed = metrics["editing"]
    claims = paper_claims(recon, None if "skipped" in ed else editing, claim_metrics, ed.get("strength", 0.0),
                          n_boot=n_boot, seed=seed)
    save_csv(claims, out / "claims.csv", index=False, float_format="%.6g")
    intervals = mean_intervals(recon, figure_cols, n_boot, seed)
    save_csv(intervals, out / "reconstruction_intervals.csv", index=False, float_format="%.8g")
    bar_metrics = [m for m in ("mse", "ssim", next((c for c in figure_cols if "perceptual" in c or c == "lpips"), None),
                               identity_col) if m]
    plot_bars(intervals, bar_metrics, figures / "metric_bars.png")
    plot_training(paths["train_encoder"], variants, figures / "training_curves.png")

    fd = next(k for k in next(iter(metrics["reconstruction"][variants[0]].values())) if k.startswith("fd_"))
    rec_rows = []
    for v in variants:
        for space, figs in metrics["reconstruction"][v].items():
            iv = intervals[(intervals.variant == v) & (intervals.space == space)].set_index("metric")
            rec_rows.append([v, label(space)] +
                            [f"{fmt(iv.loc[m, 'mean'])} ({fmt(iv.loc[m, 'low'], 3)}-{fmt(iv.loc[m, 'high'], 3)})"
                             for m in figure_cols] + [fmt(figs[fd])])
    unavailable = "".join(f"\n- `{k}`: {v}" for k, v in metrics.get("unavailable", {}).items())
    runtime = ", ".join(f"{v} {1000 * t:.1f} ms" for v, t in metrics["runtime_s_per_image"].items())
    spaces = ", ".join(f"{v}: " + " ".join(label(s) for s in metrics["reconstruction"][v]) for v in variants)

    text = f"""# clcae report

Made by `dvc repro report` from the files of this run; every number below is read from
`reports/metrics.json`, `reports/evaluate/*.csv`, `reports/directions/metrics.json`, and the
intervals computed here are written to `reports/claims.csv` and `reports/reconstruction_intervals.csv`
(regenerate, never edit). World: `{metrics['world']}`; test split: {metrics['test_images']} images.

## Reconstruction

Mean over the test images (95% bootstrap interval of the mean); `{fd}`: Frechet distance of each
space's reconstructions to the real test images through the world's `{fd[3:]}` features.
Inversion time per image (encoder and the final render, batch of the stage): {runtime}.{
        (" Not computed:" + unavailable) if unavailable else ""}

{table(["variant", "space"] + figure_cols + [fd], rec_rows)}

![reconstructions](evaluate/figures/reconstructions.png)

Rows: test images; columns: the input, then each variant's reconstructions ({spaces}). A variant
whose loss never renders G(w) (the pSp-style baseline) has no W row: its w is not a trained W code.

![metric bars](figures/metric_bars.png)

## Claims of the paper, tested

{claims_section(claims)}

## Editing

{editing_section(ed, variants, read_json(paths["directions"]), editing, paths["edit_figures"])}
## Training

![training curves](figures/training_curves.png)

The encoders' loss terms (dvclive, `reports/train_encoder/<variant>/live/`); dotted, dashed and solid:
the terms on G(w), G(w+) and G(w+, f).
"""
    save_text(text, out / "report.md")
    return {"claims": claims.verdict.value_counts().to_dict()}


def run(params) -> dict:
    """Stage entry: reports/ -> reports/report.md, reports/claims.csv, reports/figures/."""
    cfg = params.evaluate
    evaluate_dir = Path(cfg.report_dir)
    paths = {"metrics": Path(cfg.metrics_file), "reconstruction": evaluate_dir / "reconstruction.csv",
             "editing_per_image": evaluate_dir / "editing_per_image.csv",
             "directions": Path(params.fit_directions.report_dir) / "metrics.json",
             "train_encoder": Path(params.train_encoder.report_dir),
             "edit_figures": list((evaluate_dir / "figures").glob("edits_*.png"))}
    out = Path(params.report.out_dir)
    start = time.perf_counter()
    summary = write_report(paths, out, params.report.n_boot, params.shared.seed)
    summary["seconds"] = round(time.perf_counter() - start, 1)   # benchmarks/pipeline_time.py reads it
    save_json(summary, out / "report_summary.json")
    return summary
