"""The world CNN: a small ResNet trained on ProcFaces with exact labels.

Why it exists: in the offline procfaces world there is no ArcFace, attribute classifier or
LPIPS backbone to download, so one small network trained on rendered faces plays all three:

* ``identity(x) -> [N, 128]`` unit vectors (ArcFace's role in the ID loss and ID metric),
  trained with a CosFace margin softmax over person ids;
* ``attributes(x) -> [N, 7]`` regression of :data:`procfaces.ATTRIBUTES` (InterFaceGAN labels,
  editing scores), trained with MSE;
* ``features(x)`` (multi-layer maps, for :func:`perceptual_distance`) and ``pooled(x)``
  (for FID-style statistics). A distance through this net is *not* LPIPS; name it so.

Inputs are ``[N, 3, 64, 64]`` images in [-1, 1] (other sizes work; the flatten head assumes
the final 4x4 map of a 64 px input, so other sizes are resized to 64 first).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from clcae.config import WorldCNNConfig
from clcae.errors import InputError
from clcae.images import gaussian_blur, to_float, to_uint8
from clcae.io import read_checkpoint, save_torch
from clcae.metrics.regression import attribute_r2
from clcae.metrics.verification import verification_accuracy
from clcae.steps import check_finite, lr_at, set_lr
from clcae.worlds.procfaces import procfaces as pf

INPUT_SIZE = 64


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

def _conv_bn(ci: int, co: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co),
                         nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs + projection shortcut when the shape changes)."""

    def __init__(self, ci: int, co: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ci, co, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(co)
        self.conv2 = nn.Conv2d(co, co, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(co)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or ci != co:
            # ResNet-D shortcut (average-pool, then 1x1 conv): sees every input pixel, and
            # avoids a strided 1x1 conv whose channels_last backward segfaulted on CPU
            # (torch 2.14.1, 8 channels at 64 px)
            pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class WorldCNN(nn.Module):
    """Full-resolution stem + 4 residual stages: 64 -> 32 -> 16 -> 8 -> 4 px.

    The stem stays at 64 px because the attributes live in features 2-6 px across (eyelids,
    lips); striding at once cost most of the eye_open / lip_red signal.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128, 192), emb_dim: int = 128,
                 n_attributes: int = len(pf.ATTRIBUTES), neck_dim: int = 256,
                 n_traits: int = len(pf.IDENTITY_DIMS)):
        super().__init__()
        w = tuple(widths)
        self.widths, self.emb_dim, self.n_attributes = w, emb_dim, n_attributes
        self.stem = _conv_bn(3, w[0], stride=1)                  # [N, w0, 64, 64]
        self.stages = nn.ModuleList([
            BasicBlock(w[0], w[1], 2),                           # [N, w1, 32, 32]
            BasicBlock(w[1], w[2], 2),                           # [N, w2, 16, 16]
            BasicBlock(w[2], w[3], 2),                           # [N, w3, 8, 8]
            BasicBlock(w[3], w[4], 2),                           # [N, w4, 4, 4]
        ])
        # the flatten neck keeps the 4x4 layout: where a feature is matters (yaw, eye spacing)
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(w[4] * 16, neck_dim),
                                  nn.BatchNorm1d(neck_dim), nn.ReLU(inplace=True))
        self.id_head = nn.Linear(neck_dim, emb_dim)
        self.attr_head = nn.Sequential(nn.Linear(neck_dim, 128), nn.ReLU(inplace=True),
                                       nn.Linear(128, n_attributes))
        self.trait_head = nn.Linear(neck_dim, n_traits)  # auxiliary: dense identity supervision
        # attributes are regressed standardised; these undo it (set from the training labels)
        self.register_buffer("attr_mean", torch.zeros(n_attributes))
        self.register_buffer("attr_std", torch.ones(n_attributes))

    @staticmethod
    def _prepare(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"WorldCNN expects images [N, 3, H, W] in [-1, 1], got {tuple(x.shape)}")
        x = to_float(x)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                              antialias=True, align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after the stem and each stage (5 maps, 64 px down to 4 px)."""
        h = self.stem(self._prepare(x))
        feats = [h]
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1]  # [N, w4, 4, 4]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled last stage ``[N, w4]`` (FID-style statistics)."""
        return self.pooled_from_trunk(self._trunk(x))

    @staticmethod
    def pooled_from_trunk(h: torch.Tensor) -> torch.Tensor:
        """:meth:`pooled` from the last feature map ``[N, w4, 4, 4]`` (reuses a :meth:`features` pass)."""
        return h.mean(dim=(2, 3))

    def identity(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised identity embedding ``[N, emb_dim]``."""
        return self.identity_from_trunk(self._trunk(x))

    def identity_from_trunk(self, h: torch.Tensor) -> torch.Tensor:
        """:meth:`identity` from the last feature map ``[N, w4, 4, 4]`` (reuses a :meth:`features` pass)."""
        return F.normalize(self.id_head(self.neck(h)), dim=1)

    def attributes(self, x: torch.Tensor) -> torch.Tensor:
        """Attribute predictions ``[N, 7]`` in :data:`procfaces.ATTRIBUTES` order and units."""
        return self.attributes_from_trunk(self._trunk(x))

    def describe(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`identity`, :meth:`attributes` and :meth:`pooled` from one trunk pass."""
        h = self._trunk(x)
        z = self.neck(h)
        return F.normalize(self.id_head(z), dim=1), self.attr_head(z) * self.attr_std + self.attr_mean, self.pooled_from_trunk(h)

    def attributes_from_trunk(self, h: torch.Tensor) -> torch.Tensor:
        """:meth:`attributes` from the last feature map ``[N, w4, 4, 4]`` (reuses a
        :meth:`features` pass)."""
        return self.attr_head(self.neck(h)) * self.attr_std + self.attr_mean

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass for training: ``(identity [N, emb_dim], standardised attributes [N, 7],
        standardised identity traits [N, 20])``."""
        z = self.neck(self._trunk(x))
        return F.normalize(self.id_head(z), dim=1), self.attr_head(z), self.trait_head(z)


def perceptual_distance(model: WorldCNN, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS-style distance through the world CNN ``[N]`` (differentiable; not LPIPS).

    Per layer: unit-normalise each pixel's channel vector, squared difference summed over
    channels, mean over space; then summed across layers. Call ``model.eval()`` first.
    """
    if x.shape != y.shape:
        raise ValueError(f"perceptual_distance: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    return feature_distance(model.features(x), model.features(y))


def feature_distance(fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
    """:func:`perceptual_distance` from two :meth:`WorldCNN.features` lists ``[N]``."""
    return unit_feature_distance(unit_features(fx), unit_features(fy))


def unit_features(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each pixel's channel vector unit-normalised (what the distance compares): normalise a
    target's maps once and compare them with many reconstructions."""
    return [f / (f.norm(dim=1, keepdim=True) + 1e-8) for f in feats]


def unit_feature_distance(ux: list[torch.Tensor], uy: list[torch.Tensor]) -> torch.Tensor:
    """:func:`feature_distance` of :func:`unit_features` ``[N]``. ``uy`` may hold fewer images
    than ``ux`` (``N = k M``): then it is compared with each consecutive block of M in ``ux``
    (the target against k concatenated renders), broadcast, not copied."""
    n, m = ux[0].shape[0], uy[0].shape[0]
    if n % m:
        raise ValueError(f"unit_feature_distance: {n} images against {m}: the second batch must divide the first")
    total = ux[0].new_zeros(n // m, m)
    for a, b in zip(ux, uy):
        a = a.reshape(n // m, m, *a.shape[1:])  # [k, M, C, H, W]
        total = total + (a - b).square().sum(dim=2).mean(dim=(2, 3))
    return total.reshape(n)


class CosFaceHead(nn.Module):
    """Additive-margin cosine softmax (CosFace): logits = s * (cos - m * onehot)."""

    def __init__(self, emb_dim: int, n_classes: int, margin: float, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, emb_dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cos = emb @ F.normalize(self.weight, dim=1).t()  # [N, C]
        cos = cos - self.margin * F.one_hot(target, cos.shape[1]).to(cos.dtype)
        return F.cross_entropy(self.scale * cos, target)


def world_cnn_losses(model: WorldCNN, head: CosFaceHead, x: torch.Tensor, pid: torch.Tensor,
                     attr_target: torch.Tensor, trait_target: torch.Tensor, cfg: WorldCNNConfig,
                     amp: bool = False) -> dict[str, torch.Tensor]:
    """The training objective on one batch ``x [B, 3, 64, 64]``: ``{"id", "attr", "trait", "total"}``.

    CosFace over the person ids ``pid [B]`` on the identity embedding, MSE on the standardised
    attributes ``[B, 7]``, ``trait_weight`` x MSE on the identity traits ``[B, 20]``. ``amp``: the
    network's forward under bf16 autocast (``shared.cpu_amp``); the head and the losses run in
    float32 either way (the CosFace logits are scaled by 16: bf16 would round them by 0.06)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        emb, attr, trait = model(x)
    loss_id = head(emb.float(), pid)
    loss_attr = F.mse_loss(attr.float(), attr_target)
    loss_trait = F.mse_loss(trait.float(), trait_target)
    total = loss_id + cfg.attr_weight * loss_attr + cfg.trait_weight * loss_trait
    return {"id": loss_id, "attr": loss_attr, "trait": loss_trait, "total": total}


# --------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------

def save_world_cnn(model: WorldCNN, path: str | os.PathLike, config: WorldCNNConfig | None = None,
                   metrics: dict | None = None, history: list[dict] | None = None) -> Path:
    """Write ``{'config', 'state_dict', 'metrics', 'history'}`` atomically (:func:`clcae.io.save_torch`).

    ``history`` is the per-step loss curve (kept in the checkpoint, not in the metrics, so a
    metrics file stays small)."""
    path = Path(path)
    cfg = dataclasses.asdict(config) if config is not None else {}
    cfg.update(widths=list(model.widths), emb_dim=model.emb_dim)
    blob = {"config": cfg, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "metrics": dict(metrics or {}), "history": list(history or [])}
    save_torch(blob, path)
    return path


def load_world_cnn(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                   trust: bool | None = None) -> WorldCNN:
    """Load a frozen model in eval mode; errors name the file and what is wrong with it.

    Read weights-only by :func:`clcae.io.read_checkpoint` (``trust`` as there); a bad file raises
    its ``CheckpointError`` (a ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: world CNN checkpoint not found (run the world stage)")
    blob = read_checkpoint(path, trust=trust, map_location=map_location)
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: world CNN checkpoint must be a dict, got {type(blob).__name__}")
    missing = [k for k in ("config", "state_dict") if k not in blob]
    if missing:
        raise KeyError(f"{path}: world CNN checkpoint lacks key(s) {missing} "
                       f"(has {sorted(blob)})")
    cfg = blob["config"]
    for key in ("widths", "emb_dim"):
        if key not in cfg:
            raise KeyError(f"{path}: world CNN checkpoint config lacks {key!r}")
    model = WorldCNN(widths=tuple(cfg["widths"]), emb_dim=int(cfg["emb_dim"]))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: state_dict does not fit WorldCNN{tuple(cfg['widths'])}: {e}") from e
    model.eval().requires_grad_(False)
    model.checkpoint_config = dict(cfg)            # type: ignore[attr-defined]
    model.checkpoint_metrics = dict(blob.get("metrics", {}))  # type: ignore[attr-defined]
    model.checkpoint_history = list(blob.get("history", []))  # type: ignore[attr-defined]
    return model


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def embed(model: WorldCNN, images: torch.Tensor, batch_size: int = 500
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity embeddings and attribute predictions for uint8 or [-1, 1] images."""
    was_training = model.training
    model.eval()
    ids, attrs = [], []
    for i in range(0, images.shape[0], batch_size):
        x = to_float(images[i:i + batch_size])
        z = model.neck(model._trunk(x))
        ids.append(F.normalize(model.id_head(z), dim=1))
        attrs.append(model.attr_head(z) * model.attr_std + model.attr_mean)
    model.train(was_training)
    return torch.cat(ids), torch.cat(attrs)


def evaluate(model: WorldCNN, images: torch.Tensor, labels: torch.Tensor, person_id: torch.Tensor,
             seed: int = 0) -> dict:
    """R^2 per attribute, identity verification accuracy and blur shift on one held-out set."""
    emb, pred = embed(model, images)
    return {"attr_r2": attribute_r2(pred, labels, pf.ATTRIBUTES),
            "verification_acc": verification_accuracy(emb, person_id, seed=seed),
            "blur_shift": blur_shift(model, images, pred)}


BLUR_CHECK_SIGMA = 0.5  # px at 64: about what a good 64-px generator or encoder loses


def blur_shift(model: WorldCNN, images: torch.Tensor, pred: torch.Tensor | None = None) -> dict[str, float]:
    """Mean attribute readout change, in label stds, when the images are blurred by
    ``BLUR_CHECK_SIGMA``. An attribute classifier that reads softness as an attribute (less
    smile, paler lips) biases every score of a blurry reconstruction or sample, and as a
    generator's teacher it makes G exaggerate those attributes to compensate."""
    if pred is None:
        pred = embed(model, images)[1]
    soft = gaussian_blur(to_float(images), torch.full((images.shape[0],), BLUR_CHECK_SIGMA))
    shift = ((embed(model, soft)[1] - pred) / model.attr_std).mean(0)
    return dict(zip(pf.ATTRIBUTES, shift.tolist()))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def _render_people(u: torch.Tensor, details: dict | None, batch: int) -> torch.Tensor:
    """Render latents to uint8 images [N, 3, 64, 64] in batches."""
    out = torch.empty(u.shape[0], 3, INPUT_SIZE, INPUT_SIZE, dtype=torch.uint8)
    for i in range(0, u.shape[0], batch):
        sl = slice(i, i + batch)
        d = None if details is None else {k: v[sl] for k, v in details.items()}
        out[sl] = to_uint8(pf.render(pf.decode(u[sl]), size=INPUT_SIZE, details=d))
    return out


def identity_traits(u: torch.Tensor) -> torch.Tensor:
    """Standardised identity traits ``[N, 20]``: Phi(u) of the identity dims, unit variance."""
    return (torch.special.ndtr(u[:, list(pf.IDENTITY_DIMS)]) - 0.5) * math.sqrt(12.0)


def with_seed(cfg: WorldCNNConfig, seed: int = 0) -> WorldCNNConfig:
    """``cfg`` with ``seed`` where its own is None (the world stage passes shared.seed)."""
    return cfg if cfg.seed is not None else dataclasses.replace(cfg, seed=seed)


def make_datasets(cfg: WorldCNNConfig) -> dict[str, tuple[torch.Tensor, ...]]:
    """Renders for training and evaluation: ``{name: (images uint8, labels, person_id, u)}``.

    "train": ``n_people x per_person`` images, details on a ``detail_prob`` share of them;
    "heldout": the next ``eval_people`` identities of the same train-split stream (no details);
    "test": ``eval_people`` test-split identities with details on.
    """
    cfg = with_seed(cfg)
    n_train = cfg.n_people * cfg.per_person
    u, pid = pf.sample_split("train", cfg.n_people + cfg.eval_people, cfg.per_person, cfg.seed)
    g = torch.Generator().manual_seed(pf.derive_seed(cfg.seed, "world_cnn", "details"))
    details = pf.sample_details(n_train, g, p=cfg.detail_prob)
    held = (pid >= cfg.n_people) & ((torch.arange(len(pid)) % cfg.per_person) < cfg.eval_per_person)
    u_tr, pid_tr = u[:n_train], pid[:n_train]
    u_ho, pid_ho = u[held], pid[held]
    test_imgs, u_te, pid_te, lab_te = pf.render_split("test", cfg.eval_people, cfg.eval_per_person,
                                                      cfg.seed, batch_size=cfg.render_batch)
    return {
        "train": (_render_people(u_tr, details, cfg.render_batch),
                  pf.attribute_labels(pf.decode(u_tr)), pid_tr, u_tr),
        "heldout": (_render_people(u_ho, None, cfg.render_batch),
                    pf.attribute_labels(pf.decode(u_ho)), pid_ho, u_ho),
        "test": (test_imgs, lab_te, pid_te, u_te),
    }


def _lr_at(step: int, cfg: WorldCNNConfig) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps (at least one), then cosine decay to 0."""
    return lr_at(step, cfg.lr, max(1, int(cfg.warmup_frac * cfg.steps)), cfg.steps)


def train_world_cnn(cfg: WorldCNNConfig | dict | None = None, out_path: str | os.PathLike | None = None,
                    progress: bool = True, data: dict | None = None, cpu_amp: bool = False) -> dict:
    """Render data, train with AdamW on CPU, evaluate, save to ``out_path``; return metrics.

    Losses: CosFace over person ids on the identity embedding, MSE on standardised attributes,
    auxiliary MSE on the identity traits. Metrics: per-attribute R^2 and identity verification
    accuracy on held-out people of the train split (no details) and of the test split (details
    on), losses, timings. ``data`` (from :func:`make_datasets` with the same cfg) skips rendering.
    ``cpu_amp``: the forward under bf16 autocast (``shared.cpu_amp``; :func:`world_cnn_losses`).
    """
    if cfg is None:
        cfg = WorldCNNConfig()
    elif isinstance(cfg, dict):
        cfg = WorldCNNConfig.from_dict(cfg)
    cfg = with_seed(cfg)
    log = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if data is None:
        data = make_datasets(cfg)
    t_render = time.perf_counter() - t0
    images, labels, pid, u = data["train"]
    if images.shape[0] != cfg.n_people * cfg.per_person:
        raise ValueError(f"train data has {images.shape[0]} images, config wants "
                         f"{cfg.n_people} x {cfg.per_person}")
    traits = identity_traits(u)  # [N, 20]
    log(f"[world_cnn] rendered {images.shape[0]} train + {data['heldout'][0].shape[0]} held-out + "
        f"{data['test'][0].shape[0]} test images in {t_render:.1f} s")

    model = WorldCNN(cfg.widths, cfg.emb_dim)
    model.attr_mean.copy_(labels.mean(0))
    model.attr_std.copy_(labels.std(0).clamp_min(1e-3))
    targets = (labels - model.attr_mean) / model.attr_std  # [N, 7] standardised
    model = model.to(memory_format=torch.channels_last)
    head = CosFaceHead(cfg.emb_dim, cfg.n_people, cfg.margin, cfg.scale)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[world_cnn] {n_params / 1e6:.2f}M parameters, {cfg.steps} steps of {cfg.batch_size}")

    g = torch.Generator().manual_seed(pf.derive_seed(cfg.seed, "world_cnn", "batches"))
    g_blur = torch.Generator().manual_seed(pf.derive_seed(cfg.seed, "world_cnn", "blur"))
    order = torch.randperm(images.shape[0], generator=g)
    pos = 0
    history: list[dict] = []
    t1 = time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        if pos + cfg.batch_size > len(order):
            order, pos = torch.randperm(images.shape[0], generator=g), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        x = to_float(images[idx])  # [B, 3, 64, 64]
        if cfg.blur_prob > 0:
            blurred = torch.rand(len(idx), generator=g_blur) < cfg.blur_prob
            x = gaussian_blur(x, torch.rand(len(idx), generator=g_blur) * cfg.blur_sigma * blurred)
        x = x.contiguous(memory_format=torch.channels_last)
        set_lr(opt, _lr_at(step, cfg))
        losses = world_cnn_losses(model, head, x, pid[idx], targets[idx], traits[idx], cfg, amp=cpu_amp)
        check_finite(losses, step, "world CNN")
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        row = {"step": step, **{f"loss_{k}": losses[k].item() for k in ("id", "attr", "trait")}}
        history.append(row)
        if progress and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            rate = (step + 1) * cfg.batch_size / (time.perf_counter() - t1)
            log(f"[world_cnn] step {step:4d}  id {row['loss_id']:.3f}  attr {row['loss_attr']:.4f}  "
                f"trait {row['loss_trait']:.4f}  lr {_lr_at(step, cfg):.1e}  {rate:.0f} img/s")
    t_train = time.perf_counter() - t1

    model.eval()
    metrics = {
        "heldout_train_split": evaluate(model, *data["heldout"][:3], seed=cfg.seed),
        "test_split": evaluate(model, *data["test"][:3], seed=cfg.seed),
        "final_loss_id": float(np.mean([h["loss_id"] for h in history[-20:]])),
        "final_loss_attr": float(np.mean([h["loss_attr"] for h in history[-20:]])),
        "first_loss_attr": float(np.mean([h["loss_attr"] for h in history[:5]])),
        "n_params": int(n_params),
        "cpu_amp": bool(cpu_amp),
        "render_s": round(t_render, 2),
        "train_s": round(t_train, 2),
        "total_s": round(time.perf_counter() - t0, 2),
    }
    for name in ("heldout_train_split", "test_split"):
        m = metrics[name]
        r2 = "  ".join(f"{k} {v:.3f}" for k, v in m["attr_r2"].items())
        log(f"[world_cnn] {name}: verification {m['verification_acc']:.4f}  R2 {r2}")
    model = model.to(memory_format=torch.contiguous_format)
    if out_path is not None:
        save_world_cnn(model, out_path, cfg, metrics, history=history)
    return metrics
