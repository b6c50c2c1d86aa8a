"""Stage `train_aligner`: the contrastive W-image aligner (CLCAE step 1).

h_I (IR-SE pyramid T1 -> map2style -> projection) and h_w (transformer over w - w_avg ->
projection) are trained with symmetric InfoNCE and a learnable temperature on the pairs of
`synthesize`; the last ``holdout`` pairs are kept out and scored by top-1/top-5 retrieval.

Single process: ``python stages/train_aligner.py``. Several GPUs or CPU processes:
``torchrun --nproc_per_node N stages/train_aligner.py``: the global batch is split across
ranks and features are all-gathered, so every rank scores against the whole global batch
(the official code uses per-GPU negatives).

Resumes an interrupted run only (:mod:`clcae.training`): ``<out_dir>/.resume/state.pt`` (model,
optimizer, step, RNG, logged curve rows) serves a rerun with the same params, pairs and code, and
is removed when the run finishes. SIGINT / SIGTERM save it before the stage exits.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from clcae.distributed import barrier, cleanup_distributed, init_distributed, is_main_process
from clcae.errors import ConfigError
from clcae.images import to_float
from clcae.io import save_json
from clcae.losses import InfoNCELoss, retrieval_topk
from clcae.nets.aligner import Aligner, AlignerConfig, save_aligner
from clcae.shards import batch_loader, open_pairs, pairs_manifest
from clcae.steps import lr_at
from clcae.training import BatchSchedule, Loop, ResumePoint, fit, restore, seed_rank_stream, stage_code_signature


def aligner_config(cfg, image_size: int, style_dim: int) -> AlignerConfig:
    return AlignerConfig(image_size=image_size, num_layers=cfg.num_layers, mode="ir_se", width=cfg.width,
                         style_dim=style_dim, embed_dim=cfg.embed_dim, heads=cfg.heads, ff_dim=cfg.ff_dim,
                         dropout=cfg.dropout, init_temperature=cfg.temperature_init)


FINAL_LR_FRAC = 0.01  # cosine decay to 1% of lr: a steady end point for the metrics
RESUME_FILE = Path(".resume") / "state.pt"  # under out_dir; untracked (see .gitignore)


def run_signature(params, world_size: int) -> dict:
    """What a resume point must share with this run: params (less paths), pairs, world size, code."""
    cfg = {k: v for k, v in dataclasses.asdict(params.train_aligner).items()
           if k not in ("out_dir", "report_dir", "launcher", "loader_workers")}
    return {"params": {**cfg, "seed": params.shared.seed, "world_size": world_size,
                       "cpu_amp": params.shared.cpu_amp, "channels_last": params.shared.channels_last},
            "data": pairs_manifest(params.synthesize.out_dir), "code": stage_code_signature("train_aligner")}


@torch.inference_mode()
def embed_pairs(model: Aligner, images_u8: torch.Tensor, w: torch.Tensor, device, batch_size: int = 500):
    """(h_image [N, E], h_latent [N, E]) in eval mode, batched."""
    was_training = model.training
    model.eval()
    hi, hw = [], []
    for start in range(0, len(w), batch_size):
        x = to_float(images_u8[start:start + batch_size]).to(device)
        hi.append(model.embed_image(x).float().cpu())
        hw.append(model.embed_latent(w[start:start + batch_size].to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(hi), torch.cat(hw)


def run(params) -> dict:
    cfg, seed = params.train_aligner, params.shared.seed
    rank, world_size, _, device = init_distributed(params.shared.device)
    try:
        return _train(params, cfg, seed, rank, world_size, device)
    finally:
        cleanup_distributed()


def _train(params, cfg, seed, rank, world_size, device) -> dict:
    pairs, stats = open_pairs(params.synthesize.out_dir)   # memory-mapped: a rank's memory does not grow with it
    n_train = len(pairs) - cfg.holdout
    if n_train < cfg.batch_size:
        raise ConfigError(f"train_aligner.holdout ({cfg.holdout}) leaves {n_train} pairs for training, fewer than "
                         f"train_aligner.batch_size ({cfg.batch_size}); make more pairs (synthesize.n_pairs)")
    if cfg.batch_size % world_size:
        raise ConfigError(f"train_aligner.batch_size ({cfg.batch_size}) must divide over {world_size} ranks")
    torch.manual_seed(seed)
    image, w0 = pairs[0]
    model = Aligner(aligner_config(cfg, image.shape[-1], w0.shape[0]))
    model.set_averages(stats["image_avg"], stats["w_avg"])
    seed_rank_stream(seed, rank)   # one init for all ranks, then each rank its own dropout masks
    model.to(device).train()
    if params.shared.channels_last:   # the image tower's convs in NHWC (oneDNN's fast layout on the CPU)
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out, report = Path(cfg.out_dir), Path(cfg.report_dir)
    point = ResumePoint(out / RESUME_FILE, run_signature(params, world_size))
    resumed = restore(point, model, opt, device, who="train_aligner")
    net = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    loss_fn = InfoNCELoss(cfg.lambda_i2w, gather=True,
                          max_logit_scale=None if cfg.logit_cap is None else math.log(cfg.logit_cap))
    schedule = BatchSchedule(n_train, cfg.batch_size, seed)
    hold_images, hold_w = pairs.take(n_train, len(pairs))   # scored at each logged step: kept in memory
    retrieval = {}

    def step_loss(batch, step: int):
        images_u8, w = batch
        x = to_float(images_u8.to(device, non_blocking=True))   # uint8 (pinned) over the bus, then float
        h_image, h_latent, logit_scale = net(x, w.to(device, non_blocking=True))
        loss = loss_fn(h_image.float(), h_latent.float(), logit_scale)
        return loss, {"loss": loss}

    def log_extra(step: int) -> dict:
        retrieval.update(retrieval_topk(*embed_pairs(model, hold_images, hold_w, device)))
        return {"train/temperature": 1 / model.logit_scale.exp().item(),
                **{f"holdout/{k}": v for k, v in retrieval.items()}}

    loop = Loop("train_aligner", model, opt, point, cfg.steps, device, step_loss=step_loss, live_dir=report / "live",
                # rows rank::world_size of each step's global batch
                batches=lambda start: batch_loader(pairs, schedule, start, cfg.steps, rank, world_size,
                                                   workers=cfg.loader_workers, pin_memory=device.type == "cuda"),
                lr=lambda step: lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, FINAL_LR_FRAC),
                log_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every, log_extra=log_extra,
                cpu_amp=params.shared.cpu_amp)
    step, seconds, log = fit(loop, resumed)
    barrier()
    if not is_main_process():
        return {}
    if not retrieval:  # resumed at the last step: score once more
        retrieval = retrieval_topk(*embed_pairs(model, hold_images, hold_w, device))
    save_aligner(model.cpu(), out / "aligner.pt", steps=step)
    metrics = {**retrieval, "temperature": 1 / model.logit_scale.exp().item(), "holdout_pairs": len(hold_w),
               "train_pairs": n_train, "steps": step, "world_size": world_size,
               "minutes": round(seconds / 60, 2), "device": str(device)}
    save_json(metrics, report / "metrics.json")
    log.end()
    point.remove()  # finished: a rerun (dvc repro -f, new code or data) starts from scratch
    return metrics
