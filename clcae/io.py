"""Atomic writes (a stage that fails leaves the previous good output or none) and safe checkpoint reads."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import pickletools
import re
import shutil
import uuid
import warnings
import zipfile
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import torch

from clcae.errors import ClcaeError, ConfigError


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def save_csv(frame, path: str | os.PathLike, **to_csv) -> None:
    """``frame.to_csv(path, **to_csv)`` through a temp file (a pandas DataFrame)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv)


def save_figure(fig, path: str | os.PathLike, **savefig) -> None:
    """``fig.savefig(path, **savefig)`` through a temp file; the format comes from ``path``'s suffix."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **savefig)


def save_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_torch(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_image_grid(images_u8: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> None:
    """uint8 [N, 3, H, W] -> one PNG grid."""
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(images_u8, nrow=nrow, padding=2, pad_value=255)
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")


# ----------------------------------------------------------------------------- checkpoints
#
# A .pt file is a pickle, and a pickle can name any Python callable to run while it loads. So every
# checkpoint is read with ``torch.load(weights_only=True)``, which builds only tensors, containers and
# plain values, plus the few globals below that published checkpoints really carry. Anything else is
# refused unless the user opts in for files they trust (``trust=True``, ``CLCAE_TRUST_CHECKPOINTS=1``
# or ``shared.trust_checkpoints: true``, which stage scripts export as that variable).

TRUST_ENV = "CLCAE_TRUST_CHECKPOINTS"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class CheckpointError(ClcaeError, ValueError):
    """A file that cannot be read as the checkpoint asked for; the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose unpickling needs globals outside the allow-list, i.e. could run code."""

    def __init__(self, message: str, path: str = "", names: list[str] | tuple = ()):
        super().__init__(message)
        self.path, self.globals = path, list(names)


class TrustedCheckpointWarning(UserWarning):
    """A checkpoint was loaded with full unpickling because the user trusts it."""


def numpy_globals() -> list[tuple[object, str]]:
    """The numpy part of the allow-list: numpy scalars and numeric arrays as ``(object, 'module.name')``.

    Old checkpoints carry them as data (e.g. a ``best_val_loss`` that is a numpy float, an ``np.ndarray``
    of losses); with these pairs in ``torch.serialization.safe_globals`` a weights-only load rebuilds
    them. Both module spellings: numpy 1.x pickles ``numpy.core``, numpy 2.x ``numpy._core``. Only
    numeric dtypes (bool, ints, uints, floats, complexes): an object-dtype array or scalar, which could
    hold any object, stays refused. Used by :func:`safe_globals` and by the StyleGAN2-ADA snapshot reader
    (:mod:`clcae.nets.stylegan2_ada`), whose own unpickler allows the same names.
    """
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch's wheels
        return []
    core = getattr(np, "_core", None) or np.core
    out = [(np.dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(core.multiarray.scalar, f"{module}.scalar"), (core.multiarray._reconstruct, f"{module}._reconstruct")]
    for code in "?bhilqBHILQefdgFDG":  # bool, ints, uints, floats, complexes
        cls = type(np.dtype(code))
        out.append((cls, f"{cls.__module__}.{cls.__name__}"))
    return out


_numpy_globals = numpy_globals  # the old private name, for imports not yet updated


def safe_globals() -> list[tuple[object, str]]:
    """The allow-list: ``(object, 'module.name')`` pairs for ``torch.serialization.safe_globals``.

    ``argparse.Namespace``: rosinality training checkpoints (``args``) and CLCAE/pSp ``opts``.
    """
    import argparse

    return [(argparse.Namespace, "argparse.Namespace"), *numpy_globals()]


def trust_from_env() -> bool:
    """Whether ``CLCAE_TRUST_CHECKPOINTS`` opts in to full unpickling (1/true/yes/on)."""
    value = os.environ.get(TRUST_ENV, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ConfigError(f"{TRUST_ENV}={os.environ[TRUST_ENV]!r}: expected 1 or 0 (true/false, yes/no, on/off)")
    return value in _TRUE


def _sniff(path: str) -> None:
    """Catch files that are no checkpoint at all before unpickling (empty, HTML page, text)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise CheckpointError(f"{path}: empty file, not a torch checkpoint (an interrupted download?)")
    if head.lstrip().startswith(b"<"):
        raise CheckpointError(f"{path}: an HTML page, not a torch checkpoint (a download link that saved the "
                              f"web page instead of the file? download it again): starts with {head[:32]!r}")
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip archive or a protocol-2 pickle
        raise CheckpointError(f"{path}: not a torch checkpoint (neither a torch zip archive nor a pickle): "
                              f"starts with {head[:32]!r}")


def _pickle_globals(path: str) -> list[str]:
    """'module.name' of every global the file's pickle(s) would import, read without unpickling.

    Only for files ``get_unsafe_globals_in_checkpoint`` cannot read (see :func:`_refused_globals`).
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            streams = [BytesIO(z.read(n)) for n in z.namelist() if n.endswith("data.pkl")]
        return list(dict.fromkeys(n for s in streams for n in _scan_pickles(s, 1)))
    with open(path, "rb") as f:  # legacy format: pickles back to back (magic, version, sys info, object)
        return list(dict.fromkeys(_scan_pickles(f, 5)))


def _scan_pickles(stream, count: int) -> list[str]:
    names: list[str] = []
    for _ in range(count):
        strings, memo = [], {}
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name == "GLOBAL":  # protocol 2 spells builtins as __builtin__
                    names.append(arg.replace(" ", ".").replace("__builtin__.", "builtins."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                    strings.append(arg)
                elif op.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT") and strings:
                    memo[arg] = strings[-1]
                elif op.name in ("GET", "BINGET", "LONG_BINGET") and arg in memo:
                    strings.append(memo[arg])
        except Exception:  # noqa: BLE001 - a best-effort scan for the error message; stop at raw bytes
            break
    return names


def _refused_globals(path: str, error: Exception, allow: list) -> list[str]:
    """The globals that made the weights-only load refuse ``path`` (torch's and ``allow``'s left out).

    A torch.save zip checkpoint (protocol 2, torch.save's default) is read by torch's own static scan,
    ``torch.serialization.get_unsafe_globals_in_checkpoint``, with ``allow`` in force so that it leaves
    those out too. That function cannot read the rest, so :func:`_pickle_globals` scans them instead:
    legacy (pre-zip) files, which it rejects with a ValueError, and pickles with opcodes beyond what
    torch.save writes by default (``pickle_protocol`` 3 and up: FRAME, STACK_GLOBAL, MEMOIZE, ...;
    TorchScript archives), on which its scanner stops with "Unsupported operand".
    """
    try:
        with torch.serialization.safe_globals(allow):
            names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - a file torch's scan cannot read: our own scan below
        try:  # torch's default allow-list has no public accessor; without it, name every global
            from torch._weights_only_unpickler import _get_allowed_globals
            allowed = set(_get_allowed_globals())
        except Exception:  # noqa: BLE001
            allowed = set()
        allowed |= {name for _, name in allow}
        names = [n for n in _pickle_globals(path) if n not in allowed]
    if not names:  # e.g. a global the scan could not pair up: take the unpickler's own word
        names = re.findall(r"GLOBAL ([\w.]+)", str(error))[:1]
    return names


def _weights_only_detail(error: Exception) -> str:
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    return " ".join(text.split("Check the documentation of torch.load")[0].split())


def _load(path: str | os.PathLike, map_location, allow: list, trust: bool | None, data_file: bool = False):
    """weights-only load with ``allow``; a refusal raises, or (trusted) loads fully with a warning."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    _sniff(path)
    unreadable = f"{path}: cannot be read as a torch checkpoint (truncated or not a checkpoint?)"
    try:
        with torch.serialization.safe_globals(allow), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # refused or fine either way
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"{unreadable}: {e}") from e
        refused = e
    except Exception as e:
        raise CheckpointError(f"{unreadable}: {type(e).__name__}: {e}") from e
    names = _refused_globals(path, refused, allow)
    what = (f"global(s) {', '.join(names)}" if names
            else f"pickle instructions outside weights-only loading ({_weights_only_detail(refused)})")
    if data_file:
        raise UnsafeCheckpointError(f"{path}: refused to load: unpickling it would call {what}; a data file "
                                    f"written by clcae holds only tensors and plain values (re-run the stage "
                                    f"that writes it)", path, names) from None
    if trust is None:
        trust = trust_from_env()
    if not trust:
        raise UnsafeCheckpointError(
            f"{path}: refused to load: unpickling it would call {what}, which is not on clcae's allow-list "
            f"(tensors, containers, numbers, strings, argparse.Namespace, numpy numbers) and could run code "
            f"from the file. Only if you trust this file: set {TRUST_ENV}=1 (command line), "
            f"`shared.trust_checkpoints: true` (params.yaml) or pass trust=True", path, names) from None
    warnings.warn(f"{path}: trusted checkpoint loaded with full unpickling ({what}); this runs any code the "
                  f"file carries", TrustedCheckpointWarning, stacklevel=3)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint even with full unpickling: "
                              f"{type(e).__name__}: {e}") from e


def read_checkpoint(path: str | os.PathLike, trust: bool | None = None, map_location="cpu"):
    """``torch.load`` that never runs code from the file unless the user trusts it.

    Loads weights-only with :func:`safe_globals` allowed. A file that needs any other global raises
    :class:`UnsafeCheckpointError` naming the file and the globals; with ``trust`` (None: read
    ``CLCAE_TRUST_CHECKPOINTS``) it is loaded fully instead, with a :class:`TrustedCheckpointWarning`.
    Missing, empty, truncated or HTML files raise :class:`CheckpointError` naming the file.
    """
    return _load(path, map_location, safe_globals(), trust)


def read_tensors(path: str | os.PathLike, map_location="cpu"):
    """A data file clcae wrote itself (shards, stats): weights-only, no extra globals, no opt-in."""
    return _load(path, map_location, [], False, data_file=True)


def read_state_dict(ckpt, what: str = "<checkpoint>", trust: bool | None = None) -> tuple[dict, str]:
    """A state dict from a path, a ``{'state_dict': ...}`` checkpoint or a bare state dict.

    Returns ``(state, source)``; ``source`` names the file (or ``what``) for error messages.
    A path is read with :func:`read_checkpoint` (``trust`` as there).
    """
    source = what
    if isinstance(ckpt, (str, os.PathLike)):
        source = os.fspath(ckpt)
        ckpt = read_checkpoint(source, trust=trust)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{source}: expected a state dict, got {type(ckpt).__name__}")
    return ckpt, source


def load_state_strict(module: torch.nn.Module, state: dict, source: str) -> None:
    """load_state_dict(strict=True) whose error names the file and the key differences."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
             for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        def show(keys):
            return f"{len(keys)} {keys[:6]}" + (" ..." if len(keys) > 6 else "")
        raise CheckpointError(f"{source}: state dict does not fit {type(module).__name__}: "
                              f"missing keys {show(missing)}; unexpected keys {show(unexpected)}; "
                              f"shape mismatches {show(wrong)}")
    module.load_state_dict(state, strict=True)
