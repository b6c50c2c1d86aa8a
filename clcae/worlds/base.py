"""The World interface: the judges and the images of one world, behind one set of names.

Everything after the aligner (the encoder's losses, the directions, the evaluation) takes a
:class:`World` and never asks which one it is. A world holds frozen networks (eval mode,
``requires_grad`` off) that stay differentiable in their input, so a judge can be a loss.

A World is deliberately not an ``nn.Module``: its judges must not join a trainer's parameters,
state dict, DDP wrapper or ``.train()`` calls.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clcae.data import ImageSet
from clcae.images import to_float


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients; gradients still flow to the input."""
    return module.eval().requires_grad_(False)


def check_images(x: torch.Tensor, who: str) -> torch.Tensor:
    """Square ``[B, 3, H, H]`` images as floats in [-1, 1] (uint8 is converted)."""
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise ValueError(f"{who}: expected square images [B, 3, H, H] in [-1, 1], got {tuple(x.shape)}")
    return to_float(x)


@dataclass
class Judgement:
    """What the judges see in one image batch, to compare against another: ``perceptual`` is
    whatever :meth:`World.perceptual_between` compares (the images themselves, or a network's
    feature maps computed once), ``identity`` the unit embeddings [B, D], ``features`` the
    Frechet-statistics features [B, D'] (:meth:`World.features`); each is None when not asked for."""
    perceptual: Any
    identity: torch.Tensor | None
    features: torch.Tensor | None = None


class CallableJudge:
    """The perceptual distance and the identity embedding as two separate functions (LPIPS and
    ArcFace; a test's stand-ins): nothing is shared between them, the perceptual representation
    is the image itself. A :class:`World` is a judge of this kind unless its judges share a pass."""

    def __init__(self, perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 identity: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.perceptual, self.identity = perceptual, identity

    def judge(self, x: torch.Tensor, perceptual: bool = True, identity: bool = True) -> Judgement:
        return Judgement(x if perceptual else None, self.identity(x) if identity else None)

    def perceptual_between(self, a: Judgement, b: Judgement) -> torch.Tensor:
        return self.perceptual(a.perceptual, _blocks(b.perceptual, a.perceptual.shape[0]))


def _blocks(y: torch.Tensor, n: int) -> torch.Tensor:
    """``y`` [M, ...] repeated to ``n`` rows (``n = k M``): a target against k concatenated batches."""
    if n % y.shape[0]:
        raise ValueError(f"perceptual_between: {n} images against {y.shape[0]}: the second batch must divide the first")
    return y.repeat(n // y.shape[0], *([1] * (y.ndim - 1)))


class World(ABC):
    """Judges (identity, perceptual distance, attributes, features) and train/test images."""

    name: str
    image_size: int              # side the judges natively work at
    attribute_names: list[str]   # [] when the world has no attribute classifier
    identity_name: str           # metric name of 1 - cos / cos of identity(x)
    perceptual_name: str         # "lpips" only for real LPIPS-AlexNet
    features_name: str           # what features(x) are, for distribution (Frechet) metrics
    no_attributes_hint: str = ""  # appended to the error of attributes() when there are none
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def identity(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, H]`` in [-1, 1] -> unit identity embeddings ``[B, D]``."""

    @abstractmethod
    def perceptual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Perceptual distance ``[B]`` between two image batches of one shape."""

    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D']`` features for Frechet-distance statistics."""

    @abstractmethod
    def _attributes(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` attribute readout, in ``attribute_names`` order."""

    @abstractmethod
    def train_images(self, size: int) -> ImageSet:
        """The world's "FFHQ" at ``size`` px."""

    @abstractmethod
    def test_images(self, size: int) -> ImageSet:
        """The world's "CelebA-HQ" at ``size`` px."""

    @abstractmethod
    def judges(self) -> list[nn.Module]:
        """The frozen networks, for :meth:`to`."""

    def fingerprint(self) -> dict:
        """What identifies this world's judges and train images, for a trainer's resume signature
        (a resume point made with other judges or images is never resumed)."""
        import hashlib

        names = "\n".join(map(str, self.train_images(self.image_size).names))
        return {"world": self.name, "train_names": hashlib.sha256(names.encode()).hexdigest()}

    def attributes(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` attribute readout; an error when this world has no attribute classifier."""
        if not self.attribute_names:
            raise RuntimeError(f"world {self.name!r} has no attribute classifier{self.no_attributes_hint}")
        return self._attributes(x)

    def describe(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{'identity', 'features'[, 'attributes']}`` of one batch: what scoring an edited image
        needs, read through :meth:`judge` (so a world that gives identity and features from one
        network runs it once). A world whose judges share a trunk with the attributes overrides this."""
        judged = self.judge(x, perceptual=False, features=True)
        out = {"identity": judged.identity, "features": judged.features}
        if self.attribute_names:
            out["attributes"] = self.attributes(x)
        return out

    def judge(self, x: torch.Tensor, perceptual: bool = True, identity: bool = True,
              features: bool = False) -> Judgement:
        """What the loss and the scores compare of ``x`` [B, 3, H, H]: judge a target once and
        compare every reconstruction with it (:meth:`perceptual_between`). A world whose judges
        share a network overrides this to run it once."""
        judged = CallableJudge(self.perceptual, self.identity).judge(x, perceptual, identity)
        judged.features = self.features(x) if features else None
        return judged

    def perceptual_between(self, a: Judgement, b: Judgement) -> torch.Tensor:
        """:meth:`perceptual` distance ``[len(a)]`` between two :meth:`judge` results; ``b`` may
        hold fewer images (a target), compared with each consecutive block of ``a`` (k renders)."""
        return CallableJudge(self.perceptual).perceptual_between(a, b)

    def to(self, device: str | torch.device) -> World:
        self.device = torch.device(device)
        for judge in self.judges():
            judge.to(self.device)
        return self

    def use_channels_last(self, on: bool = True) -> World:
        """The judges' conv weights, hence their activations, in channels_last (``shared.channels_last``;
        :meth:`clcae.nets.stylegan2.Generator.use_channels_last`): the same readouts up to float rounding."""
        for judge in self.judges():
            judge.to(memory_format=torch.channels_last if on else torch.contiguous_format)
        return self

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, image_size={self.image_size}, "
                f"identity={self.identity_name!r}, perceptual={self.perceptual_name!r}, "
                f"features={self.features_name!r}, attributes={self.attribute_names})")
