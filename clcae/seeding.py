"""Seeds derived from (seed, tags): independent, stable random streams per purpose."""
from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *tags: str) -> int:
    """A stable 63-bit seed from ``seed`` and string tags (independent streams per tag)."""
    h = hashlib.sha256(("/".join([str(int(seed)), *tags])).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def seeded_generator(seed: int, *tags: str) -> torch.Generator:
    """A CPU torch.Generator seeded by :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *tags))
