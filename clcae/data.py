"""Image sets: the one shape in which every world hands over its train and test images.

An :class:`ImageSet` yields uint8 ``[3, S, S]`` images (S chosen by the caller), has a name per
image (a file name, or ``"train/000123"`` for tensor-backed sets) and optional per-image labels
(a pandas DataFrame, one row per image in order). Two kinds:

* :class:`TensorImages`: images already in memory (a world's rendered train split); ``batch``
  gathers and resizes a whole batch at once;
* :class:`FolderImages`: a folder of PNG/JPEG files (FFHQ, CelebA-HQ, the procfaces test split);
  each is decoded by :func:`clcae.images.decode_image` (as ``clcae invert`` decodes a photo),
  centre-cropped to a square and resized with antialiasing. Files that
  cannot be opened are skipped at construction, named in one warning with their count.
"""
from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from clcae.errors import InputError
from clcae.images import decode_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float ``[N, C, H, W]`` -> ``[N, C, size, size]``, bilinear with antialiasing (unchanged at that size)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, size, size]: box filter (adaptive average pooling, pSp's face_pool) when
    shrinking, bilinear when growing; unchanged when already that size."""
    h, w = image.shape[-2:]
    if (h, w) == (size, size):
        return image
    if h >= size and w >= size:
        return F.adaptive_avg_pool2d(image, size)
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)


def resize_u8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` -> uint8 ``[N, 3, size, size]``, bilinear with antialiasing."""
    if images.shape[-2:] == (size, size):
        return images
    return resize(images.float(), size).round().clamp(0, 255).to(torch.uint8)


def centre_crop(image: torch.Tensor) -> torch.Tensor:
    """``[..., H, W]`` -> the centred ``[..., s, s]`` square, s = min(H, W)."""
    h, w = image.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[..., top:top + s, left:left + s]


def unreadable_files(skipped: list[tuple[str, str]]) -> dict:
    """``{"count", "files"}`` of the ``(name, why)`` pairs a folder skipped: what stage metrics report."""
    return {"count": len(skipped), "files": [name for name, _ in skipped]}


class ImageSet(Dataset, ABC):
    """uint8 ``[3, S, S]`` images with ``names`` and optional ``labels`` (a DataFrame or None)."""

    size: int
    names: list[str]
    labels: object | None  # pandas.DataFrame, one row per image, in order

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def __getitem__(self, i: int) -> torch.Tensor:
        """uint8 ``[3, S, S]``, the image at ``i``."""

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, S, S]`` for a LongTensor of indices."""
        return torch.stack([self[int(i)] for i in indices])

    def subset(self, indices) -> ImageSet:
        """The images at ``indices`` (e.g. ``range(n)``), as an ImageSet with their names and labels."""
        return SubsetImages(self, indices)

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{type(self).__name__}: index {i} out of range for {n} images")
        return i % n


class SubsetImages(ImageSet):
    """Some images of another set; ``batch`` stays the parent's (vectorised where it is)."""

    def __init__(self, parent: ImageSet, indices):
        self.parent, self.size = parent, parent.size
        self.indices = torch.as_tensor(list(indices) if isinstance(indices, range) else indices, dtype=torch.long)
        self.names = [parent.names[int(i)] for i in self.indices]
        labels = parent.labels
        self.labels = None if labels is None else labels.iloc[self.indices.numpy()].reset_index(drop=True)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.parent[int(self.indices[self._index(i)])]

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.parent.batch(self.indices[torch.as_tensor(indices, dtype=torch.long)])


class TensorImages(ImageSet):
    """Images held in a uint8 tensor ``[N, 3, H, H]``; served at ``size`` (default: H)."""

    def __init__(self, images_u8: torch.Tensor, names: list[str] | None = None, labels=None,
                 size: int | None = None):
        if images_u8.dtype != torch.uint8 or images_u8.ndim != 4 or images_u8.shape[1] != 3 \
                or images_u8.shape[2] != images_u8.shape[3]:
            raise ValueError(f"TensorImages: expected square uint8 images [N, 3, H, H], got "
                             f"{images_u8.dtype} {tuple(images_u8.shape)}")
        n = images_u8.shape[0]
        names = [f"{i:06d}" for i in range(n)] if names is None else list(names)
        if len(names) != n:
            raise ValueError(f"TensorImages: {len(names)} names for {n} images")
        if labels is not None and len(labels) != n:
            raise ValueError(f"TensorImages: {len(labels)} label rows for {n} images")
        self.images, self.names, self.labels = images_u8, names, labels
        self.size = int(images_u8.shape[-1] if size is None else size)

    def __getitem__(self, i: int) -> torch.Tensor:
        return resize_u8(self.images[self._index(i)][None], self.size)[0]  # [3, S, S]

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        return resize_u8(self.images[torch.as_tensor(indices, dtype=torch.long)], self.size)  # [B, 3, S, S]


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file -> uint8 ``[3, H, W]`` upright RGB: :func:`clcae.images.decode_image` (EXIF
    orientation applied, alpha composited on white), the decoder photos go through too. Raises
    :class:`clcae.images.ImageDecodeError` (an ``OSError``) naming the file."""
    return decode_image(path)[0]


class FolderImages(ImageSet):
    """The PNG/JPEG files of a folder (sorted by name), centre-cropped and resized to ``size``.

    A ``labels.csv`` with a ``file`` column (as the procfaces test folder has) becomes ``labels``,
    its rows reordered to ``names``. Files whose header cannot be read are skipped with one
    warning that names them; ``skipped`` keeps ``(name, reason)`` pairs.
    """

    def __init__(self, folder: str | os.PathLike, size: int):
        from PIL import Image

        self.folder, self.size = Path(folder), int(size)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: image folder not found")
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        self.names, self.skipped = [], []
        for path in files:
            try:
                with Image.open(path):  # reads the header only; decoding waits for __getitem__
                    pass
                self.names.append(path.name)
            except (OSError, ValueError, SyntaxError) as e:
                self.skipped.append((path.name, f"{type(e).__name__}: {e}"))
        if self.skipped:
            shown = ", ".join(f"{n} ({why})" for n, why in self.skipped[:10])
            more = " ..." if len(self.skipped) > 10 else ""
            warnings.warn(f"{self.folder}: skipped {len(self.skipped)} unreadable image file(s): {shown}{more}",
                          stacklevel=2)
        if not self.names:
            raise InputError(f"{self.folder}: no readable {'/'.join(IMAGE_SUFFIXES)} images "
                             f"({len(self.skipped)} unreadable)")
        self.labels = self._read_labels()

    def _read_labels(self):
        csv = self.folder / "labels.csv"
        if not csv.is_file():
            return None
        import pandas as pd

        df = pd.read_csv(csv)
        if "file" not in df.columns:
            raise ValueError(f"{csv}: labels need a 'file' column naming each image (has {list(df.columns)})")
        missing = sorted(set(self.names) - set(df["file"]))
        if missing:
            raise ValueError(f"{csv}: no labels for {len(missing)} image(s), e.g. {missing[:5]}")
        return df.set_index("file").loc[self.names].reset_index()

    def __getitem__(self, i: int) -> torch.Tensor:
        image = centre_crop(read_image(self.folder / self.names[self._index(i)]))  # [3, s, s]
        return resize_u8(image[None], self.size)[0]  # [3, S, S]
