"""train_aligner: the real stage entry point on a tiny synthetic config; resume is exact."""
import json

import pytest
import torch

import clcae.train_aligner as ta
from clcae.config import build, Params
from clcae.nets.aligner import load_aligner
from clcae.nets.stylegan2 import Generator, save_generator
from clcae.synthesize import run as synthesize_run


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


def test_stage_writes_metrics_and_curves(tmp_path):
    params = tiny_params(tmp_path)
    synthesize_run(params)
    metrics = ta.run(params)
    on_disk = json.loads((tmp_path / "ra" / "metrics.json").read_text())
    assert on_disk["steps"] == 12 and on_disk["holdout_pairs"] == 32
    for key in ("i2w_top1", "i2w_top5", "w2i_top1", "w2i_top5"):
        assert 0 <= on_disk[key] <= 1 and on_disk[key] == metrics[key]
    assert on_disk["i2w_top5"] >= on_disk["i2w_top1"]
    curve = (tmp_path / "ra" / "live" / "plots" / "metrics" / "holdout" / "i2w_top1.tsv").read_text().splitlines()
    assert curve[0].split("\t")[:2] == ["step", "i2w_top1"] and len(curve) == 1 + 3
    aligner = load_aligner(tmp_path / "aligner" / "aligner.pt")
    assert aligner.cfg.image_size == 32 and aligner.cfg.style_dim == 16


def test_resume_continues_exactly(tmp_path, monkeypatch):
    params = tiny_params(tmp_path / "a")
    synthesize_run(params)
    full = ta.run(params)
    full_state = torch.load(tmp_path / "a" / "aligner" / "aligner.pt")["state_dict"]

    params_b = tiny_params(tmp_path / "b")
    synthesize_run(params_b)
    real_lr_at = ta.lr_at

    def dying_lr_at(cfg, step):
        if step == 6:  # killed after the step-4 checkpoint, two steps into the next stretch
            raise KeyboardInterrupt
        return real_lr_at(cfg, step)

    monkeypatch.setattr(ta, "lr_at", dying_lr_at)
    with pytest.raises(KeyboardInterrupt):
        ta.run(params_b)
    assert torch.load(tmp_path / "b" / "aligner" / "state.pt", weights_only=False)["step"] == 4
    monkeypatch.setattr(ta, "lr_at", real_lr_at)
    resumed = ta.run(params_b)
    resumed_state = torch.load(tmp_path / "b" / "aligner" / "aligner.pt")["state_dict"]
    for key, value in full_state.items():
        torch.testing.assert_close(resumed_state[key], value, atol=1e-6, rtol=0, msg=key)
    assert resumed["i2w_top1"] == pytest.approx(full["i2w_top1"])


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
