"""Stage ``report`` of ``seeds/dvc.yaml``: the paper's claims over training seeds and test images.

Pools the default pipeline's run (seed ``shared.seed``) with the seed-replicated runs of
``clcae.seeds``: per claim, each seed's difference with its own one-seed verdict (what a
single-seed report would have said), the spread between seeds, the two-level interval
(:func:`clcae.stats.hierarchical_bootstrap`) and the verdict across seeds (``holds`` only when the
interval excludes 0 and every seed's difference has the claimed sign; ``clcae.claims.compare``).
Writes ``reports/seeds/{report.md, claims.csv, claims_by_seed.csv, summary.json, figures/}``.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from clcae.claims import claim_columns, paper_claims
from clcae.errors import ConfigError
from clcae.io import save_csv, save_figure, save_json, save_text
from clcae.seeds import check, seed_runs
from clcae.tables import fmt, read_csv, read_json, table


def read_seed_frames(params) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[int, dict]]:
    """Every seed's per-image reconstruction and editing frames with a ``seed`` column (the seeds'
    variants only), and each seed's evaluate metrics. Every seed must have scored every variant
    on the same test images: a partial pool would silently drop a seed from some claims."""
    variants = params.seeds.variants
    recon, editing, metrics, images = [], [], {}, None
    for seed, files in seed_runs(params).items():
        metrics[seed] = read_json(files["metrics"])
        path = files["report"] / "reconstruction.csv"
        frame = read_csv(path)
        missing = [v for v in variants if v not in set(frame.variant)]
        if missing:
            raise ConfigError(f"{path}: no rows for {missing} (seeds.variants); rerun that seed's evaluate with them")
        frame = frame[frame.variant.isin(variants)]
        names = sorted(set(frame.name))
        if images is not None and names != images[1]:
            raise ConfigError(f"{path}: other test images than {images[0]} ({len(names)} vs {len(images[1])}; "
                              f"evaluate.test_images must be the same for every seed)")
        images = images or (path, names)
        recon.append(frame.assign(seed=seed))
        if "skipped" not in metrics[seed]["editing"]:
            frame = read_csv(files["report"] / "editing_per_image.csv")
            editing.append(frame[frame.variant.isin(variants)].assign(seed=seed))
    editing = pd.concat(editing, ignore_index=True) if len(editing) == len(metrics) else None
    return pd.concat(recon, ignore_index=True), editing, metrics


SEED_COLOURS = ["C0", "C1", "C4", "C5", "C6", "C8", "C9"]   # not the verdicts' green (C2) and red (C3)
CLAIM_KEYS = ["claim", "a", "b", "metric"]   # one comparison


def rows_by_claim(by_seed: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """Each comparison's per-seed rows, indexed by seed."""
    return {key: rows.set_index("seed") for key, rows in by_seed.groupby(CLAIM_KEYS, sort=False)}


def plot_seeds(claims: pd.DataFrame, by_seed: pd.DataFrame, path: Path) -> None:
    """Forest plot: per claim, each seed's difference (dots) and the interval over seeds and images
    (bar), in % of |B's mean|; the x axis is oriented so that right = A better."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    tested = claims[(claims.verdict != "not tested") & (claims.b_mean != 0)].reset_index(drop=True)
    verdicts = {"holds": "C2", "reversed": "C3", "inconclusive": "C7"}
    seeds = sorted(by_seed.seed.unique())
    colour = {s: SEED_COLOURS[j % len(SEED_COLOURS)] for j, s in enumerate(seeds)}
    per_seed = rows_by_claim(by_seed)
    fig, ax = plt.subplots(figsize=(8.5, 0.26 * len(tested) + 1.4))
    for i, c in tested.iterrows():
        scale = 100 * (1 if c.higher_is_better else -1) / abs(c.b_mean)   # right = A better
        ax.plot([c.low * scale, c.high * scale], [i, i], color=verdicts[c.verdict], lw=3, alpha=0.6)
        rows = per_seed[tuple(c[CLAIM_KEYS])]
        for s in seeds:
            if s in rows.index:
                ax.plot(rows.loc[s, "diff"] * scale, i, "o", ms=3.5, color=colour[s])
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(tested)), [f"{c.a} vs {c.b}, {c.metric}" for _, c in tested.iterrows()], fontsize=6.5)
    ax.invert_yaxis()
    ax.set_xlabel("A - B in % of |B's mean|, right = A better", fontsize=8)
    handles = ([Line2D([], [], color=colour[s], marker="o", ls="", label=f"seed {s}") for s in seeds] +
               [Line2D([], [], color=c, lw=3, alpha=0.6, label=f"{v} (95% interval, seeds x images)")
                for v, c in verdicts.items()])
    ax.legend(handles=handles, fontsize=6.5, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def seed_table(claims: pd.DataFrame, by_seed: pd.DataFrame, seeds: list[int]) -> str:
    rows, per_claim = [], rows_by_claim(by_seed)
    for _, c in claims.iterrows():
        if c.verdict == "not tested":
            rows.append([c.claim, f"{c.a} vs {c.b}", c.metric] + ["-"] * (len(seeds) + 3) + [f"not tested: {c.note}"])
            continue
        one = per_claim[tuple(c[CLAIM_KEYS])]
        per_seed = [f"{fmt(one.loc[s, 'diff'], 3)} ({one.loc[s, 'verdict']})" if s in one.index else "-" for s in seeds]
        verdict = f"**{c.verdict}**" if c.verdict == "holds" else c.verdict
        rows.append([c.claim, f"{c.a} vs {c.b}", c.metric] + per_seed +
                    [fmt(c.seed_sd, 2), f"{fmt(c['diff'], 3)} [{fmt(c.low, 3)}, {fmt(c.high, 3)}]",
                     f"{100 * c.relative:+.1f}%", verdict + (f" ({c.note})" if c.note else "")])
    return table(["claim", "A vs B", "metric"] + [f"seed {s}: A - B (one-seed verdict)" for s in seeds] +
                 ["sd between seeds", "A - B over seeds [95% CI]", "relative", "verdict across seeds"], rows)


def report(params) -> dict:
    """Stage entry: the seeds' evaluate files -> reports/seeds/."""
    check(params)
    start = time.perf_counter()
    recon, editing, metrics = read_seed_frames(params)
    seeds = list(metrics)
    _, _, claim_metrics = claim_columns(recon)
    ed = metrics[seeds[0]]["editing"]
    strength, n_boot = ed.get("strength", 0.0), params.report.n_boot
    claims = paper_claims(recon, editing, claim_metrics, strength, n_boot=n_boot, seed=params.shared.seed)
    by_seed = pd.concat([paper_claims(recon[recon.seed == s], None if editing is None else editing[editing.seed == s],
                                      claim_metrics, strength, n_boot=n_boot, seed=params.shared.seed).assign(seed=s)
                         for s in seeds], ignore_index=True)
    out = Path(params.seeds.report_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    save_csv(claims, out / "claims.csv", index=False, float_format="%.6g")
    save_csv(by_seed, out / "claims_by_seed.csv", index=False, float_format="%.6g")
    plot_seeds(claims, by_seed, out / "figures" / "claims_by_seed.png")

    tested = claims[claims.verdict != "not tested"]
    both = claims[CLAIM_KEYS + ["verdict"]].merge(by_seed[by_seed.seed == seeds[0]][CLAIM_KEYS + ["verdict"]],
                                                  on=CLAIM_KEYS, suffixes=("", "_one_seed"))
    changed = both[both.verdict_one_seed != both.verdict]   # what the single-seed report says that seeds do not
    moves = "; ".join(f"{n} {a} -> {b}" for (a, b), n in changed.groupby(["verdict_one_seed", "verdict"]).size().items())
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
that resamples seeds and, once for all of them, people (`clcae/stats.py`). A claim *holds* across
seeds when that interval lies on A's better side **and** every seed's difference has A's sign;
*reversed* likewise on B's side; otherwise *inconclusive*. With {len(seeds)} seeds the seed level of the
bootstrap draws among {len(seeds)} values and understates the spread between seeds by about a factor
{len(seeds) - 1}/{len(seeds)} in variance: the sign rule is the safeguard; read the per-seed columns beside the
interval.

Verdicts across seeds: {", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))} ({len(tested)} comparisons).
Seed {seeds[0]}'s one-seed verdicts (the default report, `reports/claims.csv`) that change across seeds:
{len(changed)} of {len(tested)}{f" ({moves})" if moves else ""}.

{seed_table(claims, by_seed, seeds)}

![claims by seed](figures/claims_by_seed.png)

Training minutes per run (`train_encoder` metrics, this machine):

{table(["seed"] + list(params.seeds.variants), minute_rows)}
"""
    save_text(text, out / "report.md")
    summary = {"seeds": seeds, "claims": counts, "one_seed_verdicts_changed": len(changed),
               "seconds": round(time.perf_counter() - start, 1)}
    save_json(summary, out / "summary.json")
    return summary
