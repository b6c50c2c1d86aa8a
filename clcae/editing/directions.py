"""Latent directions: what an edit adds to w+, where they come from, and their files.

A :class:`Direction` is a vector in W (``[D]``) and, optionally, the layer range of w+ it is
applied to; an edit adds ``strength * vector`` to those layers. InterFaceGAN normals are unit
vectors (strength in W's own units, as the published files are used). A GANSpace component is
stored scaled by its standard deviation, so strength 1 moves one standard deviation of the
sampled w along it (GANSpace's sigma units; e4e's editor instead *sets* the coordinate to the
strength, which is the same move for a w at the mean).

Files, in the layouts peers publish (so theirs load here and ours load there):

* InterFaceGAN normal: a tensor ``[1, D]`` in a ``.pt`` (e4e / CLCAE's ``age.pt``, ``smile.pt``,
  ``pose.pt``) or a ``.npy`` (InterFaceGAN's ``*_boundary.npy``: its released ones are for
  PGGAN and StyleGAN v1; a 512-d StyleGAN v1 boundary loads but means nothing to StyleGAN2);
* GANSpace PCA: ``{'mean': [1, D], 'comp': [k, 1, D], 'std': [k]}`` in a ``.pt`` (``ffhq_pca.pt``).

Every loader maps to the CPU (files saved from CUDA tensors load anywhere) and checks the
dimension against the generator's, naming the file and both sizes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clcae.errors import InputError
from clcae.io import CheckpointError, read_checkpoint, save_torch


class DirectionError(InputError):
    """A direction file that cannot serve this generator (wrong layout or dimension)."""


@dataclass(frozen=True)
class LayerRange:
    """w+ layers ``first..last``, both included (e4e's ``(start, end)`` is ``(start, end - 1)`` here)."""
    first: int
    last: int

    def check(self, n_latent: int, who: str) -> None:
        if not 0 <= self.first <= self.last < n_latent:
            raise ValueError(f"{who}: layers {self.first}..{self.last} outside the generator's 0..{n_latent - 1}")

    def mask(self, n_latent: int) -> torch.Tensor:
        """``[n_latent]`` float mask, 1 on the range."""
        m = torch.zeros(n_latent)
        m[self.first:self.last + 1] = 1
        return m


@dataclass
class Direction:
    """``strength * vector`` added to the w+ layers in ``layers`` (all when None).

    ``vector`` is one ``[D]`` for every layer, or ``[N, D]``: a per-layer edit (row i moves w+
    layer i; N must be the generator's number of w+ layers)."""
    name: str
    vector: torch.Tensor              # [D], or [N, D] per layer
    layers: LayerRange | None = None
    source: str = ""                  # the file it came from, or how it was fitted
    strength: float = 1.0             # a typical strength (the default of `clcae edit`, the scored one)
    attribute: str | None = None      # the attribute it edits (scores); None: unknown
    attribute_sign: int = 1           # +1: a positive strength raises the attribute, -1: lowers it

    def __post_init__(self):
        vector = torch.as_tensor(self.vector, dtype=torch.float32).cpu()
        self.vector = vector if vector.ndim == 2 and vector.shape[0] > 1 else vector.reshape(-1)

    @property
    def dim(self) -> int:
        return self.vector.shape[-1]

    @property
    def per_layer(self) -> bool:
        return self.vector.ndim == 2

    @property
    def mean_vector(self) -> torch.Tensor:
        """``[D]``: the vector, or a per-layer direction's mean over layers (for cosines between directions)."""
        return self.vector.mean(0) if self.per_layer else self.vector

    def check_dim(self, style_dim: int) -> Direction:
        check_dim(self.vector, style_dim, self.source or self.name)
        return self

    def delta(self, strength: float | torch.Tensor, n_latent: int, layers: LayerRange | None = None) -> torch.Tensor:
        """What the edit adds to w+: ``[B or 1, n_latent, D]`` for a scalar or per-image ``[B]`` strength.

        ``layers`` overrides the direction's own range."""
        layers = layers or self.layers
        if layers is None:
            mask = torch.ones(n_latent)
        else:
            layers.check(n_latent, f"direction {self.name!r}")
            mask = layers.mask(n_latent)
        s = torch.as_tensor(strength, dtype=torch.float32).reshape(-1, 1, 1)   # [B|1, 1, 1]
        if self.per_layer:
            if self.vector.shape[0] != n_latent:
                raise DirectionError(f"{self.source or self.name}: a per-layer direction of {self.vector.shape[0]} "
                                     f"layers; the generator has {n_latent} w+ layers")
            return s * mask[None, :, None] * self.vector[None]
        return s * mask[None, :, None] * self.vector[None, None, :]


def check_dim(vector: torch.Tensor, style_dim: int, source: str) -> None:
    if vector.shape[-1] != style_dim:
        raise DirectionError(f"{source}: direction of dimension {vector.shape[-1]} does not match the "
                             f"generator's latent dimension {style_dim}")


# ----------------------------------------------------------------------------- GANSpace


@dataclass
class PCABasis:
    """GANSpace's PCA of sampled w: ``mean [1, D]``, unit components ``comp [k, 1, D]``, ``std [k]``."""
    mean: torch.Tensor
    comp: torch.Tensor
    std: torch.Tensor
    source: str = ""

    def __post_init__(self):
        k = self.comp.shape[0]
        if self.mean.ndim != 2 or self.comp.ndim != 3 or self.comp.shape[1] != 1 or self.std.shape != (k,) \
                or self.mean.shape[-1] != self.comp.shape[-1]:
            raise DirectionError(f"{self.source or 'PCA basis'}: expected mean [1, D], comp [k, 1, D], std [k]; got "
                                 f"mean {list(self.mean.shape)}, comp {list(self.comp.shape)}, std {list(self.std.shape)}")

    @property
    def n_components(self) -> int:
        return self.comp.shape[0]

    def direction(self, component: int, first_layer: int | None = None, last_layer: int | None = None,
                  name: str | None = None, strength: float = 1.0, **scoring) -> Direction:
        """Component ``component`` as a Direction in standard-deviation units, on a layer range."""
        if not 0 <= component < self.n_components:
            raise ValueError(f"{self.source or 'PCA basis'}: component {component} not in 0..{self.n_components - 1}")
        layers = None if first_layer is None else LayerRange(first_layer, last_layer)
        return Direction(name or f"pc{component}", self.comp[component, 0] * self.std[component], layers,
                         source=f"{self.source}#pc{component}", strength=strength, **scoring)

    def state(self) -> dict:
        return {"mean": self.mean, "comp": self.comp, "std": self.std}


# ----------------------------------------------------------------------------- files


def _read(path: Path):
    if path.suffix == ".npy":
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False)).float()
        except (ValueError, OSError) as e:
            raise CheckpointError(f"{path}: not a readable .npy array ({e})") from None
    return read_checkpoint(path, map_location="cpu")


def load_direction(path: str | os.PathLike, style_dim: int, name: str | None = None,
                   layers: LayerRange | None = None, n_latent: int | None = None) -> Direction:
    """An InterFaceGAN-style normal (``.pt`` tensor or ``.npy``) -> Direction.

    Layouts: ``[1, D]`` or ``[D]`` (InterFaceGAN, e4e's ``age.pt``, ``smile.pt``); ``[1, N, D]``
    per layer (CLCAE's ``pose.pt`` is ``[1, 18, 512]`` with 18 identical rows): identical rows
    become one ``[D]`` vector, different rows a per-layer edit (N checked against ``n_latent``
    when given). Wrong sizes are named with the expected ones."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: direction file not found")
    blob = _read(path)
    if isinstance(blob, np.ndarray):
        blob = torch.from_numpy(blob)
    if not isinstance(blob, torch.Tensor):
        kind = "a GANSpace PCA basis (use load_pca)" if isinstance(blob, dict) and "comp" in blob else type(blob).__name__
        raise DirectionError(f"{path}: expected a direction tensor [1, D], got {kind}")
    shape = list(blob.shape)
    if not (blob.ndim == 1 or (blob.ndim in (2, 3) and blob.shape[0] == 1)):
        raise DirectionError(f"{path}: expected a direction tensor [1, D], [D] or per layer [1, N, D], got {shape}")
    check_dim(blob, style_dim, os.fspath(path))
    blob = blob.float().cpu().reshape(-1, blob.shape[-1])                       # [1 or N, D]
    if blob.shape[0] > 1 and bool((blob == blob[:1]).all()):
        blob = blob[:1]                                                          # N identical rows: one vector
    elif blob.shape[0] > 1 and n_latent is not None and blob.shape[0] != n_latent:
        raise DirectionError(f"{path}: a per-layer direction {shape} of {blob.shape[0]} layers; the generator "
                             f"has {n_latent} w+ layers")
    return Direction(name or path.stem, blob, layers, source=os.fspath(path))


def load_pca(path: str | os.PathLike, style_dim: int) -> PCABasis:
    """A GANSpace ``ffhq_pca.pt``-layout file -> PCABasis."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: PCA file not found")
    blob = _read(path)
    missing = [k for k in ("mean", "comp", "std") if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise DirectionError(f"{path}: expected a dict with mean, comp, std (GANSpace layout); missing {missing}")
    basis = PCABasis(*(torch.as_tensor(blob[k]).float().cpu() for k in ("mean", "comp", "std")), source=os.fspath(path))
    check_dim(basis.comp, style_dim, os.fspath(path))
    return basis


def save_direction(direction: Direction, path: str | os.PathLike) -> None:
    """The published layout: a CPU tensor ``[1, D]`` (atomic)."""
    save_torch(direction.vector[None].clone(), path)


def save_pca(basis: PCABasis, path: str | os.PathLike) -> None:
    save_torch({k: v.cpu().clone() for k, v in basis.state().items()}, path)


# ----------------------------------------------------------------------------- the stage's index

INDEX = "directions.json"


def read_directions(folder: str | os.PathLike, style_dim: int, n_latent: int | None = None) -> dict[str, Direction]:
    """The directions ``fit_directions`` wrote (``<folder>/directions.json`` and its files), by name."""
    import json

    folder = Path(folder)
    index_path = folder / INDEX
    if not index_path.is_file():
        raise InputError(f"{index_path}: not found (run `dvc repro fit_directions`)")
    index = json.loads(index_path.read_text())
    out: dict[str, Direction] = {}
    bases: dict[str, PCABasis] = {}
    for name, entry in index["directions"].items():
        layers = LayerRange(*entry["layers"]) if entry.get("layers") else None
        scoring = {"attribute": entry.get("attribute"), "attribute_sign": entry.get("attribute_sign", 1)}
        if entry["kind"] == "ganspace":
            if entry["file"] not in bases:
                bases[entry["file"]] = load_pca(folder / entry["file"], style_dim)
            d = bases[entry["file"]].direction(entry["component"], *(entry["layers"] or (None, None)), name=name,
                                               strength=entry["strength"], **scoring)
        else:
            d = load_direction(folder / entry["file"], style_dim, name=name, layers=layers, n_latent=n_latent)
            d.strength, d.attribute, d.attribute_sign = entry["strength"], scoring["attribute"], scoring["attribute_sign"]
        if n_latent is not None and d.layers is not None:
            d.layers.check(n_latent, f"{index_path}: {name}")
        out[name] = d
    return out
