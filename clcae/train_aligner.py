"""Stage `train_aligner`: the contrastive W-image aligner (CLCAE step 1).

h_I (IR-SE pyramid T1 -> map2style -> projection) and h_w (transformer over w - w_avg ->
projection) are trained with symmetric InfoNCE and a learnable temperature on the pairs of
`synthesize`; the last ``holdout`` pairs are kept out and scored by top-1/top-5 retrieval.

Single process: ``python stages/train_aligner.py``. Several GPUs or CPU processes:
``torchrun --nproc_per_node N stages/train_aligner.py``: the global batch is split across
ranks and features are all-gathered, so every rank scores against the whole global batch
(the official code uses per-GPU negatives). Resumes from ``<out_dir>/state.pt``
(model, optimizer, step, RNG) when its config matches.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from clcae.distributed import all_reduce_mean, barrier, cleanup_distributed, init_distributed, is_main_process
from clcae.io import save_json, save_torch
from clcae.losses import InfoNCELoss, retrieval_topk
from clcae.nets.aligner import Aligner, AlignerConfig, save_aligner
from clcae.synthesize import load_pairs, pairs_manifest
from clcae.images import to_float


def aligner_config(cfg, image_size: int, style_dim: int) -> AlignerConfig:
    return AlignerConfig(image_size=image_size, num_layers=cfg.num_layers, mode="ir_se", width=cfg.width,
                         style_dim=style_dim, embed_dim=cfg.embed_dim, heads=cfg.heads, ff_dim=cfg.ff_dim,
                         dropout=cfg.dropout, init_temperature=cfg.temperature_init)


def lr_at(cfg, step: int) -> float:
    """Linear warm-up, then cosine decay to 1% (a steady end point for the metrics)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class BatchSchedule:
    """Global batch indices of step s: epoch-wise permutations seeded by (seed, epoch).

    A function of the step alone, so a resumed run sees the same batches; rank r takes
    rows r, r + world, ... of the global batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ValueError(f"train_aligner.batch_size ({batch_size}) exceeds the {n} training pairs")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return self._perm[pos * self.batch_size:(pos + 1) * self.batch_size]


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
    rank, world, _, device = init_distributed(params.shared.device)
    try:
        return _train(params, cfg, seed, rank, world, device)
    finally:
        cleanup_distributed()


def _train(params, cfg, seed, rank, world, device) -> dict:
    images, w, stats = load_pairs(params.synthesize.out_dir)
    n_train = len(w) - cfg.holdout
    if n_train < cfg.batch_size:
        raise ValueError(f"train_aligner.holdout ({cfg.holdout}) leaves {n_train} pairs for training, fewer than "
                         f"train_aligner.batch_size ({cfg.batch_size}); make more pairs (synthesize.n_pairs)")
    if cfg.batch_size % world:
        raise ValueError(f"train_aligner.batch_size ({cfg.batch_size}) must divide over {world} ranks")
    torch.manual_seed(seed)
    model = Aligner(aligner_config(cfg, images.shape[-1], w.shape[1]))
    model.set_averages(stats["image_avg"], stats["w_avg"])
    model.to(device).train()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = InfoNCELoss(cfg.lambda_i2w, gather=True)
    out, report = Path(cfg.out_dir), Path(cfg.report_dir)
    state_path, signature = out / "state.pt", {**dataclasses.asdict(cfg), "seed": seed, "world": world,
                                               "n_pairs": len(w), "pairs": pairs_manifest(params.synthesize.out_dir)}
    step, seconds = 0, 0.0
    if state_path.exists():
        # on the CPU: load_state_dict copies to the model's device; the RNG state must stay here
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["signature"] == signature:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            step, seconds = state["step"], state["seconds"]
            torch.set_rng_state(state["rng"])
    schedule = BatchSchedule(n_train, cfg.batch_size, seed)
    hold_images, hold_w = images[n_train:], w[n_train:]
    live = None
    if is_main_process():
        from dvclive import Live

        live = Live(str(report / "live"), resume=step > 0, save_dvc_exp=False, dvcyaml=False)
    bar = tqdm(total=cfg.steps, initial=step, disable=not is_main_process(), desc="aligner")
    start = time.perf_counter() - seconds
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    retrieval = {}
    while step < cfg.steps:
        idx = schedule(step)[rank::world]
        x = to_float(images[idx]).to(device, non_blocking=True)
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        with autocast:
            h_image, h_latent, logit_scale = net(x, w[idx].to(device))
            loss = loss_fn(h_image.float(), h_latent.float(), logit_scale)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train_aligner: InfoNCE loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            logged_loss = all_reduce_mean(loss.detach()).item()  # collective: every rank, eval steps only
            if live is not None:
                retrieval = retrieval_topk(*embed_pairs(model, hold_images, hold_w, device))
                live.step = step
                live.log_metric("train/loss", logged_loss)
                live.log_metric("train/temperature", 1 / model.logit_scale.exp().item())
                live.log_metric("train/lr", opt.param_groups[0]["lr"])
                live.log_metric("train/minutes", (time.perf_counter() - start) / 60)
                for k, v in retrieval.items():
                    live.log_metric(f"holdout/{k}", v)
                live.make_summary()
                bar.set_postfix(loss=f"{logged_loss:.3f}", top1=f"{retrieval['i2w_top1']:.3f}")
        if (step % cfg.checkpoint_every == 0 or step == cfg.steps) and is_main_process():
            save_torch({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "seconds": time.perf_counter() - start, "rng": torch.get_rng_state(),
                        "signature": signature}, state_path)
    bar.close()
    barrier()
    if not is_main_process():
        return {}
    if not retrieval:  # resumed at the last step: score once more
        retrieval = retrieval_topk(*embed_pairs(model, hold_images, hold_w, device))
    save_aligner(model.cpu(), out / "aligner.pt", steps=step)
    metrics = {**retrieval, "temperature": 1 / model.logit_scale.exp().item(), "holdout_pairs": len(hold_w),
               "train_pairs": n_train, "steps": step, "world_size": world,
               "minutes": round((time.perf_counter() - start) / 60, 2), "device": str(device)}
    save_json(metrics, report / "metrics.json")
    live.end()
    return metrics
