"""Stage `world`: the procfaces world's data splits, world CNN and generator report.

Writes (paths from params ``world``):
- ``data/world/train/shard_000.pt`` ...: the world's "FFHQ" (uint8 images, u, person ids, labels);
- ``data/world/test/``: its "CelebA-HQ", a PNG folder + labels.csv (the form a user's folder takes);
- ``data/world/world_cnn.pt``: the world CNN (identity, attributes, perceptual features);
- ``reports/world/metrics.json`` and ``reports/world/generator_samples.png``.
The generator itself is committed (``assets/procfaces/generator.pt``); this stage checks it.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from clcae.config import Params
from clcae.distributed import stage_device
from clcae.io import atomic_path, save_csv, save_image_grid, save_json
from clcae.nets.stylegan2 import load_generator
from clcae.worlds.procfaces import procfaces
from clcae.worlds.procfaces.quality import generator_quality
from clcae.worlds.procfaces.world_cnn import load_world_cnn, train_world_cnn, with_seed


def write_train_shards(images, u, person_id, labels, folder: Path, shard_size: int) -> None:
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for i, start in enumerate(range(0, len(images), shard_size)):
            sl = slice(start, start + shard_size)
            torch.save({"images": images[sl].clone(), "u": u[sl].clone(), "person_id": person_id[sl].clone(),
                        "labels": labels[sl].clone(), "attributes": list(procfaces.ATTRIBUTES)},
                       tmp / f"shard_{i:03d}.pt")


def run(params: Params) -> dict:
    cfg, seed = params.world, params.shared.seed
    device = stage_device(params.shared)
    out = Path(cfg.out_dir)

    images, u, person_id, labels = procfaces.render_split("train", cfg.train_people, cfg.train_per_person, seed,
                                                          size=cfg.size)
    write_train_shards(images, u, person_id, labels, out / "train", cfg.shard_size)
    test_images, test_u, test_person, test_labels = procfaces.render_split(
        "test", cfg.test_people, cfg.test_per_person, seed, size=cfg.size)
    procfaces.write_png_folder(test_images, procfaces.labels_frame(test_u, test_person, test_labels), out / "test")

    cnn_metrics = train_world_cnn(with_seed(cfg.world_cnn, seed), out / "world_cnn.pt", cpu_amp=params.shared.cpu_amp)
    cnn = load_world_cnn(out / "world_cnn.pt").to(device).eval()

    G = load_generator(params.shared.generator, device=device, channels_last=params.shared.channels_last)
    quality, samples = generator_quality(G, cnn, images, n=cfg.quality_samples, seed=seed)
    report = Path(cfg.report_dir)
    save_image_grid(samples[:64], report / "generator_samples.png")
    save_image_grid(images[:64], report / "train_samples.png")
    save_image_grid(test_images[:64], report / "test_samples.png")
    metrics = {"world_cnn": cnn_metrics, "generator": {k: v for k, v in quality.items() if k != "attribute_spread"}}
    spread = pd.DataFrame(quality["attribute_spread"]).T
    save_csv(spread, report / "generator_attributes.csv", index_label="attribute", float_format="%.4f")
    save_json(metrics, report / "metrics.json")
    return metrics
