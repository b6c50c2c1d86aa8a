"""LPIPS (Zhang et al. 2018) with its real ImageNet AlexNet backbone, or not at all.

Loaded from local files only: LPIPS's calibrated linear layers ship inside the ``lpips``
package; the AlexNet trunk is torchvision's ``alexnet-owt-7be5be79.pth``, read from where
torchvision caches it (``torch.hub.get_dir()/checkpoints``, moved by TORCH_HOME) or from a
given path. Nothing is downloaded at run time. When a file is missing, the metric is
unavailable (:class:`MetricUnavailable` with the reason, :func:`lpips_available`); it is never
computed with a randomly initialised trunk, which would not be LPIPS.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from clcae.io import CheckpointError, read_checkpoint
from clcae.metrics.registry import MetricUnavailable, register_metric

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"


def torchvision_cache(file: str) -> Path:
    """Where torchvision looks for (and would download) a weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file


def lpips_linear_path() -> Path:
    """LPIPS's calibrated linear layers for AlexNet, shipped inside the lpips package."""
    import lpips as lpips_pkg

    return Path(lpips_pkg.__file__).parent / "weights" / "v0.1" / "alex.pth"


def _trunk_path(alexnet: str | os.PathLike | None) -> Path:
    return Path(alexnet) if alexnet else torchvision_cache(ALEXNET_FILE)


def _missing(alexnet: str | os.PathLike | None, how_to_point: str) -> str | None:
    """Why LPIPS-AlexNet cannot be loaded (a missing file), or None. The reason names no path of
    this machine unless the user gave it: stage metrics record it, and they must read the same
    wherever the stage runs."""
    trunk, linear = _trunk_path(alexnet), lpips_linear_path()
    linear_note = "" if linear.is_file() else \
        " LPIPS's own linear weights (weights/v0.1/alex.pth in the lpips package) are missing too: reinstall lpips."
    if not trunk.is_file():
        cache = trunk == torchvision_cache(ALEXNET_FILE)
        given = f"torchvision's cache, torch.hub.get_dir()/checkpoints/{ALEXNET_FILE}" if cache else f"the file {trunk}"
        return (f"LPIPS-AlexNet: the ImageNet AlexNet backbone is not in {given} (TORCH_HOME moves the cache); "
                f"fetch {ALEXNET_URL} there, or {how_to_point}.{linear_note} Nothing is downloaded at run time.")
    if not linear.is_file():
        return f"LPIPS-AlexNet:{linear_note}"
    return None


def lpips_available(alexnet: str | os.PathLike | None = None) -> tuple[bool, str]:
    """``(True, '')`` when both weight files are present, else ``(False, reason)``."""
    reason = _missing(alexnet, "pass its path")
    return reason is None, reason or ""


def load_lpips_alex(alexnet: str | os.PathLike | None = None, how_to_point: str = "pass its path") -> nn.Module:
    """LPIPS-AlexNet (v0.1), frozen, with its ImageNet trunk from ``alexnet`` (default:
    torchvision's cache).

    The trunk is built randomly (``pnet_rand``, so the lpips package never downloads) and then
    filled from the file. A missing file raises :class:`MetricUnavailable` (a FileNotFoundError)
    saying where torchvision expects it (``how_to_point`` ends the sentence: how the caller's
    settings name another path); a file that is not AlexNet raises ``CheckpointError``.
    """
    import lpips as lpips_pkg

    reason = _missing(alexnet, how_to_point)
    if reason is not None:
        raise MetricUnavailable("lpips", reason)
    trunk = _trunk_path(alexnet)
    with warnings.catch_warnings():  # torchvision's 'pretrained' deprecation, inside lpips
        warnings.simplefilter("ignore")
        net = lpips_pkg.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    state = read_checkpoint(trunk)  # CheckpointError naming the file when unreadable or unsafe
    # lpips splits torchvision's alexnet.features into slice1..5, keeping the layer indices
    own = net.net.state_dict()  # slice2.3.weight <- features.3.weight
    wanted = {key: "features." + key.split(".", 1)[1] for key in own}
    missing = [src for src in wanted.values() if src not in state]
    if missing:
        raise CheckpointError(f"{trunk}: not a torchvision AlexNet state dict: missing {missing[:4]}")
    wrong = [src for key, src in wanted.items() if state[src].shape != own[key].shape]
    if wrong:
        raise CheckpointError(f"{trunk}: AlexNet layers of the wrong shape: {wrong[:4]}")
    net.net.load_state_dict({key: state[src] for key, src in wanted.items()})
    return net.eval().requires_grad_(False)  # frozen; gradients still flow to the input


def lpips_distance(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS ``[B]`` of images in [-1, 1] (spatially averaged; differentiable, for losses)."""
    if x.shape != y.shape:
        raise ValueError(f"lpips: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    return net(x, y).flatten()


@functools.lru_cache(maxsize=2)
def _default_net(trunk: str) -> nn.Module:
    return load_lpips_alex(trunk)


@register_metric("lpips", higher_is_better=False)
@torch.inference_mode()
def lpips(x: torch.Tensor, y: torch.Tensor, lpips_net: nn.Module | None = None) -> torch.Tensor:
    """LPIPS-AlexNet per image ``[B]`` of [-1, 1] inputs at their own size (pSp resizes to 256
    first: the caller's choice). Without ``lpips_net``, loads it from torchvision's cache
    (:class:`MetricUnavailable` when absent)."""
    if lpips_net is None:
        lpips_net = _default_net(str(_trunk_path(None)))
    return lpips_distance(lpips_net.to(x.device), x, y)
