"""Seed-replicated claims (``seeds/dvc.yaml``): the encoders trained again with other seeds, each
seed's run evaluated like the default one, and the paper's claims tested over seeds and images.

A bootstrap over test images says how sure we are about *one trained model*; another training seed
can move a small effect further than that interval. Each variant of ``seeds.variants`` is trained
with every seed of ``seeds.seeds`` (the same data, aligner, generator and step budget: the seed sets
the initialisation, the batch order and dropout), and :func:`report` pools those runs with the
default pipeline's (seed ``shared.seed``): per claim, each seed's difference, the spread between
seeds, the two-level interval (:func:`clcae.stats.hierarchical_bootstrap`), the verdict across seeds
(``holds`` only when the interval excludes 0 and every seed agrees in sign) and each seed's own
one-seed verdict, i.e. what a single-seed report would have said.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clcae.claims import paper_claims
from clcae.config import ConfigError
from clcae.io import atomic_path, save_json
from clcae.report import SPACE, claim_columns, fmt, read_csv, read_json, table


def check(params, seed: int | None = None, variant: str | None = None) -> None:
    """Config errors naming the key: variants the pipeline does not define, the default seed listed again."""
    cfg = params.seeds
    unknown = [v for v in cfg.variants if v not in params.train_encoder.variants]
    if unknown:
        raise ConfigError(f"seeds.variants: {unknown} not among train_encoder.variants {list(params.train_encoder.variants)}")
    if params.shared.seed in cfg.seeds:
        raise ConfigError(f"seeds.seeds: {params.shared.seed} is shared.seed, the default pipeline's run (already counted)")
    if seed is not None and seed not in cfg.seeds:
        raise ConfigError(f"seeds.seeds: no seed {seed} (known: {cfg.seeds})")
    if variant is not None and variant not in cfg.variants:
        raise ConfigError(f"seeds.variants: no variant {variant!r} (known: {cfg.variants})")


def seed_params(params, seed: int):
    """The params of the run with training seed ``seed``: the default run's settings with that seed
    and its own encoder, training-report and evaluate folders under ``seeds.out_dir``."""
    check(params, seed)
    root = Path(params.seeds.out_dir)
    replace = dataclasses.replace
    return replace(
        params,
        shared=replace(params.shared, seed=seed),
        train_encoder=replace(params.train_encoder, out_dir=str(root / "encoder" / f"seed{seed}"),
                              report_dir=str(root / "train_encoder" / f"seed{seed}")),
        evaluate=replace(params.evaluate, variants=list(params.seeds.variants),
                         report_dir=str(root / "evaluate" / f"seed{seed}"),
                         metrics_file=str(root / "evaluate" / f"seed{seed}" / "metrics.json")))


def train(params, seed: int, variant: str) -> dict:
    """Stage ``train_encoder@<seed>-<variant>`` of seeds/dvc.yaml (the default stage's code)."""
    from clcae.train_encoder import run

    check(params, seed, variant)
    return run(seed_params(params, seed), variant)


def evaluate(params, seed: int) -> dict:
    """Stage ``evaluate@<seed>`` of seeds/dvc.yaml (the default stage's code)."""
    from clcae.evaluate import run

    return run(seed_params(params, seed))


def seed_runs(params) -> dict[int, dict[str, Path]]:
    """seed -> the evaluate files of its run; the default pipeline's run first."""
    runs = {params.shared.seed: {"report": Path(params.evaluate.report_dir), "metrics": Path(params.evaluate.metrics_file),
                                 "train": Path(params.train_encoder.report_dir)}}
    for seed in params.seeds.seeds:
        p = seed_params(params, seed)
        runs[seed] = {"report": Path(p.evaluate.report_dir), "metrics": Path(p.evaluate.metrics_file),
                      "train": Path(p.train_encoder.report_dir)}
    return runs


def read_seed_frames(params) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[int, dict]]:
    """Every seed's per-image reconstruction and editing frames with a ``seed`` column (the seeds'
    variants only), and each seed's evaluate metrics."""
    variants = params.seeds.variants
    recon, editing, metrics = [], [], {}
    for seed, files in seed_runs(params).items():
        metrics[seed] = read_json(files["metrics"])
        frame = read_csv(files["report"] / "reconstruction.csv")
        recon.append(frame[frame.variant.isin(variants)].assign(seed=seed))
        if "skipped" not in metrics[seed]["editing"]:
            frame = read_csv(files["report"] / "editing_per_image.csv")
            editing.append(frame[frame.variant.isin(variants)].assign(seed=seed))
    sizes = {s: int(m["test_images"]) for s, m in metrics.items()}
    if len(set(sizes.values())) > 1:
        raise ConfigError(f"seeds: the runs were evaluated on different test sets {sizes} (evaluate.test_images)")
    editing = pd.concat(editing, ignore_index=True) if len(editing) == len(metrics) else None
    return pd.concat(recon, ignore_index=True), editing, metrics


def plot_seeds(claims: pd.DataFrame, by_seed: pd.DataFrame, path: Path) -> None:
    """Forest plot: per claim, each seed's relative difference (dots) and the interval over seeds
    and images (bar), in % of B's mean; the x axis is oriented so that right = A better."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tested = claims[claims.verdict != "not tested"].reset_index(drop=True)
    colours = {"holds": "C2", "reversed": "C3", "inconclusive": "C7"}
    seeds = sorted(by_seed.seed.unique())
    fig, ax = plt.subplots(figsize=(8.5, 0.26 * len(tested) + 1.2))
    for i, c in tested.iterrows():
        sign = 1 if c.higher_is_better else -1        # right = A better, whatever the metric's direction
        scale = 100 * sign / c.b_mean
        ax.plot([c.low * scale, c.high * scale], [i, i], color=colours[c.verdict], lw=3, alpha=0.6)
        rows = by_seed[(by_seed.claim == c.claim) & (by_seed.a == c.a) & (by_seed.b == c.b) & (by_seed.metric == c.metric)]
        for j, s in enumerate(seeds):
            d = rows[rows.seed == s]["diff"]
            if len(d):
                ax.plot(d.iloc[0] * scale, i, "o", ms=3.5, color=f"C{j}", label=f"seed {s}" if i == 0 else None)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(tested)), [f"{c.a} vs {c.b}, {c.metric}" for _, c in tested.iterrows()], fontsize=6.5)
    ax.invert_yaxis()
    ax.set_xlabel("A - B in % of B's mean, right = A better (bar: 95% interval over seeds and images; "
                  "green holds, red reversed, grey inconclusive)", fontsize=7)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def seed_table(claims: pd.DataFrame, by_seed: pd.DataFrame, seeds: list[int]) -> str:
    rows = []
    for _, c in claims.iterrows():
        if c.verdict == "not tested":
            rows.append([c.claim, f"{c.a} vs {c.b}", c.metric] + ["-"] * (len(seeds) + 3) + [f"not tested: {c.note}"])
            continue
        one = by_seed[(by_seed.claim == c.claim) & (by_seed.a == c.a) & (by_seed.b == c.b) & (by_seed.metric == c.metric)]
        per_seed = [f"{fmt(r['diff'], 3)} ({r.verdict})" for s in seeds for _, r in one[one.seed == s].iterrows()]
        verdict = f"**{c.verdict}**" if c.verdict == "holds" else c.verdict
        rows.append([c.claim, f"{c.a} vs {c.b}", c.metric] + per_seed +
                    [fmt(c.seed_sd, 2), f"{fmt(c['diff'], 3)} [{fmt(c.low, 3)}, {fmt(c.high, 3)}]",
                     f"{100 * c.relative:+.1f}%", verdict + (f" ({c.note})" if c.note else "")])
    return table(["claim", "A vs B", "metric"] + [f"seed {s}: A - B (one-seed verdict)" for s in seeds] +
                 ["sd between seeds", "A - B over seeds [95% CI]", "relative", "verdict across seeds"], rows)


def report(params) -> dict:
    """Stage ``report`` of seeds/dvc.yaml: reports/seeds/{report.md, claims.csv, claims_by_seed.csv, figures/}."""
    check(params)
    start = time.perf_counter()
    recon, editing, metrics = read_seed_frames(params)
    seeds = list(metrics)
    _, _, claim_metrics = claim_columns(recon)
    ed = metrics[seeds[0]]["editing"]
    strength, n_boot = ed.get("strength", 0.0), params.report.n_boot
    claims = paper_claims(recon, editing, claim_metrics, strength, n_boot=n_boot, seed=params.shared.seed)
    hib = {**claim_metrics, "identity": True, "target_gain": True}
    claims.insert(4, "higher_is_better", claims.metric.map(hib))
    by_seed = pd.concat([paper_claims(recon[recon.seed == s], None if editing is None else editing[editing.seed == s],
                                      claim_metrics, strength, n_boot=n_boot, seed=params.shared.seed).assign(seed=s)
                         for s in seeds], ignore_index=True)
    out = Path(params.seeds.report_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "claims.csv") as tmp:
        claims.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out / "claims_by_seed.csv") as tmp:
        by_seed.to_csv(tmp, index=False, float_format="%.6g")
    plot_seeds(claims, by_seed, out / "figures" / "claims_by_seed.png")

    tested = claims[claims.verdict != "not tested"]
    keys = ["claim", "a", "b", "metric"]
    both = claims[keys + ["verdict"]].merge(by_seed[by_seed.seed == seeds[0]][keys + ["verdict"]], on=keys,
                                            suffixes=("", "_one_seed"))
    lost = [f"{c.a} vs {c.b} on {c.metric}" for _, c in both.iterrows()
            if c.verdict_one_seed == "holds" and c.verdict != "holds"]
    minutes = {s: {v: read_json(runs["train"] / v / "metrics.json").get("minutes") for v in params.seeds.variants}
               for s, runs in seed_runs(params).items()}
    minute_rows = [[s] + [fmt(minutes[s][v], 3) for v in params.seeds.variants] for s in seeds]
    counts = claims.verdict.value_counts().to_dict()
    text = f"""# Seed-replicated claims

Made by `dvc repro seeds/dvc.yaml` from this run's files (regenerate, never edit): the variants
{", ".join(f"`{v}`" for v in params.seeds.variants)} trained with {len(seeds)} seeds ({", ".join(map(str, seeds))};
seed {seeds[0]} is the default pipeline's run, `reports/report.md`), each evaluated on the same
{metrics[seeds[0]]['test_images']} test images. The per-seed numbers: `reports/seeds/claims_by_seed.csv`; the pooled
ones: `reports/seeds/claims.csv`.

Per claim: each seed's mean difference A - B with its own one-seed verdict (a paired bootstrap over
the test images, as in the single-seed report), the standard deviation of those differences between
seeds, and the mean difference over seeds and images with a 95% interval from a two-level bootstrap
that resamples seeds and, once for all of them, people (`clcae/stats.py`; conservative). A claim
*holds* across seeds when that interval lies on A's better side **and** every seed's difference
has A's sign; *reversed* likewise on B's side; otherwise *inconclusive*. With {len(seeds)} seeds the seed
level of the bootstrap is coarse (it draws among {len(seeds)} values): read the per-seed columns
beside the interval.

Verdicts across seeds: {", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))} ({len(tested)} comparisons).
One-seed "holds" of seed {seeds[0]} (the default report) that do not hold across seeds: {len(lost)}{
        "" if not lost else " (" + "; ".join(lost) + ")"}.

{seed_table(claims, by_seed, seeds)}

![claims by seed](figures/claims_by_seed.png)

Training minutes per run (`train_encoder` metrics, this machine):

{table(["seed"] + list(params.seeds.variants), minute_rows)}
"""
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text(text)
    summary = {"seeds": seeds, "claims": counts, "one_seed_holds_lost": len(lost),
               "seconds": round(time.perf_counter() - start, 1)}
    save_json(summary, out / "summary.json")
    return summary
