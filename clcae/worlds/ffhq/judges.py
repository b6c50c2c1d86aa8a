"""The ffhq world's judges, each loaded from a local file (nothing is downloaded at run time).

* LPIPS-AlexNet (:mod:`clcae.metrics.lpips`, generic; re-exported here): its linear layers ship
  with the ``lpips`` package; the ImageNet AlexNet trunk is torchvision's
  ``alexnet-owt-7be5be79.pth``, read from where torchvision caches it
  (``torch.hub.get_dir()/checkpoints``) or from ``ffhq.lpips_alexnet``.
* An attribute classifier in a small documented format (:func:`save_attribute_classifier`).
* Inception-v3 pool features from torchvision's ImageNet weights, for Frechet statistics.
ArcFace itself is :mod:`clcae.nets.irse` (``load_arcface``, ``IDEncoder``).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from clcae.data import resize
from clcae.errors import InputError
from clcae.io import CheckpointError, read_checkpoint
from clcae.metrics import lpips as metrics_lpips
from clcae.metrics.lpips import ALEXNET_FILE, ALEXNET_URL, lpips_distance, lpips_linear_path, torchvision_cache  # noqa: F401 (re-exported)
from clcae.worlds.base import freeze

INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_lpips_alex(alexnet: str | os.PathLike | None = None) -> nn.Module:
    """:func:`clcae.metrics.lpips.load_lpips_alex`, whose error names this world's setting."""
    return metrics_lpips.load_lpips_alex(alexnet, how_to_point="set ffhq.lpips_alexnet to its path")


# ----------------------------------------------------------------------------- attribute classifier

CLASSIFIER_FORMAT = "clcae.attribute_classifier/1"
CLASSIFIER_ARCHS = ("resnet18", "resnet34", "resnet50")


class AttributeClassifier(nn.Module):
    """A torchvision ResNet whose ``fc`` has one output per attribute (logits or scores).

    Input: images in [-1, 1], resized to ``input_size`` and ImageNet-normalised inside.
    File format (:func:`save_attribute_classifier`): ``torch.save`` of
    ``{'format': 'clcae.attribute_classifier/1', 'arch': 'resnet18' | 'resnet34' | 'resnet50',
    'attribute_names': [K names], 'input_size': int, 'state_dict': the ResNet's state dict}``.
    """

    def __init__(self, arch: str, attribute_names: list[str], input_size: int = 224):
        super().__init__()
        import torchvision

        if arch not in CLASSIFIER_ARCHS:
            raise ValueError(f"attribute classifier arch must be one of {CLASSIFIER_ARCHS}, got {arch!r}")
        self.arch, self.attribute_names, self.input_size = arch, list(attribute_names), int(input_size)
        self.net = getattr(torchvision.models, arch)(weights=None, num_classes=len(self.attribute_names))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resize((x + 1) / 2, self.input_size)  # [B, 3, s, s] in [0, 1]
        return self.net((x - self.mean) / self.std)  # [B, K]


def save_attribute_classifier(model: AttributeClassifier, path: str | os.PathLike) -> None:
    from clcae.io import save_torch

    save_torch({"format": CLASSIFIER_FORMAT, "arch": model.arch, "attribute_names": model.attribute_names,
                "input_size": model.input_size,
                "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()}}, path)


def load_attribute_classifier(path: str | os.PathLike) -> AttributeClassifier:
    """Read the format of :class:`AttributeClassifier`; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: attribute classifier not found (ffhq.attribute_classifier)")
    blob = read_checkpoint(path)
    if not isinstance(blob, dict) or blob.get("format") != CLASSIFIER_FORMAT:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(f"{path}: not an attribute classifier file (format {got!r}, expected "
                         f"{CLASSIFIER_FORMAT!r}; see clcae.worlds.ffhq.judges.AttributeClassifier)")
    missing = [k for k in ("arch", "attribute_names", "state_dict") if k not in blob]
    if missing:
        raise CheckpointError(f"{path}: attribute classifier lacks key(s) {missing}")
    model = AttributeClassifier(blob["arch"], blob["attribute_names"], blob.get("input_size", 224))
    try:
        model.net.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: state_dict does not fit {blob['arch']} with "
                         f"{len(model.attribute_names)} attributes: {e}") from e
    return freeze(model)


# ----------------------------------------------------------------------------- Inception features


class InceptionPool(nn.Module):
    """torchvision's ImageNet Inception-v3, 2048-d average-pool features of 299 px inputs.

    Not the TensorFlow FID Inception: Frechet distances through it are FID-like, not comparable
    to published FID figures (hence the name ``inception_v3_imagenet_pool``).
    """

    def __init__(self):
        super().__init__()
        import torchvision

        # transform_input off: [-1, 1] inputs are already Google's Inception normalisation
        self.net = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False,
                                                   init_weights=False)
        self.net.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(resize(x, 299))  # [B, 2048] (eval mode: no aux output)


def load_inception(path: str | os.PathLike) -> InceptionPool:
    path = Path(path)
    state = read_checkpoint(path)
    model = InceptionPool()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        model.net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: not torchvision's Inception-v3 weights: {e}") from e
    return freeze(model)
