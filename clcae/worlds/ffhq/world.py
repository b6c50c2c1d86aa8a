"""The ffhq world behind the World interface (paper scale).

identity: ArcFace IR-SE50 on the face crop [35:223, 32:220] of a 256 image pooled to 112
(pSp's IDLoss; other sizes are pooled to 256 first). perceptual: LPIPS-AlexNet at 256 px, as pSp
scores it. attributes: a classifier checkpoint when ``ffhq.attribute_classifier`` is set.
features: Inception-v3 pool features when its weights are present, else the ArcFace embeddings
(named so). Images: the folders ``ffhq.train_dir`` (FFHQ) and ``ffhq.test_dir`` (CelebA-HQ test),
PNG/JPEG of any size, centre-cropped and resized with antialiasing; files that do not decode are
skipped, named in a warning and counted in the stages' metrics.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from clcae.data import FolderImages, ImageSet, resize
from clcae.errors import InputError
from clcae.nets.irse import IDEncoder, load_arcface
from clcae.worlds.base import Judgement, World, check_images, freeze
from clcae.worlds.ffhq.assets import require
from clcae.worlds.ffhq.folders import drop_undecodable, skip_files
from clcae.worlds.ffhq.judges import (
    INCEPTION_FILE,
    load_attribute_classifier,
    load_inception,
    load_lpips_alex,
    lpips_distance,
    torchvision_cache,
)

SIZE = 256


class FFHQWorld(World):
    name = "ffhq"
    image_size = SIZE
    identity_name = "arcface_id"
    perceptual_name = "lpips"
    no_attributes_hint = " (set ffhq.attribute_classifier to a classifier file; see AttributeClassifier)"

    def __init__(self, arcface: nn.Module, lpips_net: nn.Module, classifier: nn.Module | None = None,
                 inception: nn.Module | None = None, train_dir: str | Path = "", test_dir: str | Path = "",
                 assets_report: str | Path = ""):
        self.id_encoder = freeze(IDEncoder(arcface))
        self.lpips = freeze(lpips_net)
        self.classifier = None if classifier is None else freeze(classifier)
        self.inception = None if inception is None else freeze(inception)
        self.attribute_names = [] if classifier is None else list(classifier.attribute_names)
        self.features_name = "arcface_embedding" if inception is None else "inception_v3_imagenet_pool"
        self.train_dir, self.test_dir = Path(train_dir), Path(test_dir)
        self.assets_report = Path(assets_report) if assets_report else None

    @classmethod
    def from_params(cls, params) -> FFHQWorld:
        cfg = params.ffhq
        arcface = require("arcface", cfg.arcface)   # missing or an HTML page: what to fetch, and where
        inception = Path(cfg.inception) if cfg.inception else torchvision_cache(INCEPTION_FILE)
        if cfg.inception and not inception.is_file():
            raise InputError(f"{inception}: Inception-v3 weights not found (ffhq.inception)")
        return cls(load_arcface(arcface), load_lpips_alex(cfg.lpips_alexnet),
                   load_attribute_classifier(cfg.attribute_classifier) if cfg.attribute_classifier else None,
                   load_inception(inception) if inception.is_file() else None,
                   cfg.train_dir, cfg.test_dir, cfg.assets_report)

    def judges(self) -> list[nn.Module]:
        return [m for m in (self.id_encoder, self.lpips, self.classifier, self.inception) if m is not None]

    def identity(self, x: torch.Tensor) -> torch.Tensor:
        return self.id_encoder(check_images(x, "identity"))  # [B, 512], unit norm

    def perceptual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = check_images(x, "perceptual"), check_images(y, "perceptual")
        return lpips_distance(self.lpips, resize(x, SIZE), resize(y, SIZE))  # [B]

    def _attributes(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(check_images(x, "attributes"))  # [B, K]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_images(x, "features")
        return self.identity(x) if self.inception is None else self.inception(x)  # [B, 512 | 2048]

    def judge(self, x: torch.Tensor, perceptual: bool = True, identity: bool = True,
              features: bool = False) -> Judgement:
        """The base judgement, with ArcFace run once when it gives the features too (no Inception)."""
        judged = super().judge(x, perceptual, identity, features=features and self.inception is not None)
        if features and self.inception is None:
            judged.features = judged.identity if identity else self.identity(x)
        return judged

    def _folder(self, folder: Path, key: str, size: int) -> FolderImages:
        if not folder.is_dir():
            raise InputError(f"{folder}: image folder not found (ffhq.{key})")
        return FolderImages(folder, size)

    def train_images(self, size: int) -> ImageSet:
        """FFHQ less the files the assets stage found undecodable (decoding 70K images on every rank of
        every run would cost minutes; headers are checked here, the assets stage decodes them all once)."""
        images = self._folder(self.train_dir, "train_dir", size)
        if self.assets_report is not None and self.assets_report.is_file():
            listed = json.loads(self.assets_report.read_text()).get("unreadable_images", {}).get("train", {})
            bad = set(listed.get("files", [])) & set(images.names)
            images = skip_files(images, [(name, f"does not decode ({self.assets_report})") for name in sorted(bad)])
        return images

    def test_images(self, size: int) -> ImageSet:
        """CelebA-HQ test, every file decoded once: evaluation scores the rest and names the bad ones."""
        return drop_undecodable(self._folder(self.test_dir, "test_dir", size))
