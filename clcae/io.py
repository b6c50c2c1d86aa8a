"""Atomic writes: a stage that fails leaves the previous good output or none."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import torch


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


class CheckpointError(ValueError):
    """A file that is not a readable StyleGAN2 generator checkpoint."""


def read_checkpoint(path: str | os.PathLike) -> dict:
    """torch.load with an error that names the file when it is truncated or not a checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as first:  # training checkpoints hold argparse Namespaces
            if "weights_only" not in str(first) and "Unsupported global" not in str(first):
                raise
            return torch.load(path, map_location="cpu", weights_only=False)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint (truncated or not a checkpoint?): "
                              f"{type(e).__name__}: {e}") from e


def read_state_dict(ckpt, what: str = "<checkpoint>") -> tuple[dict, str]:
    """A state dict from a path, a ``{'state_dict': ...}`` checkpoint or a bare state dict.

    Returns ``(state, source)``; ``source`` names the file (or ``what``) for error messages.
    """
    source = what
    if isinstance(ckpt, (str, os.PathLike)):
        source = os.fspath(ckpt)
        ckpt = read_checkpoint(source)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{source}: expected a state dict, got {type(ckpt).__name__}")
    return ckpt, source
