"""The seed-replicated claims' params: each seed's run has its own folders; config errors name the key."""
import pytest

from clcae import seeds
from clcae.config import Params, build
from clcae.errors import ConfigError


def params(**seeds):
    return build(Params, {"seeds": {"seeds": [1, 2], "variants": ["clcae", "psp"], **seeds},
                          "train_encoder": {"variants": {"clcae": {}, "psp": {"use_f": False}, "no_align": {"align": 0.0}}}})


def test_seed_params_move_only_the_seed_and_the_folders():
    p = params()
    q = seeds.seed_params(p, 2)
    assert q.shared.seed == 2 and p.shared.seed == 0   # the default run's params are untouched
    assert q.train_encoder.out_dir == "data/seeds/encoder/seed2"
    assert q.train_encoder.report_dir == "data/seeds/train_encoder/seed2"
    assert q.evaluate.report_dir == "data/seeds/evaluate/seed2"
    assert q.evaluate.metrics_file == "data/seeds/evaluate/seed2/metrics.json"
    assert q.evaluate.variants == ["clcae", "psp"]
    assert q.train_encoder.common == p.train_encoder.common and q.train_encoder.variants == p.train_encoder.variants
    assert q.evaluate.edit_images == p.evaluate.edit_images and q.world == p.world and q.train_aligner == p.train_aligner
    runs = seeds.seed_runs(p)
    assert list(runs) == [0, 1, 2] and str(runs[0]["report"]) == "reports/evaluate"


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"seeds.seeds: 0 is shared.seed"):
        seeds.seed_params(params(seeds=[0, 1]), 1)
    with pytest.raises(ConfigError, match=r"seeds.variants: \['pix2style'\] not among"):
        seeds.seed_params(params(variants=["clcae", "pix2style"]), 1)
    with pytest.raises(ConfigError, match=r"seeds.seeds: no seed 7"):
        seeds.seed_params(params(), 7)
    with pytest.raises(ConfigError, match=r"seeds.variants: no variant 'no_align'"):
        seeds.check(params(), 1, "no_align")
    with pytest.raises(ConfigError, match=r"seeds.seeds: distinct seeds"):
        params(seeds=[1, 1])


def write_seed_run(params, seed, recon, editing):
    """The files evaluate and train_encoder leave for one seed's run."""
    import json
    from pathlib import Path

    runs = seeds.seed_runs(params)[seed]
    runs["report"].mkdir(parents=True, exist_ok=True)
    recon.to_csv(runs["report"] / "reconstruction.csv", index=False)
    editing.to_csv(runs["report"] / "editing_per_image.csv", index=False)
    Path(runs["metrics"]).write_text(json.dumps({"test_images": int(recon.image.nunique()), "editing": {"strength": 2.0}}))
    for v in params.seeds.variants:
        (runs["train"] / v).mkdir(parents=True, exist_ok=True)
        (runs["train"] / v / "metrics.json").write_text(json.dumps({"minutes": 1.5 + seed}))


def test_seed_report_pools_the_seeds_and_refuses_a_partial_pool(tmp_path):
    import numpy as np
    import pandas as pd
    from test_stats import synthetic_frames

    from clcae.pipeline.seed_report import report

    p = build(Params, {"seeds": {"seeds": [1, 2], "out_dir": str(tmp_path / "data/seeds"),
                                 "report_dir": str(tmp_path / "reports/seeds")},
                       "evaluate": {"report_dir": str(tmp_path / "reports/evaluate"),
                                    "metrics_file": str(tmp_path / "reports/metrics.json")},
                       "train_encoder": {"report_dir": str(tmp_path / "reports/train_encoder"),
                                         "variants": {"clcae": {}, "psp": {}, "no_align": {}}},
                       "report": {"n_boot": 200}})
    rng = np.random.default_rng(0)
    for seed in (0, 1, 2):
        recon, editing = synthetic_frames(rng, n=60, seeds=(seed,))
        recon = recon.drop(columns="seed").rename(columns={"identity": "world_id_similarity"})
        recon["name"] = recon.image.map(lambda i: f"{i:05d}.png")
        write_seed_run(p, seed, recon, editing.drop(columns="seed"))
    summary = report(p)
    assert summary["seeds"] == [0, 1, 2]
    pooled = pd.read_csv(tmp_path / "reports/seeds/claims.csv")
    by_seed = pd.read_csv(tmp_path / "reports/seeds/claims_by_seed.csv")
    row = pooled[(pooled.a == "clcae F") & (pooled.b == "clcae W+") & (pooled.metric == "mse")].iloc[0]
    per_seed = by_seed[(by_seed.a == "clcae F") & (by_seed.b == "clcae W+") & (by_seed.metric == "mse")]
    assert row.n_seeds == 3 and row.verdict == "holds" and row.seeds_on_a_side == 3
    assert row["diff"] == pytest.approx(per_seed["diff"].mean(), rel=1e-4)   # the same images for every seed
    assert row.seed_sd == pytest.approx(per_seed["diff"].std(ddof=1), rel=1e-4)
    text = (tmp_path / "reports/seeds/report.md").read_text()
    assert f"{row['diff']:.3g}" in text and "| 0 | 1.5 | 1.5 | 1.5 |" in text   # training minutes per seed
    assert (tmp_path / "reports/seeds/figures/claims_by_seed.png").stat().st_size > 10_000
    # a seed whose evaluate lacks a variant would drop out of some claims: refused, naming the file
    seed2 = seeds.seed_runs(p)[2]["report"] / "reconstruction.csv"
    frame = pd.read_csv(seed2)
    frame[frame.variant != "no_align"].to_csv(seed2, index=False)
    with pytest.raises(ConfigError, match=r"seed2/reconstruction.csv: no rows for \['no_align'\]"):
        report(p)
    frame[frame.image < 50].to_csv(seed2, index=False)
    with pytest.raises(ConfigError, match=r"seed2/reconstruction.csv: other test images"):
        report(p)
