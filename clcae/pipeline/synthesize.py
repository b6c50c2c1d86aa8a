"""Stage `synthesize`: image-latent pairs (I = G(w), w) for the contrastive aligner.

The official CLCAE code ships no script for this. Pairs go into a few shards
(``shard_00000.pt``: uint8 images [n, 3, S, S], float32 w [n, style_dim], the shard seed and
row of every pair), plus ``stats.pt`` (``w_avg`` = the generator's latent_avg and
``image_avg`` = G(w_avg), the average image the aligner subtracts, pSp/ReStyle-style).

Resumable by shard: each shard is written atomically, so one that exists is complete. An
interrupted run (SIGINT / SIGTERM stop it between batches) restarted with the same spec (params,
the generator's sha256 and the code's, see ``manifest.json``) skips finished shards and produces
byte-identical pairs, because pair i's z is row ``i % shard_size`` of a generator seeded by
``(seed, shard)``. A finished run marks its manifest ``complete``; a rerun (``dvc repro -f``, new
code) renders everything again.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from clcae.data import resize
from clcae.distributed import all_reduce_sum
from clcae.images import to_uint8
from clcae.io import file_sha256, save_json, save_torch
from clcae.seeding import derive_seed
from clcae.shards import pairs_manifest


@dataclasses.dataclass
class PairSpec:
    """What defines the pairs; a change invalidates finished shards."""
    generator: str
    n_pairs: int
    shard_size: int
    truncation: float
    noise_mode: str
    resolution: int
    seed: int
    channels_last: bool = False  # shared.channels_last: the same renders up to float rounding, other bits
    generator_sha256: str = ""  # the checkpoint's content: a new generator at the same path is a new spec
    code_sha256: str = ""  # the stage's code (clcae.training.stage_code_signature): new code, new pairs


def shard_seed(seed: int, shard: int) -> int:
    return derive_seed(seed, "synthesize", str(shard)) % (2 ** 62)


def shard_latents(seed: int, shard: int, n: int, style_dim: int) -> torch.Tensor:
    """z [n, style_dim] of one shard: a function of (seed, shard) alone."""
    return torch.randn(n, style_dim, generator=torch.Generator().manual_seed(shard_seed(seed, shard)))


@torch.inference_mode()
def render_pairs(G, z: torch.Tensor, spec: PairSpec, batch_size: int, noise_seed: int, check=None):
    """(uint8 images [n, 3, R, R], w [n, style_dim]) for latents z, batched; ``check()`` runs
    before each batch (it raises to stop)."""
    device = G.latent_avg.device
    images, ws = [], []
    for b, chunk in enumerate(z.split(batch_size)):
        if check is not None:
            check()
        w = G.mapped(chunk.to(device), spec.truncation)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(noise_seed + b)  # "random" noise reproducible per batch
            img = G.synthesis(w[:, None].expand(-1, G.n_latent, -1), noise_mode=spec.noise_mode)
        images.append(to_uint8(resize(img, spec.resolution)).cpu())
        ws.append(w.float().cpu())
    return torch.cat(images), torch.cat(ws)


def prepare_folder(folder: Path, spec: PairSpec) -> None:
    """Keep finished shards only for an interrupted run of the same spec (params, generator, code)."""
    wanted = dataclasses.asdict(spec)
    if (folder / "manifest.json").exists() and pairs_manifest(folder) == {**wanted, "complete": False}:
        return
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_json({**wanted, "complete": False}, folder / "manifest.json")


def synthesize(G, spec: PairSpec, out_dir: str | Path, batch_size: int = 250, progress: bool = True,
               rank: int = 0, world_size: int = 1) -> dict:
    """Write the pair shards and stats; return counts. Rank r of ``world_size`` renders shards r, r + world_size,
    ... (disjoint files; the pairs do not depend on the rank count). Skips the shards an interrupted
    run of the same spec wrote; SIGINT / SIGTERM stop it between batches (TrainingInterrupted)."""
    from clcae.distributed import barrier
    from clcae.training import StopOnSignal

    folder = Path(out_dir)
    if rank == 0:
        prepare_folder(folder, spec)
    barrier()   # the folder is ready (or cleared) before any rank writes
    n_shards = -(-spec.n_pairs // spec.shard_size)
    mine = range(rank, n_shards, world_size)
    done = 0
    bar = tqdm(total=sum(min(spec.shard_size, spec.n_pairs - s * spec.shard_size) for s in mine),
               disable=not progress or rank != 0, desc=f"synthesize ({world_size} rank{'s' if world_size > 1 else ''})",
               unit="pair")
    with StopOnSignal(collective=False) as stop, bar:   # ranks render different shard counts
        for shard in mine:
            n = min(spec.shard_size, spec.n_pairs - shard * spec.shard_size)
            path = folder / f"shard_{shard:05d}.pt"
            if not path.exists():
                def check(shard=shard):  # between batches: the finished shards are the resume point
                    if stop.requested():
                        raise stop.interrupted("synthesize", shard, folder, unit="shard")

                z = shard_latents(spec.seed, shard, n, G.style_dim)
                images, w = render_pairs(G, z, spec, batch_size, shard_seed(spec.seed, shard), check=check)
                save_torch({"images": images, "w": w, "shard_seed": shard_seed(spec.seed, shard),
                            "row": torch.arange(n), "index": torch.arange(n) + shard * spec.shard_size}, path)
                done += n
            bar.update(n)
    done = all_reduce_sum(done, G.latent_avg.device)
    barrier()   # every shard written before the run is marked complete
    if rank != 0:
        return {"n_pairs": spec.n_pairs, "n_shards": n_shards, "rendered_now": done}
    with torch.inference_mode():
        w_avg = G.latent_avg.float()
        image_avg = resize(G.synthesis(w_avg[None, None].expand(1, G.n_latent, -1), noise_mode="const"),
                           spec.resolution)
    save_torch({"w_avg": w_avg.cpu(), "image_avg": image_avg.float().cpu()}, folder / "stats.pt")
    save_json({**dataclasses.asdict(spec), "complete": True}, folder / "manifest.json")
    return {"n_pairs": spec.n_pairs, "n_shards": n_shards, "rendered_now": done}


def run(params) -> dict:
    """Stage entry: params.shared + params.synthesize -> data/pairs, reports/synthesize/metrics.json.
    Under torchrun (``synthesize.launcher``) the ranks render disjoint shards."""
    from clcae.distributed import cleanup_distributed, init_distributed

    cfg = params.synthesize
    rank, world_size, _, device = init_distributed(params.shared.device)
    try:
        return synthesize_stage(params, cfg, rank, world_size, device)
    finally:
        cleanup_distributed()


def synthesize_stage(params, cfg, rank: int, world_size: int, device) -> dict:
    import time

    from clcae.nets.stylegan2 import load_generator
    from clcae.training import stage_code_signature

    G = load_generator(params.shared.generator, device=device, channels_last=params.shared.channels_last)
    spec = PairSpec(generator=params.shared.generator, n_pairs=cfg.n_pairs, shard_size=cfg.shard_size,
                    truncation=cfg.truncation, noise_mode=cfg.noise_mode,
                    resolution=cfg.resolution or G.size, seed=params.shared.seed,
                    channels_last=params.shared.channels_last,
                    generator_sha256=file_sha256(params.shared.generator),
                    code_sha256=stage_code_signature("synthesize"))
    start = time.perf_counter()
    counts = synthesize(G, spec, cfg.out_dir, batch_size=cfg.batch_size, rank=rank, world_size=world_size)
    seconds = time.perf_counter() - start
    metrics = {**counts, "seconds": round(seconds, 2),
               "pairs_per_s": round(counts["rendered_now"] / seconds, 1) if counts["rendered_now"] else None,
               "device": str(device), **({"ranks": world_size} if world_size > 1 else {})}
    if rank == 0:
        save_json(metrics, Path(cfg.report_dir) / "metrics.json")
    return metrics
