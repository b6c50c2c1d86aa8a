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

import warnings
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from clcae.config import InputError
from clcae.data import FolderImages, ImageSet, read_image, resize
from clcae.nets.irse import IDEncoder, load_arcface
from clcae.worlds.base import World, check_images, freeze
from clcae.worlds.ffhq.assets import require
from clcae.worlds.ffhq.judges import (INCEPTION_FILE, load_attribute_classifier, load_inception, load_lpips_alex,
                                      lpips_distance, torchvision_cache)

SIZE = 256


def drop_undecodable(images: FolderImages, threads: int = 8) -> FolderImages:
    """Decode every file of a user's folder once and skip the ones that fail, so that training and
    evaluation never stop at image 2,000: a truncated or damaged file often has a valid header
    (which is all :class:`FolderImages` reads). Threads: PIL releases the GIL while decoding.
    The skipped files join ``images.skipped`` and are named in one warning."""
    from concurrent.futures import ThreadPoolExecutor

    def fails(name: str) -> str | None:
        try:
            read_image(images.folder / name)
        except OSError as e:
            return str(e).split(": ", 1)[-1]
        return None

    with ThreadPoolExecutor(threads) as pool:
        reasons = list(tqdm(pool.map(fails, images.names), total=len(images), desc=f"checking {images.folder}",
                            unit="image", disable=len(images) < 1000))
    bad = [(name, why) for name, why in zip(images.names, reasons) if why is not None]
    if not bad:
        return images
    if len(bad) == len(images):
        raise InputError(f"{images.folder}: none of its {len(images)} images decodes, e.g. {bad[0][0]} ({bad[0][1]})")
    keep = [i for i, why in enumerate(reasons) if why is None]
    images.names = [images.names[i] for i in keep]
    if images.labels is not None:
        images.labels = images.labels.iloc[keep].reset_index(drop=True)
    images.skipped = images.skipped + bad
    shown = ", ".join(f"{n} ({why})" for n, why in bad[:10])
    warnings.warn(f"{images.folder}: skipped {len(bad)} image file(s) that do not decode: {shown}"
                  f"{' ...' if len(bad) > 10 else ''}", stacklevel=2)
    return images


class FFHQWorld(World):
    name = "ffhq"
    image_size = SIZE
    identity_name = "arcface_id"
    perceptual_name = "lpips"
    no_attributes_hint = " (set ffhq.attribute_classifier to a classifier file; see AttributeClassifier)"

    def __init__(self, arcface: nn.Module, lpips_net: nn.Module, classifier: nn.Module | None = None,
                 inception: nn.Module | None = None, train_dir: str | Path = "", test_dir: str | Path = ""):
        self.id_encoder = freeze(IDEncoder(arcface))
        self.lpips = freeze(lpips_net)
        self.classifier = None if classifier is None else freeze(classifier)
        self.inception = None if inception is None else freeze(inception)
        self.attribute_names = [] if classifier is None else list(classifier.attribute_names)
        self.features_name = "arcface_embedding" if inception is None else "inception_v3_imagenet_pool"
        self.train_dir, self.test_dir = Path(train_dir), Path(test_dir)

    @classmethod
    def from_params(cls, params) -> "FFHQWorld":
        cfg = params.ffhq
        arcface = require("arcface", cfg.arcface)   # missing or an HTML page: what to fetch, and where
        inception = Path(cfg.inception) if cfg.inception else torchvision_cache(INCEPTION_FILE)
        if cfg.inception and not inception.is_file():
            raise InputError(f"{inception}: Inception-v3 weights not found (ffhq.inception)")
        return cls(load_arcface(arcface), load_lpips_alex(cfg.lpips_alexnet),
                   load_attribute_classifier(cfg.attribute_classifier) if cfg.attribute_classifier else None,
                   load_inception(inception) if inception.is_file() else None,
                   cfg.train_dir, cfg.test_dir)

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

    def _folder(self, folder: Path, key: str, size: int) -> ImageSet:
        if not folder.is_dir():
            raise InputError(f"{folder}: image folder not found (ffhq.{key})")
        return drop_undecodable(FolderImages(folder, size))

    def train_images(self, size: int) -> ImageSet:
        return self._folder(self.train_dir, "train_dir", size)

    def test_images(self, size: int) -> ImageSet:
        return self._folder(self.test_dir, "test_dir", size)
