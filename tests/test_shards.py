"""Memory-mapped shards: one dataset over all shards, the seeded batch order, each rank's part."""
import sys

import pytest
import torch

from clcae.data import FolderImages, resize_u8
from clcae.io import CheckpointError, save_torch
from clcae.shards import ImageBatches, RankBatches, ShardDataset, ShardImages, batch_loader
from clcae.training import BatchSchedule


def write_shards(folder, sizes=(7, 5, 9), size=4, style_dim=6):
    """Shards whose row i (global) holds i in every pixel and w = i + arange: checkable contents."""
    files, start = [], 0
    for k, n in enumerate(sizes):
        idx = torch.arange(start, start + n)
        images = (idx % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
        w = idx.float()[:, None] + torch.arange(style_dim).float()
        files.append(folder / f"shard_{k:05d}.pt")
        save_torch({"images": images, "w": w, "shard_seed": k}, files[-1])
        start += n
    return files


def all_rows(files):
    parts = [torch.load(f, weights_only=True) for f in files]
    return torch.cat([p["images"] for p in parts]), torch.cat([p["w"] for p in parts])


def test_dataset_returns_the_shards_rows_in_the_seeded_order_across_boundaries(tmp_path):
    files = write_shards(tmp_path)
    data = ShardDataset(files, ("images", "w"))
    images, w = all_rows(files)
    assert len(data) == 21 and data.offsets.tolist() == [0, 7, 12, 21]
    assert torch.equal(data[6][1], w[6]) and torch.equal(data[7][1], w[7]) and torch.equal(data[20][0], images[20])
    schedule = BatchSchedule(len(data), 8, seed=3)
    seen = list(batch_loader(data, schedule, 0, 6))   # 6 steps: past an epoch (2 batches of 8 per epoch)
    assert len(seen) == 6
    for step, (x, v) in enumerate(seen):
        idx = schedule(step)
        assert x.dtype == torch.uint8 and x.shape == (8, 3, 4, 4)
        assert torch.equal(x, images[idx]) and torch.equal(v, w[idx])
    shards_in_batches = {int(s) for step in range(6) for s in data.locate(schedule(step))[0]}
    assert shards_in_batches == {0, 1, 2}   # the batches mix shards
    with pytest.raises(IndexError, match=r"\[0, 21\)"):
        data.__getitems__([3, 21])


def test_two_ranks_see_disjoint_halves_whose_union_is_the_global_batch(tmp_path):
    data = ShardDataset(write_shards(tmp_path), ("images", "w"))
    schedule = BatchSchedule(len(data), 8, seed=0)
    ranks = [list(batch_loader(data, schedule, 0, 5, rank=r, world_size=2)) for r in (0, 1)]
    _, w = all_rows(data.files)
    for step in range(5):
        a, b = ranks[0][step][1], ranks[1][step][1]
        assert len(a) == len(b) == 4
        rows = lambda v: set(v[:, 0].long().tolist())   # w[:, 0] is the global row
        assert not rows(a) & rows(b) and rows(a) | rows(b) == set(schedule(step).tolist())
        assert sorted(rows(a) | rows(b)) == sorted(schedule(step).tolist())


def test_resume_and_workers_give_the_same_batches(tmp_path):
    data = ShardDataset(write_shards(tmp_path), ("images", "w"))
    schedule = BatchSchedule(len(data), 4, seed=1)
    full = list(batch_loader(data, schedule, 0, 9))
    resumed = list(batch_loader(data, schedule, 4, 9))            # a run resumed at step 4
    workers = list(batch_loader(data, schedule, 0, 9, workers=2))  # two processes reading ahead
    assert len(RankBatches(schedule, 4, 9)) == 5
    for a, b in zip(full[4:], resumed):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for a, b in zip(full, workers):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_encoder_images_from_shards_or_a_folder_through_the_same_loader(tmp_path):
    """ShardImages serves the train shards as an ImageSet at any size; an image folder goes through
    the same loader (its workers decode the files) and gives the seeded batches too."""
    from PIL import Image

    files = write_shards(tmp_path, sizes=(7, 5, 9), size=8)
    images, _ = all_rows(files)
    shards = ShardImages(files)
    assert len(shards) == 21 and shards.size == 8 and shards.names[20] == "000020"
    small = shards.resized(4)
    assert small.data is shards.data and torch.equal(small.batch(torch.tensor([20, 0])), resize_u8(images[[20, 0]], 4))
    schedule = BatchSchedule(len(shards), 6, seed=2)
    for workers in (0, 2):
        seen = list(batch_loader(ImageBatches(shards), schedule, 0, 5, rank=1, world_size=2, workers=workers))
        for step, x in enumerate(seen):
            assert torch.equal(x, images[schedule(step)[1::2]])   # rank 1's half of the global batch
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    photos = FolderImages(folder, 8)
    schedule = BatchSchedule(len(photos), 4, seed=0)
    seen = list(batch_loader(ImageBatches(photos), schedule, 0, 4, workers=2))
    for step, x in enumerate(seen):
        assert torch.equal(x, images[schedule(step)])   # PNG is lossless


def test_bad_shards_name_the_file(tmp_path):
    files = write_shards(tmp_path, sizes=(3, 3))
    save_torch({"images": torch.zeros(3, 3, 4, 4, dtype=torch.uint8)}, files[1])
    with pytest.raises(CheckpointError, match=r"shard_00001\.pt: no \['w'\]"):
        ShardDataset(files, ("images", "w"))
    save_torch({"images": torch.zeros(3, 3, 8, 8, dtype=torch.uint8), "w": torch.zeros(3, 6)}, files[1])
    with pytest.raises(CheckpointError, match=r"shard_00001\.pt: images is torch.uint8 \(3, 8, 8\)"):
        ShardDataset(files, ("images", "w"))
    save_torch({"images": torch.zeros(3, 3, 8, 6)}, tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match=r"wide\.pt: 'images' must be square uint8"):
        ShardImages([tmp_path / "wide.pt"])
    files[1].write_bytes(files[0].read_bytes()[:100])   # truncated
    with pytest.raises(CheckpointError, match=r"shard_00001\.pt"):
        ShardDataset(files, ("images", "w"))


def rss_anon_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_shards_are_memory_maps_not_copies(tmp_path):
    n, size = 400, 128                              # 400 x 3 x 128 x 128 uint8 = 18.8 MiB per shard
    for k in range(4):
        save_torch({"images": torch.full((n, 3, size, size), k, dtype=torch.uint8), "w": torch.zeros(n, 8)},
                   tmp_path / f"shard_{k}.pt")
    before = rss_anon_mib()
    data = ShardDataset(sorted(tmp_path.glob("shard_*.pt")), ("images", "w"))
    x, _ = data.__getitems__(torch.arange(0, len(data), 50))   # touches rows of every shard
    assert x[:, 0, 0, 0].tolist() == [k for k in range(4) for _ in range(8)]
    assert rss_anon_mib() - before < 15                # 75 MiB of shards: only the batch is private memory
