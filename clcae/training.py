"""What every trainer shares: resume points, whole dvclive curves, stop signals, LR schedule, finite losses.

A resume point serves only an interrupted run of the same inputs. Its signature is a plain dict
of what the run depends on: the params, the data it reads (e.g. the pairs manifest) and the code
(:func:`stage_code_signature`, a sha256 of the stage's code deps in ``dvc.yaml``). A resume point
of another signature is ignored, so a code change, new data or ``dvc repro -f`` never resumes old
work; a finished run removes its resume point (or marks it ``complete``), so a rerun starts from
scratch. Resume points live in untracked folders (``<out_dir>/.resume/``, ignored by git), not in
DVC outputs (``synthesize``'s shards are the exception: its ``persist`` output with a manifest).

Every trainer runs the one loop here: :func:`restore` loads a resume point (model, optimiser, each
rank's RNG streams, an :class:`EpochPlateau`), then :func:`fit` runs the steps of a :class:`Loop`
(learning rate, finite-loss check, backward and step, whole curves, checkpoints, stop signals) and
the trainer writes its outputs, then ``log.end()`` and ``point.remove()``.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from clcae.distributed import (
    all_gather_objects,
    all_reduce_mean,
    barrier,
    get_rank,
    is_distributed,
    is_main_process,
    same_on_all_ranks,
)
from clcae.errors import ClcaeError, ConfigError, InputError
from clcae.seeding import derive_seed, seeded_generator
from clcae.steps import check_finite, set_lr

__all__ = ["BatchSchedule", "ResumePoint", "TrainingInterrupted", "StopOnSignal", "LiveLog", "code_signature", "stage_code",
           "stage_code_signature", "rng_state", "set_rng_state", "seed_rank_stream", "rank_rng_states",
           "set_rank_rng_state", "Loop", "Resumed", "restore", "fit"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- code signatures


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                      and p.suffix != ".pyc")
    return [path]


def code_signature(paths: Iterable[str | os.PathLike], root: str | os.PathLike = ".") -> str:
    """sha256 over the files at ``paths`` (a folder: every file below it, less ``__pycache__``),
    in sorted order, each with its path relative to ``root``; a missing path counts as missing."""
    root, digest = Path(root), hashlib.sha256()
    for rel in sorted({Path(p).as_posix() for p in paths}):
        path = root / rel
        if not path.exists():
            digest.update(f"missing {rel}\n".encode())
            continue
        for f in _files(path):
            digest.update(f"{f.relative_to(root).as_posix()}\n".encode())
            digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def _entry_paths(entries) -> list[str]:
    """Paths of a dvc.yaml deps/outs list (entries are strings or ``{path: options}``)."""
    paths = []
    for e in entries or []:
        paths.extend([e] if isinstance(e, str) else list(e))
    return paths


def stage_code(stage: str, dvc_yaml: str | os.PathLike = "dvc.yaml") -> list[str] | None:
    """The code deps of ``stage`` in ``dvc_yaml`` (None without that file or stage).

    Code deps are the deps that no stage writes (outs, metrics, plots), that are not
    ``${param}`` templated (data such as ``${shared.generator}``), and that are a ``.py``
    file or a folder with ``.py`` files in it. ``train_encoder@clcae`` reads ``train_encoder``
    (a foreach stage's ``do``).
    """
    import yaml

    path = Path(dvc_yaml)
    if not path.is_file():
        return None
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {})
    entry = stages.get(stage) or stages.get(stage.split("@")[0])
    if entry is None:
        return None
    entry = entry.get("do", entry)
    written = {p.rstrip("/") for s in stages.values() for key in ("outs", "metrics", "plots")
               for p in _entry_paths(s.get("do", s).get(key))}
    root, code = path.parent, []
    for dep in _entry_paths(entry.get("deps")):
        dep = dep.rstrip("/")
        if "${" in dep or any(dep == w or dep.startswith(w + "/") for w in written):
            continue
        if dep.endswith(".py") or ((root / dep).is_dir() and next((root / dep).rglob("*.py"), None)):
            code.append(dep)
    return code


def stage_code_signature(stage: str, dvc_yaml: str | os.PathLike = "dvc.yaml") -> str:
    """sha256 of the code ``stage`` depends on: its code deps in ``dvc.yaml`` (what DVC reruns it
    for), or, without that file or stage (a library call elsewhere), the whole ``clcae`` package."""
    paths = stage_code(stage, dvc_yaml)
    if paths is None:
        return code_signature(["clcae"], PROJECT_ROOT)
    return code_signature(paths, Path(dvc_yaml).parent)


# ----------------------------------------------------------------------------- resume points


def _plain(obj):
    """The signature as JSON would keep it (tuples -> lists, keys -> str), so saved == fresh."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _differences(saved: Mapping, wanted: Mapping) -> list[str]:
    """Keys whose values differ, one level into sub-dicts (``params.lr``, ``code``)."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        else:
            out.append(key)
    return out


class ResumeMismatch(ClcaeError):
    """A resume point of an interrupted run whose inputs differ, where discarding it needs the user."""


class ResumePoint:
    """One weights-only file with a run's state, valid only for the run of the same ``signature``.

    ``signature``: a dict of str/int/float/bool/list/dict (params, data, code). ``load`` returns
    the saved state (``step``, ``history``, ...) or None; ``save`` writes atomically; ``remove``
    deletes it when the run is done. Saved states hold ``signature`` and ``complete`` too.
    """

    def __init__(self, path: str | os.PathLike, signature: Mapping):
        self.path, self.signature = Path(path), _plain(dict(signature))

    def load(self, *, allow_complete: bool = False, strict: bool = False) -> dict | None:
        """The saved state of this run, or None (no file, another run's, or a finished run's).

        ``allow_complete``: also return a state saved with ``complete=True`` (a finished run that
        the caller may extend). ``strict``: an unfinished run of other inputs raises
        :class:`ResumeMismatch` instead of being ignored (for hand-run trainers whose resume
        points are worth hours).
        """
        from clcae.io import CheckpointError, read_tensors

        if not self.path.is_file():
            return None
        try:
            state = read_tensors(self.path)  # our own file: weights-only even when checkpoints are trusted
        except CheckpointError as e:
            print(f"ignoring unreadable resume point {e}; starting from scratch", flush=True)
            return None
        if not isinstance(state, dict) or "signature" not in state:
            print(f"{self.path}: not a resume point; starting from scratch", flush=True)
            return None
        complete = bool(state.get("complete", False))
        changed = _differences(state["signature"], self.signature)
        if complete and not allow_complete:
            print(f"{self.path}: a finished run's; starting from scratch", flush=True)
            return None
        if changed:
            if strict and not complete:
                raise ResumeMismatch(f"{self.path}: an interrupted run with other {', '.join(changed)}; "
                                     f"delete it to start over")
            print(f"{self.path}: saved by a run with other {', '.join(changed)}; starting from scratch", flush=True)
            return None
        return state

    def save(self, state: Mapping, *, complete: bool = False) -> None:
        from clcae.io import save_torch

        save_torch({**state, "signature": self.signature, "complete": complete}, self.path)

    def remove(self) -> None:
        """Delete the file (the run finished) and its folder when that is now empty."""
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass


def rng_state(device: torch.device | str | None = None) -> dict:
    """The global RNG states as tensors (weights-only loadable): CPU, and CUDA for a CUDA device."""
    state = {"cpu": torch.get_rng_state()}
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | str | None = None) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_rank_stream(seed: int, rank: int) -> None:
    """Give each DDP rank its own global RNG stream (its own dropout masks, as independent samples
    have). Rank 0 keeps ``seed``'s stream, so a one-process run draws what it always drew. Call it
    after building the model: every rank starts from the same init (DDP broadcasts rank 0's anyway)."""
    if rank > 0:
        torch.manual_seed(derive_seed(seed, "rank", str(rank)))


def rank_rng_states(device: torch.device | str | None = None) -> list[dict]:
    """Every rank's RNG states in rank order, for a resume point that restores each rank's own
    stream (:func:`set_rank_rng_state`). A collective under DDP: every rank calls it."""
    return all_gather_objects(rng_state(device))


def set_rank_rng_state(states: list[dict], device: torch.device | str | None = None) -> None:
    """Restore this rank's entry of :func:`rank_rng_states` (resume points match in world size)."""
    set_rng_state(states[get_rank()], device)


# ----------------------------------------------------------------------------- stopping on signals


class TrainingInterrupted(ClcaeError):
    """SIGINT / SIGTERM stopped a run after saving its resume point; exits with 128 + the signal."""
    label = "interrupted"

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum, self.exit_code = int(signum), 128 + int(signum)


class StopOnSignal:
    """``with StopOnSignal() as stop:``: SIGINT (Ctrl-C) and SIGTERM (a cluster's pre-emption)
    ask the loop to stop instead of killing it. The loop calls :meth:`requested` after each
    step and, when it is set, saves a resume point and raises :meth:`interrupted`. A second
    signal interrupts at once (KeyboardInterrupt). Under DDP, :meth:`requested` is a collective
    (every rank stops at the same step) unless ``collective=False``: for ranks that work through
    different amounts (synthesize's shards), each stops on its own signal. Outside the main thread
    it installs nothing."""

    def __init__(self, device: torch.device | str = "cpu", collective: bool = True):
        self.device, self.collective, self.signum, self._previous = torch.device(device), collective, 0, {}

    def _handle(self, signum, frame) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step (again to stop now)", file=sys.stderr,
              flush=True)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def requested(self) -> int:
        """The signal that asked to stop (0: none); the largest over ranks under DDP (collective)."""
        if not self.collective or not is_distributed():
            return self.signum
        import torch.distributed as dist

        flag = torch.tensor([self.signum], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.signum = int(flag.item())
        return self.signum

    def interrupted(self, what: str, step: int, path: str | os.PathLike, unit: str = "step") -> TrainingInterrupted:
        """The exception to raise once the resume point at ``path`` is saved."""
        name = signal.Signals(self.signum or signal.SIGINT).name
        return TrainingInterrupted(f"{what} stopped by {name} at {unit} {step}; resume point saved to {path}: "
                                   f"run `dvc repro` (or the same command) again to continue",
                                   self.signum or signal.SIGINT)


# ----------------------------------------------------------------------------- curves


class LiveLog:
    """dvclive curves that stay whole across resumes.

    Every logged row (``{"step": s, name: value, ...}``) is kept in :attr:`rows`, which the
    caller saves in its resume point and passes back on resume; the log then opens dvclive
    afresh (it deletes its plots, as DVC does before a stage runs) and writes the saved rows
    again, so the curves hold a row per logged step from the start. ``enabled=False`` (ranks
    other than 0) keeps the rows and writes nothing.
    """

    def __init__(self, directory: str | os.PathLike, rows: Iterable[Mapping] = (), enabled: bool = True):
        self.rows: list[dict] = [dict(r) for r in rows]
        self.live = None
        if enabled:
            from dvclive import Live

            self.live = Live(str(directory), resume=False, save_dvc_exp=False, dvcyaml=False)
            for row in self.rows:
                self._write(row)

    def _write(self, row: Mapping) -> None:
        self.live.step = row["step"]
        for name, value in row.items():
            if name != "step":
                self.live.log_metric(name, value)
        self.live.make_summary()

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self.rows.append(row)
        if self.live is not None:
            self._write(row)

    def end(self) -> None:
        if self.live is not None:
            self.live.end()


# ----------------------------------------------------------------------------- batches, schedule, checks


class BatchSchedule:
    """Global batch indices of step s: epoch-wise permutations seeded by ``derive_seed(seed, "epoch", e)``.

    A function of the step alone, so a resumed run sees the same batches; rank r takes
    rows r, r + world, ... of the global batch. ``what`` names the batch-size key in errors.
    """

    def __init__(self, n: int, batch_size: int, seed: int, what: str = "train_aligner.batch_size"):
        if n < batch_size:
            raise ConfigError(f"{what} ({batch_size}) exceeds the {n} training examples")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = seeded_generator(self.seed, "epoch", str(epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return self._perm[pos * self.batch_size:(pos + 1) * self.batch_size]



class EpochPlateau:
    """The official CLCAE trainer's learning rate: ``ReduceLROnPlateau`` (mode min) stepped once per
    epoch on that epoch's mean loss (the official trainer feeds it its validation losses; we have no
    validation pass while training, so the training loss stands in). Its state goes into resume points."""

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, patience: int, factor: float,
                 reduce_mean=None):
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=patience,
                                                                    factor=factor)
        self.steps_per_epoch, self.reduce_mean = steps_per_epoch, reduce_mean or (lambda t: t)
        self.total, self.count = 0.0, 0

    def update(self, steps_done: int, loss: torch.Tensor) -> None:
        """Count the loss of the step that made ``steps_done`` steps; at an epoch's end, step the scheduler
        on the epoch's mean (averaged over ranks by ``reduce_mean``)."""
        self.total = self.total + loss.detach().float()
        self.count += 1
        if steps_done % self.steps_per_epoch == 0:
            mean = self.reduce_mean(torch.as_tensor(self.total) / self.count)
            self.scheduler.step(float(mean))
            self.total, self.count = 0.0, 0

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict(), "total": float(self.total), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.total, self.count = state["total"], state["count"]


# ----------------------------------------------------------------------------- the training loop


@dataclass
class Resumed:
    """Where a run starts: step 0 or an interrupted run's resume point."""
    step: int = 0
    seconds: float = 0.0       # training time before the interruption
    history: list = field(default_factory=list)  # the curves' rows so far


def restore(point: ResumePoint, model: torch.nn.Module, opt: torch.optim.Optimizer, device,
            plateau: EpochPlateau | None = None, who: str = "") -> Resumed:
    """Load ``point`` (if it serves this run) into the unwrapped ``model``, ``opt``, every rank's
    RNG streams and ``plateau``; before DDP wraps the model. Raises when the ranks found different
    resume points (each rank reads the file itself)."""
    state = point.load() or {}  # on the CPU: load_state_dict copies to the model's device
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        set_rank_rng_state(state["rng"], device)
        if plateau is not None:
            plateau.load_state_dict(state["plateau"])
    resumed = Resumed(state.get("step", 0), state.get("seconds", 0.0), state.get("history", []))
    if not same_on_all_ranks(resumed.step, device):
        raise InputError(f"{point.path}: the ranks found different resume points; resume points must be on a "
                         f"filesystem every rank reads (or delete {point.path.parent} to start over)")
    if state and is_main_process():
        print(f"{who}: resuming at step {resumed.step} from {point.path}", flush=True)
    return resumed


@dataclass
class Loop:
    """One trainer's parts for :func:`fit`; ``step_loss(batch, step) -> (loss, {term: value})`` runs the
    forward (DDP-wrapped where it must be), the terms are checked finite and logged mean over ranks."""
    name: str                                     # messages and the progress bar, e.g. "train_encoder@clcae"
    model: torch.nn.Module                        # the unwrapped model: what a resume point saves
    opt: torch.optim.Optimizer
    point: ResumePoint
    steps: int
    device: torch.device
    batches: Callable[[int], Iterable]            # this rank's batches from a step on (starts loader workers)
    step_loss: Callable
    live_dir: Path                                # the dvclive curves (LiveLog)
    lr: Callable[[int], float] | None = None      # the step's learning rate; None: ``plateau`` sets it
    plateau: EpochPlateau | None = None
    log_every: int = 100
    checkpoint_every: int = 1000
    log_extra: Callable[[int], dict] | None = None   # more figures at each logged step (main process)
    after_step: Callable[[int], None] | None = None  # e.g. a sample grid (main process, before the last step)
    headline: str = "loss"                        # the term the progress bar shows
    cpu_amp: bool = False                         # bf16 autocast on the CPU too (shared.cpu_amp)


def fit(loop: Loop, resumed: Resumed) -> tuple[int, float, LiveLog]:
    """Run ``loop`` from ``resumed`` to ``loop.steps`` -> (step, training seconds, the curves' log).

    At every ``checkpoint_every`` step and the last, and before a stop signal ends the run, every rank
    saves (the RNG states are gathered; rank 0 writes). On CUDA the forward runs under bf16 autocast,
    on the CPU when ``loop.cpu_amp``."""
    step, model, opt, device = resumed.step, loop.model, loop.opt, loop.device
    log = LiveLog(loop.live_dir, rows=resumed.history, enabled=is_main_process())
    start = time.perf_counter() - resumed.seconds

    def save() -> None:  # every rank calls it: the RNG states are gathered
        rngs = rank_rng_states(device)
        if is_main_process():
            loop.point.save({"step": step, "seconds": time.perf_counter() - start, "model": model.state_dict(),
                             "opt": opt.state_dict(), "rng": rngs, "history": log.rows,
                             "plateau": loop.plateau.state_dict() if loop.plateau is not None else None})

    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=device.type == "cuda" or (device.type == "cpu" and loop.cpu_amp))
    batches = iter(loop.batches(step))  # loader workers start here, before the stop-signal handlers
    bar = tqdm(total=loop.steps, initial=step, disable=not is_main_process(), desc=loop.name)
    with StopOnSignal(device) as stop, bar:  # the bar closes before an interruption's message
        for batch in batches:
            if loop.lr is not None:
                set_lr(opt, loop.lr(step))
            with autocast:
                loss, terms = loop.step_loss(batch, step)
            check_finite(terms, step, loop.name)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if loop.plateau is not None:
                loop.plateau.update(step, loss)
            bar.update(1)
            if step % loop.log_every == 0 or step == loop.steps:
                logged = {f"train/{k}": all_reduce_mean(v.detach().float()).item() for k, v in terms.items()}
                if is_main_process():  # collectives above, main-process work below
                    logged["train/lr"] = opt.param_groups[0]["lr"]
                    logged["train/minutes"] = (time.perf_counter() - start) / 60
                    logged.update(loop.log_extra(step) if loop.log_extra is not None else {})
                    log.log(step, logged)
                    bar.set_postfix({loop.headline: f"{logged[f'train/{loop.headline}']:.3f}"})
            if loop.after_step is not None and is_main_process() and step < loop.steps:
                loop.after_step(step)
            if step % loop.checkpoint_every == 0 or step == loop.steps:
                save()  # the last one too: an interruption while writing the outputs resumes at the end
            if stop.requested() and step < loop.steps:
                save()
                barrier()  # rank 0 has written the resume point before any rank exits
                raise stop.interrupted(loop.name, step, loop.point.path)
    return step, time.perf_counter() - start, log
