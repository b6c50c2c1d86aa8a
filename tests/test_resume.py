"""clcae.training: resume points serve only an interrupted run of the same inputs; curves stay
whole; signals stop a run with a resume point; the shared schedule and finite check; stages
report the user's bad input as one line. The slow test drives DVC in a temp repo."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiny
import torch
import yaml
from conftest import ROOT

from clcae import training
from clcae.errors import ClcaeError, ConfigError, InputError
from clcae.pipeline import stage_main
from clcae.steps import check_finite, lr_at, set_lr
from clcae.training import (
    LiveLog,
    ResumeMismatch,
    ResumePoint,
    StopOnSignal,
    TrainingInterrupted,
    code_signature,
    stage_code,
)

# ----------------------------------------------------------------------------- schedule, checks


def test_lr_at_by_hand():
    assert lr_at(0, 1.0, 4, 20) == 0.25 and lr_at(3, 1.0, 4, 20) == 1.0  # warm-up (step + 1) / 4
    assert lr_at(4, 2.0, 4, 20, 0.1) == 2.0  # cosine starts at the base
    assert lr_at(12, 2.0, 4, 20, 0.1) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # half way: the mean
    assert lr_at(20, 2.0, 4, 20, 0.1) == pytest.approx(0.2) and lr_at(99, 2.0, 4, 20, 0.1) == pytest.approx(0.2)
    assert lr_at(0.25, 1.0, 0, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))  # progress in [0, 1]


def test_lr_at_reproduces_the_three_schedules_it_replaced():
    """Bit for bit the aligner's (decay to 1%) and the world CNN's (warm-up fraction, decay to 0);
    the generator's (lr_final + (lr - lr_final) * c over progress) to float rounding."""
    lr, warm, steps = 1e-3, 30, 400
    for step in range(0, 420, 7):
        t = (step - warm) / max(1, steps - warm)
        old = lr * (step + 1) / warm if step < warm else lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))
        assert lr_at(step, lr, warm, steps, 0.01) == old
        warm_cnn = max(1, int(0.05 * 1000))
        if step < 1000:
            t = (step - warm_cnn) / max(1, 1000 - warm_cnn)
            old = 3e-3 * (step + 1) / warm_cnn if step < warm_cnn else 3e-3 * 0.5 * (1 + math.cos(math.pi * t))
            assert lr_at(step, 3e-3, warm_cnn, 1000) == old
    for progress in (0.0, 0.1, 0.5, 0.93, 1.0, 1.5):
        old = 5e-5 + (2e-3 - 5e-5) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        assert lr_at(progress, 2e-3, 0, 1.0, 5e-5 / 2e-3) == pytest.approx(old, rel=1e-15, abs=0)


def test_epoch_plateau_is_the_official_reduce_on_plateau_per_epoch():
    """ReduceLROnPlateau(patience 1, factor 0.1) stepped on each epoch's mean loss; state round trip."""
    from clcae.training import EpochPlateau

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    plateau = EpochPlateau(opt, steps_per_epoch=2, patience=1, factor=0.1)
    losses = [3.0, 1.0, 2.0, 2.0, 2.5, 1.5, 3.0, 3.0]   # epoch means 2.0, 2.0 (no gain), 2.0 (second: drop), 3.0
    lrs = []
    for step, loss in enumerate(losses, 1):
        plateau.update(step, torch.tensor(loss))
        lrs.append(opt.param_groups[0]["lr"])
        if step == 3:   # mid-epoch: the half-summed epoch travels in the state
            state = plateau.state_dict()
            twin_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
            twin = EpochPlateau(twin_opt, 2, 1, 0.1)
            twin.load_state_dict(state)
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1])
    for step, loss in list(enumerate(losses, 1))[3:]:
        twin.update(step, torch.tensor(loss))
    assert twin_opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_set_lr_and_check_finite():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    set_lr(opt, 0.125)
    assert opt.param_groups[0]["lr"] == 0.125
    check_finite(torch.tensor(1.5), 3, "aligner loss")
    check_finite({"a": 1.0, "b": torch.tensor(2.0)}, 3, "world CNN")
    with pytest.raises(FloatingPointError, match=r"aligner loss step 7: non-finite nan"):
        check_finite(torch.tensor(float("nan"), requires_grad=True) * 1, 7, "aligner loss")
    with pytest.raises(FloatingPointError, match=r"world CNN step 2: non-finite \{'attr': inf\}"):
        check_finite({"id": torch.tensor(0.5), "attr": torch.tensor(float("inf"))}, 2, "world CNN")


# ----------------------------------------------------------------------------- code signatures


def test_code_signature_follows_content_not_order(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    base = code_signature(["pkg", "b.py"], tmp_path)
    assert code_signature(["b.py", "pkg/"], tmp_path) == base
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"bytecode")
    assert code_signature(["pkg", "b.py"], tmp_path) == base  # caches are not code
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n# a comment\n")
    assert code_signature(["pkg", "b.py"], tmp_path) != base
    assert code_signature(["pkg", "missing.py"], tmp_path) != code_signature(["pkg"], tmp_path)


def test_stage_code_keeps_code_deps_only(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "m.py").write_text("")
    (tmp_path / "data_in").mkdir()
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "make": {"cmd": "x", "outs": ["data/made", {"reports/m.json": {"cache": False}}]},
        "use": {"cmd": "y", "deps": ["stages/use.py", "lib", "data_in", "data/made", "${shared.generator}",
                                     "notes.txt"]},
        "each": {"foreach": ["a", "b"], "do": {"cmd": "z", "deps": ["lib/m.py", "data/made/${item}"]}}}}))
    dvc_yaml = tmp_path / "dvc.yaml"
    assert stage_code("use", dvc_yaml) == ["stages/use.py", "lib"]  # not data, outputs, params or text
    assert stage_code("each@a", dvc_yaml) == ["lib/m.py"]
    assert stage_code("nope", dvc_yaml) is None and stage_code("use", tmp_path / "none.yaml") is None


def test_the_pipeline_stages_hash_their_code(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert stage_code("synthesize") == ["stages/synthesize.py", "clcae/pipeline/synthesize.py", "clcae/shards.py",
                                        "clcae/nets/stylegan2.py",
                                        "clcae/training.py", "clcae/steps.py", "clcae/seeding.py", "clcae/images.py",
                                        "clcae/distributed.py", "clcae/data.py", "clcae/io.py"]
    aligner = stage_code("train_aligner")
    assert "clcae/pipeline/train_aligner.py" in aligner and "clcae/training.py" in aligner and "data/pairs" not in aligner
    assert "clcae/steps.py" in stage_code("world") and "clcae/training.py" not in stage_code("world")  # the Loop is not the world's


# ----------------------------------------------------------------------------- resume points


def test_resume_point_serves_only_the_same_signature(tmp_path, capsys):
    path = tmp_path / "out" / ".resume" / "state.pt"
    sig = {"params": {"lr": 0.1, "sizes": (1, 2)}, "data": {"n": 3}, "code": "abc"}
    point = ResumePoint(path, sig)
    assert point.load() is None
    point.save({"step": 4, "w": torch.ones(2), "rng": training.rng_state(), "history": [{"step": 4, "loss": 0.5}]})
    raw = torch.load(path, weights_only=True)  # weights-only loadable
    assert raw["complete"] is False and raw["signature"]["params"]["sizes"] == [1, 2]
    state = ResumePoint(path, sig).load()
    assert state["step"] == 4 and torch.equal(state["w"], torch.ones(2)) and state["history"][0]["loss"] == 0.5
    other = ResumePoint(path, {**sig, "params": {"lr": 0.2, "sizes": (1, 2)}, "code": "abd"})
    assert other.load() is None
    assert "other code, params.lr; starting from scratch" in capsys.readouterr().out
    with pytest.raises(ResumeMismatch, match="other code, params.lr; delete it"):
        other.load(strict=True)
    point.save({"step": 9}, complete=True)  # a finished run's
    assert point.load() is None and point.load(allow_complete=True)["step"] == 9
    assert other.load(allow_complete=True, strict=True) is None  # a finished run of other inputs: nothing to lose
    point.remove()
    assert not path.exists() and not path.parent.exists() and path.parent.parent.exists()


def test_rng_state_round_trip():
    state = training.rng_state()
    a = torch.rand(3)
    training.set_rng_state(state)
    assert torch.equal(torch.rand(3), a)


def test_each_rank_gets_its_own_stream_and_rank_0_keeps_the_seed(monkeypatch):
    """seed_rank_stream: rank 0 draws what torch.manual_seed(seed) draws (one-process runs unchanged),
    other ranks draw their own, stable numbers; a resume point holds every rank's state by rank."""
    def draws(rank):
        torch.manual_seed(5)
        training.seed_rank_stream(5, rank)
        return torch.rand(4)

    torch.manual_seed(5)
    seeds_draw = torch.rand(4)
    assert torch.equal(draws(0), seeds_draw)
    assert not torch.equal(draws(1), draws(0)) and not torch.equal(draws(1), draws(2))
    assert torch.equal(draws(1), draws(1))
    states = [None, training.rng_state()]   # this process plays rank 1: its own entry is restored
    a = torch.rand(3)
    monkeypatch.setattr(training, "get_rank", lambda: 1)
    training.set_rank_rng_state(states)
    assert torch.equal(torch.rand(3), a)
    assert len(training.rank_rng_states()) == 1   # no process group: this process alone


def test_live_log_rewrites_its_history(tmp_path):
    def steps(name):
        rows = (tmp_path / "live" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
        return [(int(r.split("\t")[0]), float(r.split("\t")[1])) for r in rows[1:]]

    log = LiveLog(tmp_path / "live")
    log.log(2, {"train/loss": 1.0})
    log.log(4, {"train/loss": 0.5})
    shutil.rmtree(tmp_path / "live")  # DVC removes the curves before it reruns a stage
    resumed = LiveLog(tmp_path / "live", rows=log.rows[:1])  # resumed from the step-2 resume point
    resumed.log(4, {"train/loss": 0.25})
    resumed.end()
    assert steps("train/loss") == [(2, 1.0), (4, 0.25)]
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["train"]["loss"] == 0.25
    quiet = LiveLog(tmp_path / "other", rows=log.rows, enabled=False)  # ranks > 0: rows only
    quiet.log(6, {"train/loss": 0.1})
    assert [r["step"] for r in quiet.rows] == [2, 4, 6] and not (tmp_path / "other").exists()


def test_stop_on_signal_sets_a_flag_then_interrupts():
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        assert stop.requested() == 0
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stop.requested() == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        err = stop.interrupted("train_x", 7, "out/.resume/state.pt")
    assert signal.getsignal(signal.SIGTERM) == before
    assert isinstance(err, TrainingInterrupted) and isinstance(err, ClcaeError) and err.exit_code == 143
    assert str(err).startswith("train_x stopped by SIGTERM at step 7; resume point saved to out/.resume/state.pt")


def test_a_non_collective_stop_reads_its_own_signal_only(monkeypatch):
    """collective=False (ranks that work through different amounts) never calls into the process
    group: here a 'distributed' run without one would fail at the first collective."""
    monkeypatch.setattr(training, "is_distributed", lambda: True)
    with StopOnSignal(collective=False) as stop:
        assert stop.requested() == 0
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stop.requested() == signal.SIGTERM
    with StopOnSignal() as stop, pytest.raises((RuntimeError, ValueError)):
        stop.requested()   # the collective kind does call it


# ----------------------------------------------------------------------------- stage errors


def run_stage(run, params: dict, tmp_path, capsys) -> tuple[int, str]:
    """stage_main(run) on a params file: (exit code, stderr)."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        stage_main(run, ["--params", str(path)])
    return exit_.value.code, capsys.readouterr().err


def test_stage_main_prints_the_projects_errors_as_one_line(tmp_path, capsys):
    def raiser(error):
        def run(params):
            raise error
        return run

    for error, code, line in ((ConfigError("train_aligner.batch_size: too big"), 1, "error: train_aligner.batch_size"),
                              (InputError("data/pairs: no shard_*.pt files"), 1, "error: data/pairs"),
                              (TrainingInterrupted("train_x stopped by SIGTERM", signal.SIGTERM), 143,
                               "interrupted: train_x"),
                              (KeyboardInterrupt(), 130, "interrupted")):
        status, err = run_stage(raiser(error), {}, tmp_path, capsys)
        assert status == code and err.startswith(line) and err.count("\n") == 1, err
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_stage(raiser(ZeroDivisionError("bug")), {}, tmp_path, capsys)


def test_bad_inputs_print_one_line(tmp_path, capsys):
    from test_train_aligner import tiny_params

    from clcae.pipeline.synthesize import run as synthesize_run
    from clcae.pipeline.train_aligner import run as aligner_run
    from clcae.pipeline.world import run as world_run

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    status, err = run_stage(synthesize_run, {"shared": {"generator": str(junk), "device": "cpu"},
                                             "synthesize": {"out_dir": str(tmp_path / "p"), "report_dir": str(tmp_path / "r")}},
                            tmp_path, capsys)
    assert status == 1 and err.startswith(f"error: {junk}") and err.count("\n") == 1, err
    if not torch.cuda.is_available():
        status, err = run_stage(synthesize_run, {"shared": {"device": "cuda"}}, tmp_path, capsys)
        assert (status, err) == (1, "error: shared.device: 'cuda' requested but no CUDA device is available\n")
    status, err = run_stage(world_run, {"world": {"world_cnn": {"steps": 0}}}, tmp_path, capsys)
    assert status == 1 and err.endswith("world.world_cnn.steps: must be >= 1, got 0\n") and err.count("\n") == 1
    status, err = run_stage(world_run, {"world": {"world_cnn": {"seed": 3}}}, tmp_path, capsys)
    assert status == 1 and "world.world_cnn.seed: unknown key" in err and err.count("\n") == 1
    params = tiny_params(tmp_path / "a", steps=2)
    synthesize_run(params)
    blocks = {"shared": {"seed": 1, "device": "cpu", "generator": params.shared.generator},
              "synthesize": {"out_dir": params.synthesize.out_dir},
              "train_aligner": {"batch_size": 4096, "holdout": 32, "out_dir": str(tmp_path / "a" / "aligner"),
                                "report_dir": str(tmp_path / "a" / "ra")}}
    status, err = run_stage(aligner_run, blocks, tmp_path, capsys)
    assert status == 1 and err.startswith("error: train_aligner.holdout (32) leaves 128 pairs") \
        and "train_aligner.batch_size (4096)" in err and err.count("\n") == 1, err


# ----------------------------------------------------------------------------- synthesize


def test_synthesize_keeps_shards_only_for_an_interrupted_run_of_the_same_code(tmp_path, monkeypatch):
    from test_train_aligner import tiny_params

    import clcae.pipeline.synthesize as syn
    from clcae.shards import load_pairs

    params = tiny_params(tmp_path)  # 160 pairs in two shards of 80
    real_render = syn.render_pairs

    def killed_in_shard_1(G, z, spec, batch_size, noise_seed, check=None):
        if noise_seed == syn.shard_seed(spec.seed, 1):
            os.kill(os.getpid(), signal.SIGTERM)  # stops before the shard's next batch
        return real_render(G, z, spec, batch_size, noise_seed, check=check)

    monkeypatch.setattr(syn, "render_pairs", killed_in_shard_1)
    with pytest.raises(TrainingInterrupted, match="synthesize stopped by SIGTERM at shard 1"):
        syn.run(params)
    folder = Path(params.synthesize.out_dir)
    assert [p.name for p in folder.glob("shard_*.pt")] == ["shard_00000.pt"]
    with pytest.raises(InputError, match="unfinished pairs"):
        load_pairs(folder)
    monkeypatch.setattr(syn, "render_pairs", real_render)
    assert syn.run(params)["rendered_now"] == 80  # the same spec and code: shard 1 only
    first = load_pairs(folder)
    assert syn.pairs_manifest(folder)["complete"] is True
    assert syn.run(params)["rendered_now"] == 160  # a finished run (dvc repro -f): all again
    real_code = training.stage_code_signature
    monkeypatch.setattr(training, "stage_code_signature", lambda stage: "edited " + real_code(stage))
    monkeypatch.setattr(syn, "render_pairs", killed_in_shard_1)
    with pytest.raises(TrainingInterrupted):
        syn.run(params)
    monkeypatch.setattr(training, "stage_code_signature", real_code)
    monkeypatch.setattr(syn, "render_pairs", real_render)
    assert syn.run(params)["rendered_now"] == 160  # the interrupted run's code differs: nothing kept
    again = load_pairs(folder)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


# ----------------------------------------------------------------------------- DVC, end to end


def copy_untracked_sources(repo: Path) -> None:
    """make_tiny_repo copies tracked files; code not yet committed must travel too."""
    listed = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "clcae", "stages"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for f in listed:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, repo / f)
    git = lambda *a: subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *a], cwd=repo, check=True,
                                    capture_output=True)
    git("add", "-A")
    git("commit", "-qm", "untracked sources", "--allow-empty")


def curve_steps(repo: Path) -> list[int]:
    return tiny.curve_steps(repo / "reports/aligner")


def aligner_weights(repo: Path) -> dict:
    from clcae.io import read_checkpoint

    return read_checkpoint(repo / "data/aligner/aligner.pt")["state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


def sigterm_mid_training(repo: Path) -> str:
    """Run the aligner stage, SIGTERM it once its first resume point exists; its stderr."""
    from test_pipeline import BIN

    # the same threads as the `dvc repro` runs it is compared with (float sums depend on the thread count)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([sys.executable, "stages/train_aligner.py"], cwd=repo, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    point = repo / "data/aligner/.resume/state.pt"
    deadline = time.time() + 120
    while not point.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    return err


@pytest.mark.slow
def test_dvc_reruns_after_code_change_force_and_sigterm(tmp_path):
    from test_pipeline import dvc, make_tiny_repo

    repo = make_tiny_repo(tmp_path)  # the world stage (slow) and those after the aligner are not needed
    copy_untracked_sources(repo)
    dvc("repro", "train_aligner", cwd=repo)
    assert curve_steps(repo) == [3, 6] and not (repo / "data/aligner/.resume").exists()
    first = aligner_weights(repo)

    # dvc repro -f: both stages rerun from scratch (the issue: the aligner resumed at its last step and failed)
    out = dvc("repro", "-f", "train_aligner", cwd=repo).stdout
    assert "resuming" not in out and curve_steps(repo) == [3, 6]
    assert json.loads((repo / "reports/synthesize/metrics.json").read_text())["rendered_now"] == 200
    assert same_weights(aligner_weights(repo), first)

    # SIGTERM mid-training, then dvc repro: resumes, same weights as a whole run, whole curves
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train_aligner"].update(steps=45, eval_every=3, checkpoint_every=3)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    err = sigterm_mid_training(repo)
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: train_aligner stopped by SIGTERM at step ") and "dvc repro" in last
    step = int(last.split("at step ")[1].split(";")[0])
    assert 3 <= step < 45
    out = dvc("repro", "train_aligner", cwd=repo).stdout
    assert f"resuming at step {step}" in out
    assert curve_steps(repo) == list(range(3, 46, 3)) and not (repo / "data/aligner/.resume").exists()
    resumed = aligner_weights(repo)
    out = dvc("repro", "-f", "-s", "train_aligner", cwd=repo).stdout  # the same run, uninterrupted
    assert "resuming" not in out and same_weights(aligner_weights(repo), resumed)

    # an interrupted run, then a code change: both stages recompute from scratch
    sigterm_mid_training(repo)
    for f in ("clcae/pipeline/train_aligner.py", "clcae/pipeline/synthesize.py"):
        with open(repo / f, "a") as fh:
            fh.write("# touched\n")
    out = dvc("repro", "train_aligner", cwd=repo).stdout
    assert "starting from scratch" in out and "resuming" not in out
    assert json.loads((repo / "reports/synthesize/metrics.json").read_text())["rendered_now"] == 200
    assert curve_steps(repo) == list(range(3, 46, 3)) and same_weights(aligner_weights(repo), resumed)
    status = dvc("status", "train_aligner", cwd=repo).stdout.lower()
    assert "up to date" in status or status.strip() == ""


# ----------------------------------------------------------------------------- the world generator's trainer


def test_generator_trainer_resumes_only_interrupted_runs(tmp_path, monkeypatch, capsys):
    from test_train_generator import TINY

    import clcae.worlds.procfaces.train_generator as tg
    from clcae.io import read_checkpoint

    cfg = tg.GeneratorTrainConfig(**TINY)
    whole = tg.train(cfg, str(tmp_path / "a" / "g.pt"), progress=False)
    assert read_checkpoint(tmp_path / "a" / "g.pt.state.pt")["complete"] is True
    capsys.readouterr()
    tg.train(cfg, str(tmp_path / "a" / "g.pt"), progress=False)  # the same command again: from scratch
    assert "a finished run with this budget; starting from scratch" in capsys.readouterr().out

    real_step = tg.regression_step

    def sigint_in_step_3(st, *args):
        if st.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(st, *args)

    monkeypatch.setattr(tg, "regression_step", sigint_in_step_3)
    with pytest.raises(TrainingInterrupted, match=r"generator training \(regression\) stopped by SIGINT at step 3"):
        tg.train(cfg, str(tmp_path / "b" / "g.pt"), progress=False)
    saved = read_checkpoint(tmp_path / "b" / "g.pt.state.pt")
    assert saved["step"] == 3 and saved["complete"] is False
    monkeypatch.setattr(tg, "regression_step", real_step)
    with pytest.raises(ResumeMismatch, match=r"other config.lr; delete it to start over"):
        tg.train(tg.GeneratorTrainConfig(**{**TINY, "lr": 1e-3}), str(tmp_path / "b" / "g.pt"), progress=False)
    resumed = tg.train(cfg, str(tmp_path / "b" / "g.pt"), progress=False)
    assert [h["step"] for h in resumed["history"]] == [6]
    a, b = read_checkpoint(tmp_path / "a" / "g.pt")["g_ema"], read_checkpoint(tmp_path / "b" / "g.pt")["g_ema"]
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, atol=1e-6, rtol=0, msg=key)
    assert whole["history"][-1]["loss"] == pytest.approx(resumed["history"][-1]["loss"], abs=1e-6)
