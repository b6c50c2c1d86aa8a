"""The DVC pipeline: dvc.yaml parses, and `dvc repro` + `dvc exp run -S` work end to end."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT

BIN = Path(sys.executable).parent


def dvc(*args, cwd, check=True):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_dvc_repro_dry_parses():
    out = dvc("repro", "--dry", "--force", cwd=ROOT).stdout
    variants = yaml.safe_load((ROOT / "params.yaml").read_text())["train_encoder"]["variants"]
    for stage, body in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        names = [f"{stage}@{key}" for key in variants] if "foreach" in body else [stage]
        for name in names:
            assert f"'{name}'" in out


def test_seed_replicates_pipeline_parses_and_is_not_in_the_default_repro():
    out = dvc("repro", "--dry", "--force", "seeds/dvc.yaml", cwd=ROOT).stdout
    seeds = yaml.safe_load((ROOT / "params.yaml").read_text())["seeds"]
    for s in seeds["seeds"]:
        assert f"'seeds/dvc.yaml:evaluate@{s}'" in out
        for v in seeds["variants"]:
            assert f"'seeds/dvc.yaml:train_encoder@{s}-{v}'" in out
    assert "'seeds/dvc.yaml:report'" in out
    assert "seeds/dvc.yaml" not in dvc("repro", "--dry", "--force", cwd=ROOT).stdout


def test_every_stage_cmd_points_at_a_stage_script():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # a foreach stage's template
        script = next(token for token in stage["cmd"].split() if token.startswith("stages/"))
        assert script == f"stages/{name}.py" and (ROOT / script).exists()
        assert script in stage["deps"]


TINY = {
    "world": {"train_people": 40, "train_per_person": 4, "test_people": 10, "test_per_person": 2,
              "shard_size": 100, "quality_samples": 120,
              "world_cnn": {"n_people": 40, "per_person": 4, "steps": 3, "batch_size": 32, "eval_people": 8,
                            "eval_per_person": 2, "widths": [8, 8, 16, 16, 16], "emb_dim": 16}},
    "synthesize": {"n_pairs": 200, "shard_size": 100},
    "train_aligner": {"width": 4, "embed_dim": 16, "heads": 2, "ff_dim": 32, "batch_size": 32, "steps": 6,
                      "warmup_steps": 2, "holdout": 40, "eval_every": 3, "checkpoint_every": 3},
    "train_encoder": {"common": {"width": 4, "heads": 2, "batch_size": 4, "steps": 2, "log_every": 1,
                                 "checkpoint_every": 1, "sample_every": 2, "test_images": 8}},
    "fit_directions": {"n_samples": 200, "chosen_frac": 0.2, "pca_components": 4,
                       "ganspace_edits": {"pc1_coarse": [1, 0, 3, 2.0]}, "conditions": {"smile": ["age"]}},
    "seeds": {"seeds": [1]},
    "evaluate": {"edit_images": 6, "consistency_images": 3, "edit_strengths": [-2.0, 2.0], "batch_size": 4,
                 "edit_directions": ["smile", "eye_open", "yaw", "beard", "pc1_coarse", "smile_without_age"]},
}


def make_tiny_repo(tmp_path: Path) -> Path:
    """A git + DVC repo with the project's tracked files and tiny params."""
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    seed_run = ("reports/seeds/", "data/seeds/", "seeds/dvc.lock")   # the committed seed-replicated run's records
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(seed_run):
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for block, values in TINY.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[block][key] = {**params[block].get(key, {}), **value}
            else:
                params[block][key] = value
    params["shared"]["device"] = "cpu"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny")
    return repo


@pytest.mark.slow
def test_dvc_repro_and_exp_run_end_to_end(tmp_path):
    repo = make_tiny_repo(tmp_path)
    dvc("repro", cwd=repo)
    world = json.loads((repo / "reports/world/metrics.json").read_text())
    assert 0.0 <= world["generator"]["probe_accuracy"] <= 1.0
    aligner = json.loads((repo / "reports/aligner/metrics.json").read_text())
    assert aligner["steps"] == 6 and aligner["holdout_pairs"] == 40
    assert 0.0 <= aligner["i2w_top1"] <= aligner["i2w_top5"] <= 1.0
    assert (repo / "data/world/test/labels.csv").exists() and (repo / "data/pairs/stats.pt").exists()
    encoders = {v: json.loads((repo / f"reports/train_encoder/{v}/metrics.json").read_text())
                for v in ("clcae", "psp", "no_align")}
    assert set(encoders["clcae"]["test"]) == {"w", "wplus", "f"} and set(encoders["psp"]["test"]) == {"w", "wplus"}
    assert encoders["clcae"]["steps"] == 2 and encoders["clcae"]["test_images"] == 8
    assert (repo / "data/encoder/psp/encoder.pt").exists() and (repo / "reports/train_encoder/clcae/samples.png").exists()
    directions = json.loads((repo / "data/directions/directions.json").read_text())["directions"]
    assert {"smile", "yaw", "smile_without_age", "pc1_coarse"} <= set(directions)
    fitted = json.loads((repo / "reports/directions/metrics.json").read_text())
    assert 0.0 <= fitted["interfacegan"]["beard"]["val_accuracy"] <= 1.0 and len(fitted["ganspace"]["explained_variance"]) == 4
    editing = json.loads((repo / "reports/metrics.json").read_text())["editing"]
    assert editing["images"] == 6 and set(editing["clcae"]) == {"w", "wplus", "f", "wplus_latent", "f_latent"} \
        and set(editing["psp"]) == {"wplus"}   # the official edit, and for CLCAE the edit of the codes too
    assert set(editing["clcae"]["f"]) == {"smile", "eye_open", "yaw", "beard", "pc1_coarse", "smile_without_age"}
    assert directions["pc1_coarse"]["attribute"] in fitted["interfacegan"] and directions["smile_without_age"]["attribute"] == "smile"
    assert 0.0 <= editing["clcae"]["f"]["smile"]["right_way"] <= 1.0 and editing["same_person_threshold"] is not None
    assert (repo / "reports/evaluate/figures/editing_curves.png").exists()
    evaluated = json.loads((repo / "reports/metrics.json").read_text())
    assert set(evaluated["reconstruction"]) == {"clcae", "psp", "no_align"} and evaluated["test_images"] == 20
    assert set(evaluated["reconstruction"]["psp"]) == {"wplus"}   # its w is never trained as a W code
    f = evaluated["reconstruction"]["clcae"]["f"]
    assert {"mse", "l2_psp", "psnr", "ssim", "ms_ssim", "world_perceptual", "world_id_similarity",
            "fd_world_pooled"} <= set(f) and f["l2_psp"] == pytest.approx(4 * f["mse"], rel=1e-4)
    assert "lpips" not in f and "alexnet" in evaluated["unavailable"]["lpips"].lower()
    report = (repo / "reports/report.md").read_text()
    claims = pd.read_csv(repo / "reports/claims.csv")
    assert {"holds", "reversed", "inconclusive"} >= set(claims.verdict) and len(claims) > 20
    row = claims[(claims.a == "clcae F") & (claims.b == "clcae W+") & (claims.metric == "mse")].iloc[0]
    assert f"{row.a_mean:.4g}" in report and (repo / "reports/figures/metric_bars.png").exists()
    status = dvc("status", "dvc.yaml", cwd=repo).stdout   # (a bare `dvc status` also lists seeds/dvc.yaml, not run yet)
    assert "up to date" in status.lower() or status.strip() == ""
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "repro"], cwd=repo,
                   check=True, capture_output=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "lock"], cwd=repo,
                   capture_output=True)

    # an ablation of the README: one `dvc exp run -S` reruns the clcae encoder, evaluate and report
    out = dvc("exp", "run", "-S", "train_encoder.variants.clcae.align=0.0", cwd=repo).stdout
    assert "train_encoder@clcae" in out and "Running stage 'train_encoder@psp'" not in out
    assert "Running stage 'train_aligner'" not in out and "Running stage 'fit_directions'" not in out
    assert "Running stage 'evaluate'" in out and "Running stage 'report'" in out
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout)
    assert diff["reports/train_encoder/clcae/metrics.json"]["test.f.mse"]["diff"] != 0
    assert diff["reports/metrics.json"]["reconstruction.clcae.f.mse"]["diff"] != 0
    assert "reconstruction.psp.wplus.mse" not in diff["reports/metrics.json"]   # the baseline did not change
    assert "reports/train_encoder/psp/metrics.json" not in diff and "reports/aligner/metrics.json" not in diff
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    assert any("reports/metrics.json" in json.dumps(row) for row in shown)
    params = json.loads(dvc("params", "diff", "--json", cwd=repo).stdout)
    change = params["params.yaml"]["train_encoder.variants.clcae.align"]
    assert (change["old"], change["new"]) == (0.1, 0.0)

    # the seed-replicated claims (README): `dvc repro seeds/dvc.yaml` trains seed 1 of each variant,
    # evaluates it and pools it with the run above (seed 0); the default `dvc repro` never ran it
    assert not [p for p in (repo / "data/seeds").rglob("*") if p.is_file()] and not (repo / "reports/seeds").exists()
    out = dvc("repro", "seeds/dvc.yaml", cwd=repo).stdout
    assert "Running stage 'seeds/dvc.yaml:train_encoder@1-psp'" in out and "Running stage 'train_aligner'" not in out
    assert (repo / "data/seeds/encoder/seed1/no_align/encoder.pt").exists()
    seed1 = json.loads((repo / "data/seeds/evaluate/seed1/metrics.json").read_text())
    assert set(seed1["reconstruction"]) == {"clcae", "psp", "no_align"} and seed1["test_images"] == 20
    assert seed1["reconstruction"]["clcae"]["f"]["mse"] != evaluated["reconstruction"]["clcae"]["f"]["mse"]
    pooled = pd.read_csv(repo / "reports/seeds/claims.csv")
    by_seed = pd.read_csv(repo / "reports/seeds/claims_by_seed.csv")
    single = pd.read_csv(repo / "reports/claims.csv")   # the default report of the run above (the experiment's)
    tested = pooled[pooled.verdict != "not tested"]
    assert len(tested) == len(single[single.verdict != "not tested"]) and (tested.n_seeds == 2).all()
    assert set(by_seed.seed) == {0, 1} and not tested.note.astype(str).str.contains("one training seed").any()
    seed0 = by_seed[by_seed.seed == 0].reset_index(drop=True)   # seed 0 on its own = the single-seed report
    assert list(seed0["diff"].round(8)) == list(single["diff"].round(8)) and list(seed0.verdict) == list(single.verdict)
    row = tested.iloc[0]
    assert row["diff"] == pytest.approx(by_seed[(by_seed.claim == row.claim) & (by_seed.a == row.a) & (by_seed.b == row.b)
                                                & (by_seed.metric == row.metric)]["diff"].mean(), rel=1e-4)
    assert "# Seed-replicated claims" in (repo / "reports/seeds/report.md").read_text()
    assert (repo / "reports/seeds/figures/claims_by_seed.png").exists()
    assert dvc("status", "seeds/dvc.yaml", cwd=repo).stdout.strip() in ("", "Data and pipelines are up to date.")
