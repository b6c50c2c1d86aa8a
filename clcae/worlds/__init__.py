"""Worlds: ``load_world(params)`` gives the judges and images of ``params.shared.world``.

World-specific code is reached only through here; ``metrics/`` and ``editing/`` take a
:class:`World`'s outputs as arguments and never import this package.
"""
from __future__ import annotations

import torch

from clcae.errors import ConfigError
from clcae.worlds.base import World

WORLDS = ("procfaces", "ffhq")


def load_world(params, device: str | torch.device | None = None) -> World:
    """The world named by ``params.shared.world``, its judges frozen on ``device``
    (default: the stage device from ``params.shared``)."""
    name = params.shared.world
    if name == "procfaces":
        from clcae.worlds.procfaces.world import ProcFacesWorld as cls
    elif name == "ffhq":
        from clcae.worlds.ffhq.world import FFHQWorld as cls
    else:
        raise ConfigError(f"shared.world: unknown world {name!r} (known: {', '.join(WORLDS)})")
    if device is None:
        from clcae.distributed import stage_device

        device = stage_device(params.shared)
    return cls.from_params(params).to(device).use_channels_last(params.shared.channels_last)


__all__ = ["World", "load_world", "WORLDS"]
