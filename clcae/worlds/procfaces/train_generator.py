"""Train the procfaces world's small StyleGAN2: regression warm-up, then an adversarial phase.

Regression first: ProcFaces renders every image from a standard-normal latent ``u``, so a
generator that maps ``z -> render(decode(u(z)))`` has, by construction, the renderer's
distribution of faces and attributes, and it trains stably from scratch. We use
``u = PixelNorm(z)[:, :LATENT_DIM]`` (the mapping network sees only the normalised z, so u
must be a function of it; for style_dim >> LATENT_DIM these coordinates are close to
standard normal). The loss is L1 at two scales plus an extra L1 on the eyes and mouth boxes.

An L1 fit blurs what it cannot fit exactly and shrinks extreme attributes (wide smiles, red
lips) towards the mean, so a second phase trains G against a StyleGAN2 discriminator
(non-saturating loss, lazy R1, EMA of G), keeping a weighted regression term that anchors
each z to its render (no mode collapse, and z keeps meaning u).

Run: ``make world-generator`` (the committed generator's flags: 110 minutes of regression on the
2-core CPU, no adversarial phase) or ``python -m clcae.worlds.procfaces.train_generator --out
assets/procfaces/generator.pt ...`` (seeded). ``<out>.state.pt`` is the resume point
(:mod:`clcae.training`): an interrupted run (SIGINT / SIGTERM save it) continues, in either phase,
when its config and code are the same; a finished run is continued only when its budget grew
(steps, minutes, an adversarial phase), so the same command again starts from scratch.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clcae.config import WorldCNNConfig
from clcae.errors import ClcaeError
from clcae.images import gaussian_blur
from clcae.io import save_image_grid, save_json
from clcae.metrics.psnr import batch_psnr
from clcae.nets.stylegan2 import (
    ROSINALITY_LR_MLP,
    Discriminator,
    Generator,
    estimate_latent_avg,
    load_generator,
    rosinality_state_dict,
    save_generator,
)
from clcae.seeding import seeded_generator
from clcae.steps import check_finite, lr_at, set_lr
from clcae.training import PROJECT_ROOT, ResumePoint, StopOnSignal, code_signature
from clcae.worlds.procfaces import procfaces
from clcae.worlds.procfaces.quality import generator_quality, sample_images, train_images
from clcae.worlds.procfaces.world_cnn import WorldCNN, feature_distance, load_world_cnn, train_world_cnn


@dataclass
class GeneratorTrainConfig:
    size: int = 64
    style_dim: int = 128
    n_mlp: int = 4
    channels: dict[int, int] = field(default_factory=lambda: {4: 128, 8: 128, 16: 128, 32: 64, 64: 32})
    lr_mlp: float = 1.0  # 0.01 barely moves the mapping in a regression (see DESIGN.md)
    steps: int = 20_000
    batch_size: int = 64
    lr: float = 2e-3
    lr_final: float = 5e-5  # cosine decay target
    parts_weight: float = 4.0  # extra L1 weight inside the eye and mouth boxes
    edge_weight: float = 0.0  # L1 of the high-pass residuals (image minus its 1-px blur): sharpness
    ema_beta: float = 0.998
    seed: int = 0
    max_minutes: float = 0.0  # > 0: end the regression phase after this much wall time
    # adversarial phase (after the regression): sharpens what an L1 fit blurs and restores
    # the attribute spread that regression shrinks towards the mean
    gan_steps: int = 0  # 0: regression only
    gan_minutes: float = 0.0  # > 0: end the adversarial phase after this much wall time
    gan_lr: float = 1e-3
    r1_gamma: float = 0.5
    r1_every: int = 16  # lazy R1 (StyleGAN2)
    gan_reg_weight: float = 1.0  # regression term kept during the adversarial phase (anchors z -> u)
    gan_ema_beta: float = 0.998
    # teacher losses through a world CNN trained with another seed than the world stage's
    # (which judges the generator): pixel L1 alone averages away the mouth (smile, lip colour)
    perceptual_weight: float = 2.0  # world-CNN feature distance to the render
    attribute_weight: float = 5.0  # L1 of the world CNN's attribute readout vs the exact labels
    teacher_seed: int = 1
    # an ensemble (seeds teacher_seed, teacher_seed + 1, ...), averaged: with one teacher G learns
    # its quirks (the seed-1 CNN read lip colour right on samples that two others read too pale)
    n_teachers: int = 2
    # > 0: the perceptual term goes through this many world CNNs trained without blur
    # augmentation (seeds teacher_seed, ...): their features see softness, so they pay G for
    # sharpness, while the attribute term stays with the blur-robust teachers, which softness
    # cannot fool. 0: both terms through the blur-robust teachers
    sharp_teachers: int = 0
    # "bf16": G's and the teachers' forward passes under bfloat16 autocast (losses, weights and
    # optimiser stay float32); x1.3 faster steps on the 2-core CPU (AMX). "fp32": float32 throughout
    amp: str = "fp32"
    # torch.compile the renderer of the targets and the regression step's forward (G and the
    # losses): fuses the many small element-wise ops; with bf16, x2.75 on the 2-core CPU, after
    # about a minute of compiling (figures: benchmarks/generator_training.py)
    compile: bool = False

    def __post_init__(self):
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"amp={self.amp!r}: expected one of {sorted(AMP_DTYPES)}")


# a resumed run may train longer, or at another precision
BUDGET = ("steps", "max_minutes", "gan_steps", "gan_minutes")
RESUMABLE_CHANGES = (*BUDGET, "amp", "compile")
# the code a resume point must share with the run (relative to the project root)
CODE = ("clcae/worlds/procfaces", "clcae/nets/stylegan2.py", "clcae/images.py", "clcae/training.py",
        "clcae/metrics/psnr.py")
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def autocast(cfg: GeneratorTrainConfig, device: torch.device):
    """The forward-pass precision context of ``cfg.amp``."""
    dtype = AMP_DTYPES[cfg.amp]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def renderer_latent(z: torch.Tensor) -> torch.Tensor:
    """The ProcFaces latent u that the generator's input z stands for: [B, LATENT_DIM]."""
    zn = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
    return zn[:, :procfaces.LATENT_DIM]


class RenderedBatch(NamedTuple):
    target: torch.Tensor  # [B, 3, S, S] the renders of u(z), in [-1, 1]
    mask: torch.Tensor  # [B, 1, S, S] eye and mouth boxes
    labels: torch.Tensor  # [B, 7] exact attribute labels (procfaces.ATTRIBUTES order)


def regression_batch(z: torch.Tensor, size: int) -> RenderedBatch:
    """What G(z) should be: the render of u(z), its eye/mouth mask and attribute labels.

    Rendered on z's device (the renderer's constants follow the default-device context).
    """
    with torch.device(z.device):
        params = procfaces.decode(renderer_latent(z).contiguous())
        return RenderedBatch(procfaces.render(params, size=size), procfaces.region_mask(params, size=size),
                             procfaces.attribute_labels(params))


def high_pass(images: torch.Tensor) -> torch.Tensor:
    """What a 1-px Gaussian blur removes: edges and fine detail. [N, C, H, W] -> same."""
    return images - gaussian_blur(images, images.new_ones(len(images)))


def regression_loss(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, parts_weight: float,
                    edge_weight: float = 0.0):
    """L1 at full and half resolution, extra L1 in the eye/mouth boxes, [edge L1 of the high-pass].

    An under-fitted L1 regression is soft; the world CNN's linear probe tells a 0.6-px blur of
    real images from the images themselves with 80% accuracy, so the edge term pays for sharpness.
    """
    l1 = (image - target).abs()
    loss = l1.mean() + F.l1_loss(F.avg_pool2d(image, 2), F.avg_pool2d(target, 2))
    if edge_weight:
        loss = loss + edge_weight * F.l1_loss(high_pass(image), high_pass(target))
    return loss + parts_weight * (l1 * mask).sum() / (mask.sum() * 3 + 1)


class GeneratorLoss:
    """Pixel regression [+ teacher perceptual distance] [+ teacher attribute readout error].

    Teachers are world CNNs (eval mode, frozen); with several, each term is their mean.
    Attribute errors are measured in units of each teacher's label std, so every attribute
    weighs the same. ``sharp_teachers``, when given, take over the perceptual term.
    """

    def __init__(self, cfg: GeneratorTrainConfig, teachers: list[WorldCNN] = (),
                 sharp_teachers: list[WorldCNN] = ()):
        if not teachers and (cfg.perceptual_weight or cfg.attribute_weight):
            raise ValueError("perceptual_weight / attribute_weight need a teacher world CNN")
        self.cfg, self.teachers, self.sharp_teachers = cfg, list(teachers), list(sharp_teachers)

    def __call__(self, image: torch.Tensor, batch: RenderedBatch) -> tuple[torch.Tensor, dict]:
        """``(loss, logs)``; logs are detached 0-d tensors (no host sync per step)."""
        cfg = self.cfg
        loss = regression_loss(image, batch.target, batch.mask, cfg.parts_weight, cfg.edge_weight)
        logs = {"loss": loss.detach()}
        if not self.teachers:
            return loss, logs
        perceptual, attribute = [], []
        image = image.contiguous(memory_format=torch.channels_last)  # teachers are channels_last
        target = batch.target.contiguous(memory_format=torch.channels_last)
        perceptual_teachers = self.sharp_teachers or self.teachers
        for t in dict.fromkeys(self.teachers + perceptual_teachers):  # one differentiable pass serves both terms
            feats = t.features(image)
            if cfg.perceptual_weight and t in perceptual_teachers:
                with torch.no_grad():
                    target_feats = t.features(target)
                perceptual.append(feature_distance(feats, target_feats).mean())
            if cfg.attribute_weight and t in self.teachers:
                attribute.append(((t.attributes_from_trunk(feats[-1]) - batch.labels).abs() / t.attr_std).mean())
        for name, weight, terms in (("perceptual", cfg.perceptual_weight, perceptual),
                                    ("attribute", cfg.attribute_weight, attribute)):
            if weight:
                term = torch.stack(terms).mean()
                loss = loss + weight * term
                logs[name] = term.detach()
        return loss, logs


@torch.inference_mode()
def readout_bias(G, cnns: dict[str, WorldCNN], z: torch.Tensor, batch_size: int = 250) -> dict:
    """Paired attribute bias: mean of cnn(G(z)) - cnn(render of u(z)) per attribute, in units of
    each CNN's label std. A generator that satisfies its teachers through their quirks shows a
    bias through the judge (and other seeds) but none through the teachers."""
    diffs = {name: [] for name in cnns}
    for chunk in z.split(batch_size):
        target = regression_batch(chunk, G.size).target
        image = G(chunk, noise_mode="const").clamp(-1, 1)
        for name, cnn in cnns.items():
            diffs[name].append((cnn.attributes(image) - cnn.attributes(target)) / cnn.attr_std)
    return {name: dict(zip(procfaces.ATTRIBUTES, torch.cat(d).mean(0).tolist())) for name, d in diffs.items()}


def build_generator(cfg: GeneratorTrainConfig) -> Generator:
    return Generator(cfg.size, cfg.style_dim, cfg.n_mlp, channels=cfg.channels, lr_mlp=cfg.lr_mlp)


def init_from_checkpoint(G: Generator, path: str) -> None:
    """Start from a saved generator (fine-tuning), converting its lr_mlp storage scale."""
    state = rosinality_state_dict(load_generator(path))  # mapping stored at lr_mlp = 0.01
    for i in range(1, G.n_mlp + 1):
        for kind in ("weight", "bias"):
            state[f"style.{i}.{kind}"] = state[f"style.{i}.{kind}"] * (ROSINALITY_LR_MLP / G.lr_mlp)
    missing, unexpected = G.load_state_dict(state, strict=False)
    if [k for k in missing if k != "latent_avg"] or unexpected:
        raise ValueError(f"{path}: generator does not match the training config: missing {missing}, "
                         f"unexpected {unexpected}")


class TrainState:
    """Everything a run needs to resume: both networks, optimisers, phase, step and RNGs."""

    def __init__(self, cfg: GeneratorTrainConfig, device: torch.device, init: str | None,
                 teachers: list[WorldCNN] = (), sharp_teachers: list[WorldCNN] = ()):
        self.loss_fn = GeneratorLoss(cfg, teachers, sharp_teachers)
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        G = build_generator(cfg)
        if init:
            init_from_checkpoint(G, init)
        self.G = G.to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.D = Discriminator(cfg.size, channels=cfg.channels).to(device)
        self.opt_D = None  # made when the adversarial phase starts
        self.phase, self.step, self.elapsed = "regression", 0, 0.0
        self.history: list[dict] = []  # one row per log interval, kept across resumes
        self.data_rng = seeded_generator(cfg.seed, "generator", "data")
        self.cfg = cfg
        self.render, self.regression_forward = regression_batch, self.forward_loss
        if cfg.compile:
            # the renderer is hundreds of small element-wise ops: fused, it costs a fraction. On a
            # GPU the step is launch-bound (thousands of small kernels), so the forward also
            # replays as CUDA graphs ("reduce-overhead"); the CPU has no graphs to replay
            self.render = torch.compile(regression_batch)
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self.regression_forward = torch.compile(self.forward_loss, mode=mode)

    def forward_loss(self, z: torch.Tensor, batch: RenderedBatch) -> tuple[torch.Tensor, dict]:
        """G's image of z (random noise inputs) and its regression and teacher losses."""
        with autocast(self.cfg, z.device):
            return self.loss_fn(self.G(z, noise_mode="random").float(), batch)

    def start_adversarial(self) -> None:
        """Adversarial phase: G restarts from the EMA weights, with GAN Adam betas (0, 0.99)."""
        cfg = self.cfg
        self.G.load_state_dict(self.G_ema.state_dict())
        self.opt = torch.optim.Adam(self.G.parameters(), lr=cfg.gan_lr, betas=(0.0, 0.99))
        # lazy R1: D's optimiser is rescaled as in StyleGAN2, so the penalty every k steps
        # acts like one every step
        ratio = cfg.r1_every / (cfg.r1_every + 1)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.gan_lr * ratio, betas=(0.0, 0.99 ** ratio))
        self.phase, self.step, self.elapsed = "adversarial", 0, 0.0

    def save(self, point: ResumePoint, complete: bool = False) -> None:
        point.save({"config": dataclasses.asdict(self.cfg), "phase": self.phase, "step": self.step,
                    "elapsed": self.elapsed, "history": self.history,
                    "G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(),
                    "D": self.D.state_dict(), "opt": self.opt.state_dict(),
                    "opt_D": self.opt_D.state_dict() if self.opt_D else None,
                    "rng": torch.get_rng_state(), "data_rng": self.data_rng.get_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None},
                   complete=complete)

    def load(self, s: dict) -> None:
        """Continue from a saved state (:func:`resume_point` checked its config and code)."""
        # on the CPU: load_state_dict copies to the modules' device; RNG states must stay here
        if s.get("phase") == "adversarial":
            self.start_adversarial()
            self.opt_D.load_state_dict(s["opt_D"])
        self.G.load_state_dict(s["G"]), self.G_ema.load_state_dict(s["G_ema"]), self.D.load_state_dict(s["D"])
        self.opt.load_state_dict(s["opt"])
        self.phase, self.step, self.elapsed = s["phase"], s["step"], s["elapsed"]
        self.history = s.get("history", [])  # states saved before history was kept have none
        torch.set_rng_state(s["rng"])
        self.data_rng.set_state(s["data_rng"])
        if self.device.type == "cuda" and s.get("cuda_rng") is not None:  # the noise inputs' RNG
            torch.cuda.set_rng_state(s["cuda_rng"])

    @torch.no_grad()
    def update_ema(self, beta: float) -> None:
        """G_ema <- beta * G_ema + (1 - beta) * G, as one multi-tensor op (not a launch per tensor)."""
        torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()), 1 - beta)


def resume_point(cfg: GeneratorTrainConfig, out: str) -> ResumePoint:
    """``<out>.state.pt``, valid for runs of the same config (less :data:`RESUMABLE_CHANGES`) and code."""
    return ResumePoint(f"{out}.state.pt", {
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES},
        "code": code_signature(CODE, PROJECT_ROOT)})


def finite_logs(logs: dict, phase: str, step: int) -> dict:
    """Step logs as floats; a non-finite one stops training before its state is saved (the
    last saved state stays good to resume from)."""
    logs = {k: float(v) for k, v in logs.items()}
    check_finite(logs, step, f"generator {phase}")
    return logs


def adversarial_losses(D: Discriminator, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic D loss: softplus(D(fake)) + softplus(-D(real))."""
    return F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()


def r1_penalty(D: Discriminator, real: torch.Tensor) -> torch.Tensor:
    """Mean squared norm of dD/dx on real images (Mescheder et al. 2018)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
    return grad.pow(2).sum(dim=(1, 2, 3)).mean()


def regression_step(st: TrainState, z: torch.Tensor, batch: RenderedBatch, progress: float) -> dict:
    cfg = st.cfg
    set_lr(st.opt, lr_at(progress, cfg.lr, 0, 1.0, cfg.lr_final / cfg.lr))  # cosine over progress in [0, 1]
    loss, logs = st.regression_forward(z, batch)
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    st.opt.step()
    st.update_ema(min(cfg.ema_beta, (1 + st.step) / (10 + st.step)))  # EMA warm-up
    return logs


def adversarial_step(st: TrainState, z: torch.Tensor, batch: RenderedBatch) -> dict:
    """One D step (R1 every ``r1_every``), then one G step: adversarial + anchoring regression.

    The renders of z serve both as D's real batch and as G's regression targets; one G
    forward per step serves both updates.
    """
    cfg, G, D = st.cfg, st.G, st.D
    real = batch.target
    with autocast(cfg, z.device):  # R1 (a double backward) stays float32
        fake = G(z, noise_mode="random").float()
        d_loss = adversarial_losses(D, fake.detach(), real).float()
    st.opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    st.opt_D.step()
    logs = {"d_loss": d_loss.detach()}
    if st.step % cfg.r1_every == 0:
        r1 = r1_penalty(D, real)
        st.opt_D.zero_grad(set_to_none=True)
        (cfg.r1_gamma / 2 * r1 * cfg.r1_every).backward()
        st.opt_D.step()
        logs["r1"] = r1.detach()
    D.requires_grad_(False)
    with autocast(cfg, z.device):
        g_adv = F.softplus(-D(fake)).float().mean()
        g_reg, reg_logs = st.loss_fn(fake, batch)
    loss = g_adv + cfg.gan_reg_weight * g_reg
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    st.opt.step()
    D.requires_grad_(True)
    st.update_ema(cfg.gan_ema_beta)
    return {**logs, "g_adv": g_adv.detach(), **reg_logs}


def teacher_path(out: str, seed: int, sharp: bool = False) -> str:
    return f"{out}.{'sharp-' if sharp else ''}teacher-seed{seed}.pt"


def load_teachers(cfg: GeneratorTrainConfig, paths: list[str] | None, out: str, device: torch.device,
                  progress: bool, sharp: bool = False) -> tuple[list[WorldCNN], list[str]]:
    """The frozen world CNNs of the teacher losses. Explicit ``paths`` must exist (one per
    teacher); by default teacher k is trained (seed ``teacher_seed + k``, about 3 CPU minutes
    each) into ``<out>.teacher-seed<seed>.pt`` on first use. ``sharp``: the ``sharp_teachers``
    of the perceptual term instead, trained without blur augmentation into
    ``<out>.sharp-teacher-seed<seed>.pt``."""
    count, name = (cfg.sharp_teachers, "sharp_teachers") if sharp else (cfg.n_teachers, "n_teachers")
    needed = cfg.perceptual_weight if sharp else (cfg.perceptual_weight or cfg.attribute_weight)
    if not (needed and count):
        return [], []
    if paths:
        if len(paths) != count:
            raise ValueError(f"{len(paths)} teacher paths given for {name}={count}: {paths}")
    else:
        paths = [teacher_path(out, cfg.teacher_seed + k, sharp) for k in range(count)]
        for k, path in enumerate(paths):
            if not os.path.exists(path):
                blur = {"blur_prob": 0.0} if sharp else {}
                train_world_cnn(WorldCNNConfig(seed=cfg.teacher_seed + k, **blur), path, progress=progress)
    # eval mode, frozen; channels_last: 1.7x faster teacher passes on CPU
    return [load_world_cnn(path).to(device, memory_format=torch.channels_last) for path in paths], list(paths)


def describe_teacher(path: str, model: WorldCNN) -> dict:
    """What the figures record of a teacher: its seed, blur augmentation and held-out metrics
    (read from the checkpoint when :func:`load_world_cnn` loaded it)."""
    cfg, metrics = model.checkpoint_config, model.checkpoint_metrics
    return {"path": str(path), "seed": cfg.get("seed"), "steps": cfg.get("steps"),
            "blur_prob": cfg.get("blur_prob", 0.0),  # checkpoints from before the field: none
            "test_split": metrics.get("test_split")}


def train(cfg: GeneratorTrainConfig, out: str, device: str = "cpu", progress: bool = True,
          init: str | None = None, world_cnn: str | None = None, teachers: list[str] | None = None,
          sharp_teachers: list[str] | None = None) -> dict:
    """Train (or resume) and write ``out`` (rosinality layout), ``<out>.json`` (figures) and
    ``<out>.samples.png`` (an 8x8 grid).

    Two phases: ``steps`` regression steps (or ``max_minutes``), then ``gan_steps``
    adversarial steps (or ``gan_minutes``). ``init``: a generator checkpoint to start from
    instead of a random init. ``world_cnn``: the world stage's CNN; adds the quality figures
    of :mod:`clcae.worlds.procfaces.quality`. ``teachers``: world CNN checkpoints of the teacher losses
    and ``sharp_teachers``: of the perceptual term when ``cfg.sharp_teachers`` (see
    :func:`load_teachers`).
    """
    device = torch.device(device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if cfg.compile:
        # a backend that cannot compile (no C compiler, an old Triton) warns and runs eagerly
        # instead of ending a run that the compile was only meant to speed up (set here, not in
        # TrainState, so that the tests of the compiled functions see compile errors)
        torch._dynamo.config.suppress_errors = True
    teacher_models, teacher_paths = load_teachers(cfg, teachers, out, device, progress)
    sharp_models, sharp_paths = load_teachers(cfg, sharp_teachers, out, device, progress, sharp=True)
    st = TrainState(cfg, device, init, teacher_models, sharp_models)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    point = resume_point(cfg, out)
    state = point.load(allow_complete=True, strict=True)  # an interrupted run of other inputs raises
    if state is not None and state["complete"] and all(state["config"][k] == getattr(cfg, k) for k in BUDGET):
        print(f"{point.path}: a finished run with this budget; starting from scratch", flush=True)
        state = None
    if state is not None:
        st.load(state)
    z_val = torch.randn(256, cfg.style_dim, generator=seeded_generator(cfg.seed, "generator", "validation")).to(device)
    target_val = regression_batch(z_val, cfg.size).target
    history = st.history
    t_total = time.time()
    budgets = {"regression": (cfg.steps, cfg.max_minutes), "adversarial": (cfg.gan_steps, cfg.gan_minutes)}
    with StopOnSignal(device) as stop:
        while True:  # the phase a fresh or resumed run is in, then (maybe) the adversarial one
            phase = st.phase
            steps, minutes = budgets[phase]
            start = time.time() - st.elapsed
            bar = tqdm(total=steps, initial=st.step, disable=not progress, desc=f"generator ({phase})")
            while st.step < steps:
                done = max(st.step / steps, (time.time() - start) / (minutes * 60) if minutes > 0 else 0.0)
                z = torch.randn(cfg.batch_size, cfg.style_dim, generator=st.data_rng).to(device)
                batch = st.render(z, cfg.size)
                if phase == "regression":
                    logs = regression_step(st, z, batch, done)
                else:
                    logs = adversarial_step(st, z, batch)
                st.step += 1
                bar.update(1)
                timeout = minutes > 0 and time.time() - start > minutes * 60
                if st.step % 500 == 0 or st.step == steps or timeout:
                    logs = finite_logs(logs, phase, st.step)  # the one host sync per log interval
                    with torch.no_grad():
                        val = batch_psnr(st.G_ema(z_val, noise_mode="const"), target_val)
                    history.append({"phase": phase, "step": st.step, **logs, "val_psnr": val,
                                    "lr": st.opt.param_groups[0]["lr"], "minutes": (time.time() - start) / 60})
                    if not progress:
                        print(json.dumps(history[-1]), flush=True)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", psnr=f"{val:.2f}")
                    st.elapsed = time.time() - start
                    st.save(point)
                elif stop.requested():
                    finite_logs(logs, phase, st.step)  # never save a diverged state
                    st.elapsed = time.time() - start
                    st.save(point)
                if stop.requested():
                    raise stop.interrupted(f"generator training ({phase})", st.step, point.path)
                if timeout:
                    break
            bar.close()
            if phase == "adversarial" or cfg.gan_steps == 0:
                break
            st.start_adversarial()
            st.save(point)
    G_ema = st.G_ema
    G_ema.latent_avg.copy_(estimate_latent_avg(G_ema))
    save_generator(G_ema.cpu(), out)
    G_ema.to(device)
    with torch.no_grad():
        val = batch_psnr(G_ema(z_val, noise_mode="const"), target_val)
    figures = {"init": init, "phase": st.phase, "steps": st.step, "val_psnr_db": val,
               "train_minutes": (time.time() - t_total) / 60,  # this invocation (a resumed run: its last leg)
               "minutes_by_phase": {h["phase"]: h["minutes"] for h in history},  # wall time across resumes
               "device": str(device),
               "params": sum(p.numel() for p in st.G.parameters()),
               "config": dataclasses.asdict(cfg), "teachers": list(map(describe_teacher, teacher_paths, teacher_models)),
               "sharp_teachers": list(map(describe_teacher, sharp_paths, sharp_models)),
               "history": history}
    save_image_grid(sample_images(G_ema, 64, cfg.seed), f"{out}.samples.png")
    if world_cnn:
        judge = load_world_cnn(world_cnn).to(device)
        quality, _ = generator_quality(G_ema, judge, train_images(5000, cfg.seed), n=5000, seed=cfg.seed)
        z_bias = torch.randn(2000, cfg.style_dim, generator=seeded_generator(cfg.seed, "generator", "bias")).to(device)
        cnns = {"judge": judge, **{f"teacher_{k}": t for k, t in enumerate(st.loss_fn.teachers)},
                **{f"sharp_teacher_{k}": t for k, t in enumerate(st.loss_fn.sharp_teachers)}}
        quality["readout_bias"] = readout_bias(G_ema, cnns, z_bias)
        figures["quality"] = quality
    save_json(figures, f"{out}.json")
    st.save(point, complete=True)  # kept so that a larger budget can continue it; the same one restarts
    return figures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="assets/procfaces/generator.pt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quiet", action="store_true", help="no progress bar; print a JSON line per 500 steps")
    ap.add_argument("--init", default=None, help="fine-tune from this generator checkpoint")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--teacher", action="append", default=None,
                    help="world CNN of the teacher losses, once per teacher (default: trained into "
                         "<out>.teacher-seed<seed>.pt)")
    ap.add_argument("--sharp-teacher", action="append", default=None,
                    help="world CNN of the perceptual term with --sharp-teachers N, once per teacher "
                         "(default: trained without blur augmentation into <out>.sharp-teacher-seed<seed>.pt)")
    ap.add_argument("--world-cnn", default=None, help="world CNN checkpoint (data/world/world_cnn.pt) for the "
                                                      "quality figures")
    types = {"int": int, "float": float, "str": str, "bool": lambda s: bool(int(s))}  # bool: 0 or 1
    for f in dataclasses.fields(GeneratorTrainConfig):
        if f.type in types:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=types[f.type], default=None)
    args = ap.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(GeneratorTrainConfig)
                 if getattr(args, f.name, None) is not None}
    cfg = GeneratorTrainConfig(**overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        figures = train(cfg, args.out, args.device, progress=not args.quiet, init=args.init,
                        world_cnn=args.world_cnn, teachers=args.teacher, sharp_teachers=args.sharp_teacher)
    except ClcaeError as e:  # interrupted (resume point saved), or a resume point of other inputs
        print(f"{e.label}: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    print(json.dumps({k: v for k, v in figures.items() if k not in ("history", "config")}, indent=1))


if __name__ == "__main__":
    main()
