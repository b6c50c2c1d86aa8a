"""Shard files read without loading them: one dataset over all shards, and each rank's batches.

The aligner's 100K pairs at 256 px are 19.7 GB of uint8 images; reading every shard into memory on
every rank (8 ranks: 8 copies, plus a concatenation) does not fit a node. Here each shard is opened
with ``torch.load(mmap=True)``: its tensors are views of the file, pages are read when a batch
touches them, and the ranks of a node share them through the page cache, so a rank's private
memory is its batches, whatever the size of the data.

* :class:`ShardDataset`: the rows of several shard files as one dataset (global index -> shard,
  row; no concatenation); ``__getitems__`` fetches a whole batch with one gather per shard.
* :class:`RankBatches`: the sampler. Step s's global batch comes from the seeded schedule
  (``clcae.training.BatchSchedule``, a function of the step), rank r takes rows r, r + world_size, ...;
  it starts at the resume step, so resume and the DDP equivalence keep their meaning.
* :class:`ShardImages`: the ``images`` of shard files as an :class:`~clcae.data.ImageSet` (the
  encoder's training images: a world's train shards), served at any size.
* :func:`batch_loader`: both in a ``torch.utils.data.DataLoader`` (worker processes and pinned
  memory on a GPU), so reading the next batch overlaps the step; an ImageSet (shards or an image
  folder, whose files the workers decode) is read through :class:`ImageBatches`.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from clcae.data import ImageSet, resize_u8
from clcae.errors import InputError
from clcae.io import CheckpointError, read_tensors


def open_shard(path: str | Path) -> dict:
    """A shard's tensors as memory maps of the file. Shards are weights-only files clcae wrote
    (``clcae.io.save_torch``); anything that does not map (a legacy file, a refused global, a
    truncated file) goes through :func:`clcae.io.read_tensors`, which loads it or raises the
    project's error naming the file."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - read_tensors says what is wrong with the file, or reads it
        shard = read_tensors(path)
        warnings.warn(f"{path}: read into memory, not memory-mapped ({type(e).__name__}: {e})", stacklevel=2)
        return shard


class ShardDataset(Dataset):
    """Rows ``keys`` of shard files, indexed as one dataset in file order.

    ``dataset[i]`` is a tuple of one row per key; ``dataset.__getitems__(indices)`` a tuple of
    batched tensors ``[B, ...]`` in the order of ``indices`` (what the DataLoader calls).
    """

    def __init__(self, files: list[str | Path], keys: tuple[str, ...]):
        self.files, self.keys = [Path(f) for f in files], tuple(keys)
        if not self.files:
            raise InputError(f"ShardDataset: no shard files given (keys {self.keys})")
        self._shards = None
        sizes = []
        for f, shard in zip(self.files, self.shards):
            missing = [k for k in self.keys if k not in shard]
            if missing:
                raise CheckpointError(f"{f}: no {missing} in the shard (it has {sorted(shard)})")
            rows = {k: len(shard[k]) for k in self.keys}
            if len(set(rows.values())) != 1:
                raise CheckpointError(f"{f}: the shard's tensors disagree in length {rows}")
            sizes.append(rows[self.keys[0]])
            for k in self.keys:
                first = self.shards[0][k]
                if shard[k].shape[1:] != first.shape[1:] or shard[k].dtype != first.dtype:
                    raise CheckpointError(f"{f}: {k} is {shard[k].dtype} {tuple(shard[k].shape[1:])} per row, "
                                          f"{self.files[0]} has {first.dtype} {tuple(first.shape[1:])}")
        self.offsets = torch.tensor([0] + sizes).cumsum(0)   # [n_shards + 1]: first global index of each

    @property
    def shards(self) -> list[dict]:
        if self._shards is None:   # opened lazily: a worker process maps the files itself
            self._shards = [open_shard(f) for f in self.files]
        return self._shards

    def __getstate__(self) -> dict:   # spawned workers get the file names, not copies of the maps
        return {**self.__dict__, "_shards": None}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(shard [B], row [B])`` of global indices ``index [B]``."""
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"ShardDataset over {self.files[0].parent}: indices must lie in [0, {len(self)}), "
                             f"got {int(index.min())}..{int(index.max())}")
        shard = torch.searchsorted(self.offsets[1:], index, right=True)
        return shard, index - self.offsets[shard]

    def __getitems__(self, indices) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        shard, row = self.locate(index)
        first = self.shards[0]
        out = tuple(torch.empty((len(index), *first[k].shape[1:]), dtype=first[k].dtype) for k in self.keys)
        for s in shard.unique().tolist():
            sel = (shard == s).nonzero().squeeze(1)
            for o, k in zip(out, self.keys):
                o[sel] = self.shards[s][k][row[sel]]   # reads only the rows' pages of the map
        return out

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([i]))

    def take(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        """Rows ``start:stop`` in memory (e.g. a held-out split that is scored every few steps)."""
        return self.__getitems__(torch.arange(start, stop))


class ShardImages(ImageSet):
    """The uint8 images ``[N, 3, H, H]`` stored under ``images`` in shard files, memory-mapped, served
    at ``size`` (default: H); ``names`` default to ``000000, 000001, ...``, ``labels`` a DataFrame or None."""

    def __init__(self, files: list[str | Path], size: int | None = None, names: list[str] | None = None,
                 labels=None):
        self.data = ShardDataset(files, ("images",))
        first = self.data.shards[0]["images"]
        if first.dtype != torch.uint8 or first.ndim != 4 or first.shape[1] != 3 or first.shape[2] != first.shape[3]:
            raise CheckpointError(f"{self.data.files[0]}: 'images' must be square uint8 [N, 3, H, H], "
                                  f"got {first.dtype} {tuple(first.shape)}")
        n = len(self.data)
        self.names = [f"{i:06d}" for i in range(n)] if names is None else list(names)
        if len(self.names) != n or (labels is not None and len(labels) != n):
            raise ValueError(f"ShardImages: {n} images, {len(self.names)} names, "
                             f"{'no' if labels is None else len(labels)} label rows")
        self.labels, self.size = labels, int(first.shape[-1] if size is None else size)

    def resized(self, size: int) -> ShardImages:
        """The same images (same maps, names and labels) served at ``size``."""
        other = copy.copy(self)
        other.size = int(size)
        return other

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.batch(torch.tensor([self._index(i)]))[0]   # [3, S, S]

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        return resize_u8(self.data.__getitems__(indices)[0], self.size)   # [B, 3, S, S]


class ImageBatches(Dataset):
    """An :class:`~clcae.data.ImageSet` as a DataLoader dataset whose items are whole batches
    (``ImageSet.batch``: one gather for shards, one decode per file for a folder)."""

    def __init__(self, images: ImageSet):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices) -> torch.Tensor:
        return self.images.batch(torch.as_tensor(indices, dtype=torch.long))   # uint8 [B, 3, S, S]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


class RankBatches(Sampler):
    """This rank's part of each global batch, steps ``start .. stop - 1``: ``schedule(step)[rank::world_size]``."""

    def __init__(self, schedule, start: int, stop: int, rank: int = 0, world_size: int = 1):
        self.schedule, self.start, self.stop, self.rank, self.world_size = schedule, start, stop, rank, world_size

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.schedule(step)[self.rank::self.world_size].tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _as_batch(batch):
    return batch   # __getitems__ (ShardDataset, ImageBatches) returns the batch already stacked


def batch_loader(dataset: Dataset, schedule, start: int, stop: int, rank: int = 0, world_size: int = 1,
                 workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches of steps ``start .. stop - 1`` for this rank, read by ``workers`` processes ahead of the step."""
    # its own generator: a DataLoader draws its workers' base seed from the global RNG otherwise, and
    # a resumed run (which restores that RNG) would then see another dropout stream
    return DataLoader(dataset, batch_sampler=RankBatches(schedule, start, stop, rank, world_size), collate_fn=_as_batch,
                      num_workers=workers, pin_memory=pin_memory, prefetch_factor=2 if workers else None,
                      generator=torch.Generator().manual_seed(0))


def pairs_manifest(folder: str | Path) -> dict:
    """The spec the pairs in ``folder`` were made with (what a consumer's resume checks)."""
    return json.loads((Path(folder) / "manifest.json").read_text())


def open_pairs(folder: str | Path) -> tuple[ShardDataset, dict]:
    """The pairs without loading them: ``(dataset of (uint8 image [3, R, R], w [style_dim]) rows
    over the memory-mapped shards, stats)``; errors name the folder or file and the fix."""
    folder = Path(folder)
    shards = sorted(folder.glob("shard_*.pt"))
    if not shards:
        raise InputError(f"{folder}: no shard_*.pt files (run `dvc repro synthesize`)")
    if (folder / "manifest.json").exists() and pairs_manifest(folder).get("complete") is False:
        raise InputError(f"{folder}: unfinished pairs (an interrupted synthesize; run `dvc repro synthesize`)")
    stats_path = folder / "stats.pt"
    if not stats_path.exists():
        raise InputError(f"{stats_path}: missing (the synthesize stage did not finish)")
    return ShardDataset(shards, ("images", "w")), read_tensors(stats_path)


def load_pairs(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """All pairs in memory: (uint8 images [N, 3, R, R], w [N, style_dim], stats); small sets only
    (training reads :func:`open_pairs`)."""
    pairs, stats = open_pairs(folder)
    return (*pairs.take(0, len(pairs)), stats)
