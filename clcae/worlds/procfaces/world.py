"""The procfaces world behind the World interface: the world CNN judges, the world stage's data.

All three judges are the one world CNN (:mod:`world_cnn`): identity embedding (ArcFace's role),
attribute heads (the classifier's), and its multi-layer feature distance (LPIPS's role, so it is
named ``world_perceptual``, not ``lpips``). Train images are the world stage's shards
(``<world.out_dir>/train/shard_*.pt``, memory-mapped), test images its PNG folder (``<world.out_dir>/test``).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from clcae.data import FolderImages, ImageSet
from clcae.errors import InputError
from clcae.io import file_sha256
from clcae.shards import ShardImages
from clcae.worlds.base import Judgement, World, check_images, freeze
from clcae.worlds.procfaces import procfaces as pf
from clcae.worlds.procfaces.world_cnn import (
    INPUT_SIZE,
    WorldCNN,
    load_world_cnn,
    perceptual_distance,
    unit_feature_distance,
    unit_features,
)

MAKE = "`dvc repro world` makes it"


def train_shard_files(folder: str | Path) -> list[Path]:
    files = sorted(Path(folder).glob("shard_*.pt"))
    if not files:
        raise InputError(f"{folder}: no shard_*.pt files ({MAKE})")
    return files


def train_labels(shards: ShardImages) -> pd.DataFrame:
    """person_id + attributes of every train image, in order (small: read from the mapped shards)."""
    rows = []
    for shard in shards.data.shards:
        frame = pd.DataFrame(shard["labels"].numpy(), columns=shard.get("attributes", pf.ATTRIBUTES))
        frame.insert(0, "person_id", shard["person_id"].numpy())
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def open_train_shards(folder: str | Path, size: int | None = None) -> ShardImages:
    """The world stage's train split as memory-mapped shards: ``train/000000, ...`` with their labels."""
    shards = ShardImages(train_shard_files(folder), size)
    shards.names = [f"train/{i:06d}" for i in range(len(shards))]
    shards.labels = train_labels(shards)
    return shards


class ProcFacesWorld(World):
    name = "procfaces"
    image_size = INPUT_SIZE
    identity_name = "world_id"
    perceptual_name = "world_perceptual"
    features_name = "world_pooled"

    def __init__(self, cnn: WorldCNN, out_dir: str | Path):
        self.cnn = freeze(cnn)
        self.out_dir = Path(out_dir)
        self.attribute_names = list(pf.ATTRIBUTES)[:cnn.n_attributes]
        self._train: ShardImages | None = None  # opened once, on first use

    @classmethod
    def from_params(cls, params) -> ProcFacesWorld:
        out = Path(params.world.out_dir)
        path = out / "world_cnn.pt"
        if not path.is_file():
            raise InputError(f"{path}: world CNN checkpoint not found ({MAKE}; path from world.out_dir)")
        return cls(load_world_cnn(path), out)

    def judges(self) -> list[torch.nn.Module]:
        return [self.cnn]

    def fingerprint(self) -> dict:
        """The world CNN's and the train shards' bytes (sha256): a new world stage output is a new world."""
        shards = sorted((self.out_dir / "train").glob("shard_*.pt"))
        return {"world": self.name, "world_cnn": file_sha256(self.out_dir / "world_cnn.pt"),
                "train_shards": [file_sha256(s) for s in shards]}

    def identity(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.identity(check_images(x, "identity"))  # [B, 128], unit norm

    def perceptual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return perceptual_distance(self.cnn, check_images(x, "perceptual"), check_images(y, "perceptual"))  # [B]

    def judge(self, x: torch.Tensor, perceptual: bool = True, identity: bool = True,
              features: bool = False) -> Judgement:
        """One world-CNN pass: its feature maps, unit-normalised per pixel (what the perceptual
        distance compares), and from the last of them the identity embedding and the pooled
        features (what :meth:`identity` and :meth:`features` compute, without more passes)."""
        feats = self.cnn.features(check_images(x, "judge"))  # 5 maps, 64 px down to 4 px
        return Judgement(unit_features(feats) if perceptual else None,
                         self.cnn.identity_from_trunk(feats[-1]) if identity else None,
                         self.cnn.pooled_from_trunk(feats[-1]) if features else None)

    def perceptual_between(self, a: Judgement, b: Judgement) -> torch.Tensor:
        return unit_feature_distance(a.perceptual, b.perceptual)  # [len(a)]: b broadcast over a's blocks

    def _attributes(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.attributes(check_images(x, "attributes"))  # [B, 7]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.pooled(check_images(x, "features"))  # [B, w4]

    def describe(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        identity, attributes, features = self.cnn.describe(check_images(x, "describe"))  # one trunk pass
        return {"identity": identity, "attributes": attributes, "features": features}

    def train_images(self, size: int) -> ImageSet:
        if self._train is None:
            self._train = open_train_shards(self.out_dir / "train")
        return self._train.resized(size)

    def test_images(self, size: int) -> ImageSet:
        folder = self.out_dir / "test"
        if not folder.is_dir():
            raise InputError(f"{folder}: test image folder not found ({MAKE})")
        return FolderImages(folder, size)
