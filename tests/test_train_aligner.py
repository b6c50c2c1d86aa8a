"""train_aligner: the real stage entry point on a tiny synthetic config; resume is exact and
serves only an interrupted run of the same params, pairs and code."""
import json
import os
import shutil
import signal

import pytest
import torch
from tiny import curve_steps

import clcae.pipeline.train_aligner as ta
from clcae import training
from clcae.config import Params, build
from clcae.errors import ConfigError
from clcae.io import read_checkpoint
from clcae.nets.aligner import load_aligner
from clcae.nets.stylegan2 import Generator, save_generator
from clcae.pipeline.synthesize import run as synthesize_run
from clcae.training import TrainingInterrupted


def tiny_params(tmp_path, steps=12):
    torch.manual_seed(0)
    G = Generator(32, 16, 2, channels={4: 16, 8: 16, 16: 8, 32: 8}).eval()
    G.latent_avg.copy_(G.mapping(torch.randn(1000, 16)).mean(0))
    save_generator(G, tmp_path / "g.pt")
    return build(Params, {
        "shared": {"seed": 1, "device": "cpu", "generator": str(tmp_path / "g.pt")},
        "synthesize": {"n_pairs": 160, "shard_size": 80, "out_dir": str(tmp_path / "pairs"),
                       "report_dir": str(tmp_path / "rs")},
        "train_aligner": {"num_layers": 18, "width": 4, "embed_dim": 16, "heads": 2, "ff_dim": 32,
                          "batch_size": 32, "steps": steps, "warmup_steps": 2, "holdout": 32, "eval_every": 4,
                          "checkpoint_every": 4, "out_dir": str(tmp_path / "aligner"),
                          "report_dir": str(tmp_path / "ra")}})


def weights(folder) -> dict:
    return read_checkpoint(folder / "aligner" / "aligner.pt")["state_dict"]


def assert_same_weights(actual: dict, expected: dict) -> None:
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, atol=1e-6, rtol=0, msg=key)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One whole 12-step run: its weights and metrics are what every resumed run must reach."""
    root = tmp_path_factory.mktemp("whole")
    params = tiny_params(root)
    synthesize_run(params)
    metrics = ta.run(params)
    return {"weights": weights(root), "metrics": metrics, "root": root}


def test_stage_writes_metrics_and_curves(uninterrupted):
    tmp_path, metrics = uninterrupted["root"], uninterrupted["metrics"]
    on_disk = json.loads((tmp_path / "ra" / "metrics.json").read_text())
    assert on_disk["steps"] == 12 and on_disk["holdout_pairs"] == 32
    for key in ("i2w_top1", "i2w_top5", "w2i_top1", "w2i_top5"):
        assert 0 <= on_disk[key] <= 1 and on_disk[key] == metrics[key]
    assert on_disk["i2w_top5"] >= on_disk["i2w_top1"]
    curve = (tmp_path / "ra" / "live" / "plots" / "metrics" / "holdout" / "i2w_top1.tsv").read_text().splitlines()
    assert curve[0].split("\t")[:2] == ["step", "i2w_top1"] and curve_steps(tmp_path / "ra") == [4, 8, 12]
    aligner = load_aligner(tmp_path / "aligner" / "aligner.pt")
    assert aligner.cfg.image_size == 32 and aligner.cfg.style_dim == 16
    assert not (tmp_path / "aligner" / ".resume").exists()  # finished: no resume point left


def test_crash_resumes_from_the_last_resume_point(tmp_path, monkeypatch, uninterrupted):
    params = tiny_params(tmp_path)
    synthesize_run(params)
    real_check = training.check_finite

    def crash_at_step_6(loss, step, term):
        if step == 6:  # killed hard after the step-4 resume point, two steps into the next stretch
            raise KeyboardInterrupt
        real_check(loss, step, term)

    monkeypatch.setattr(training, "check_finite", crash_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        ta.run(params)
    saved = read_checkpoint(tmp_path / "aligner" / ".resume" / "state.pt")  # weights-only
    assert saved["step"] == 4 and [row["step"] for row in saved["history"]] == [4]
    monkeypatch.setattr(training, "check_finite", real_check)
    shutil.rmtree(tmp_path / "ra" / "live")  # what DVC does to the curves before it reruns the stage
    resumed = ta.run(params)
    assert_same_weights(weights(tmp_path), uninterrupted["weights"])
    assert resumed["i2w_top1"] == pytest.approx(uninterrupted["metrics"]["i2w_top1"])
    for name in ("holdout/i2w_top1", "train/loss", "train/lr"):
        assert curve_steps(tmp_path / "ra", name) == [4, 8, 12]  # a row per logged step, from the start
    assert not (tmp_path / "aligner" / ".resume").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_resume_point_and_the_resumed_run_matches(tmp_path, monkeypatch, capsys, uninterrupted,
                                                                  sig):
    params = tiny_params(tmp_path)
    synthesize_run(params)
    real_check = training.check_finite

    def signal_at_step_5(loss, step, term):
        if step == 5:
            os.kill(os.getpid(), sig)  # the handler sets a flag; step 5 finishes, then the run stops
        real_check(loss, step, term)

    monkeypatch.setattr(training, "check_finite", signal_at_step_5)
    with pytest.raises(TrainingInterrupted) as err:
        ta.run(params)
    assert err.value.exit_code == 128 + sig and "at step 6" in str(err.value) and "dvc repro" in str(err.value)
    saved = read_checkpoint(tmp_path / "aligner" / ".resume" / "state.pt")
    assert saved["step"] == 6 and [row["step"] for row in saved["history"]] == [4]
    assert signal.getsignal(sig) is not None and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    monkeypatch.setattr(training, "check_finite", real_check)
    shutil.rmtree(tmp_path / "ra" / "live")
    capsys.readouterr()
    ta.run(params)
    assert "resuming at step 6" in capsys.readouterr().out
    assert_same_weights(weights(tmp_path), uninterrupted["weights"])
    assert curve_steps(tmp_path / "ra") == [4, 8, 12]


def test_new_code_or_params_never_resume_old_work(tmp_path, monkeypatch, capsys, uninterrupted):
    params = tiny_params(tmp_path)
    synthesize_run(params)
    real_check = training.check_finite

    def crash_at_step_6(loss, step, term):
        if step == 6:
            raise KeyboardInterrupt
        real_check(loss, step, term)

    monkeypatch.setattr(training, "check_finite", crash_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        ta.run(params)
    monkeypatch.setattr(training, "check_finite", real_check)
    real_code = ta.stage_code_signature
    monkeypatch.setattr(ta, "stage_code_signature", lambda stage: "edited " + real_code(stage))
    capsys.readouterr()
    ta.run(params)  # a code change: starts from step 0 and reaches the whole run's weights
    out = capsys.readouterr().out
    assert "other code; starting from scratch" in out and "resuming" not in out
    assert_same_weights(weights(tmp_path), uninterrupted["weights"])
    assert curve_steps(tmp_path / "ra") == [4, 8, 12]
    ta.run(params)  # a finished run: a rerun (dvc repro -f) starts from scratch too
    assert "resuming" not in capsys.readouterr().out


def test_oversized_batch_is_a_config_error(tmp_path):
    params = tiny_params(tmp_path)
    synthesize_run(params)
    params.train_aligner.batch_size = 1024
    with pytest.raises(ConfigError, match=r"train_aligner.batch_size \(1024\)"):
        ta.run(params)


def test_batch_schedule_covers_each_pair_once_per_epoch():
    schedule = ta.BatchSchedule(n=100, batch_size=32, seed=0)
    epoch = torch.cat([schedule(s) for s in range(3)])
    assert len(set(epoch.tolist())) == 96
    assert torch.equal(schedule(1), ta.BatchSchedule(100, 32, 0)(1))


@pytest.mark.slow
def test_stage_under_torchrun_with_two_gloo_processes(tmp_path):
    """The real entry point under torchrun: 2 CPU ranks, gathered negatives, rank 0 writes."""
    import os
    import subprocess
    import sys

    import yaml
    from conftest import ROOT

    params = tiny_params(tmp_path, steps=4)
    synthesize_run(params)
    blocks = {"shared": dataclasses_asdict(params.shared), "synthesize": dataclasses_asdict(params.synthesize),
              "train_aligner": dataclasses_asdict(params.train_aligner)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(blocks))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ROOT / "stages" / "train_aligner.py"),
                           "--params", str(tmp_path / "params.yaml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ra" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 4


def dataclasses_asdict(obj):
    import dataclasses

    return dataclasses.asdict(obj)
