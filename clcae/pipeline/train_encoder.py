"""Stage `train_encoder@<variant>`: the CLCAE inversion encoder (CLCAE step 2) and its baselines.

The encoder (``clcae/nets/encoder.py``) maps an image to w, w+ and f; the generator is frozen
and renders I1 = G(w), I2 = G(w+) and I3 = G(w+, f) (f blended into the F layer while
training, see ``clcae/schedules.py``). The loss (``clcae/losses.py``) sums L2 + the world's
perceptual distance + identity over the three renders, plus the F regularisation and the
frozen aligner's L_align (train_aligner's, or the released contrastive models: ``aligner``). The judges come from :func:`clcae.worlds.load_world`: this module
does not know which world it runs in.

Variants (``train_encoder.variants``) are switch settings over ``train_encoder.common``: the
default pipeline trains ``clcae`` and the pSp-style baseline ``psp`` on the same data,
generator and step budget, each into ``<out_dir>/<variant>/`` and ``<report_dir>/<variant>/``.

Single process: ``python stages/train_encoder.py --variant clcae``. DDP:
``torchrun --nproc_per_node N stages/train_encoder.py --variant clcae`` (the global batch is
split over the ranks; the align loss gathers its negatives across ranks; BatchNorm statistics
are per rank, as in pSp; ``SyncBatchNorm`` on GPUs; each rank draws its own dropout masks). Resumes from ``<out_dir>/<variant>/.resume/``
when interrupted (SIGTERM / Ctrl-C save a resume point); a finished run removes it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from clcae.config import EncoderTrainConfig
from clcae.data import ImageSet, unreadable_files
from clcae.distributed import (
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
    is_main_process,
    replicas_identical,
)
from clcae.errors import ConfigError, InputError
from clcae.images import to_float, to_uint8
from clcae.inversion import average_image, invert, load_any_aligner, load_any_encoder, render
from clcae.io import file_sha256, load_state_strict, save_image_grid, save_json
from clcae.losses import AlignLoss, InversionLoss, InversionLossConfig
from clcae.nets.encoder import CLCAEEncoder, EncoderConfig, check_compatible, save_encoder
from clcae.nets.stylegan2 import load_generator
from clcae.optim import make_optimizer
from clcae.schedules import feature_blend
from clcae.scoring import score_reconstructions
from clcae.shards import ImageBatches, batch_loader
from clcae.spaces import SPACES
from clcae.steps import lr_at
from clcae.training import (
    BatchSchedule,
    EpochPlateau,
    Loop,
    ResumePoint,
    fit,
    restore,
    seed_rank_stream,
    stage_code_signature,
)
from clcae.worlds import World, load_world

RESUME_FILE = Path(".resume") / "state.pt"  # under <out_dir>/<variant>; untracked
SPEED_ONLY = ("loader_workers", "compile")  # settings a resumed run may change: how fast, not what


def encoder_config(cfg: EncoderTrainConfig, G, image_size: int) -> EncoderConfig:
    return EncoderConfig.from_generator(G, image_size, feature_layer=cfg.feature_layer,
                                        feature_insert=cfg.feature_insert, num_layers=cfg.num_layers,
                                        width=cfg.width, heads=cfg.heads, dropout=cfg.dropout, w_attention=cfg.w_attention,
                                        f_attention=cfg.f_attention, use_f=cfg.use_f)


def loss_config(cfg: EncoderTrainConfig) -> InversionLossConfig:
    return InversionLossConfig(l2=cfg.l2, perceptual=cfg.perceptual, identity=cfg.identity,
                               freg=cfg.freg if cfg.use_f else 0.0, align=cfg.align, align_on=cfg.align_on)


def build_encoder(cfg: EncoderTrainConfig, G, image_size: int) -> CLCAEEncoder:
    """A new encoder for ``G``, initialised as ``cfg.weight_init`` says and centred on G(w_avg)."""
    encoder = CLCAEEncoder(encoder_config(cfg, G, image_size))
    if cfg.weight_init == "official":
        encoder.init_weights()
    encoder.set_averages(average_image(G, image_size).cpu(), G.latent_avg.detach().cpu())
    check_compatible(encoder, G)
    return encoder


def start_from(encoder: CLCAEEncoder, path: str, G, where: str) -> None:
    """Load the weights of ``path`` (a clcae encoder.pt or the released CLCAE checkpoint) into
    ``encoder``; the centring buffers stay this run's. Errors name the file and the keys that differ."""
    try:
        source = load_any_encoder(path, G)
    except FileNotFoundError as e:
        raise InputError(f"{e} ({where}.init)") from None
    state = source.state_dict()
    state.update(image_avg=encoder.image_avg, w_avg=encoder.w_avg)
    load_state_strict(encoder, state, f"{path} ({where}.init)")


def aligner_paths(params, cfg: EncoderTrainConfig) -> list[str]:
    """The aligner files L_align reads: the variant's ``aligner`` list, else train_aligner's output."""
    return list(cfg.aligner) or [str(Path(params.train_aligner.out_dir) / "aligner.pt")]


def frozen_aligner(files: list[str], named: bool, G, image_size: int, device, where: str):
    """:func:`load_any_aligner`; a missing file's error says which setting (or stage) gives it."""
    try:
        return load_any_aligner(files, G, image_size, device)
    except FileNotFoundError as e:
        hint = f"{where}.aligner" if named else "run `dvc repro train_aligner`, or set align: 0"
        raise InputError(f"{e} ({hint})") from None


def random_hflip(x: torch.Tensor, p: float) -> torch.Tensor:
    """Each image of ``x`` [B, 3, H, W] mirrored left-right with probability ``p`` (the official
    training transform), drawn from this rank's RNG stream (restored by a resume point)."""
    if p <= 0:
        return x
    flip = torch.rand(x.shape[0], device=x.device) < p  # [B]
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class TrainStep:
    """One optimisation step's forward: [flip] -> encoder -> three renders -> the inversion loss."""

    def __init__(self, net, G, loss_fn: InversionLoss, cfg: EncoderTrainConfig, image_size: int,
                 steps_per_epoch: int):
        self.net, self.G, self.loss_fn, self.cfg = net, G, loss_fn, cfg
        self.image_size, self.steps_per_epoch = image_size, steps_per_epoch
        self.spaces = SPACES if cfg.w_loss else tuple(s for s in SPACES if s != "w")   # w_loss off: no G(w)

    def blend(self, step: int) -> float:
        return feature_blend(step, self.cfg.feature_blend, self.steps_per_epoch, self.cfg.steps, self.cfg.blend_rate)

    def __call__(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = random_hflip(x, self.cfg.hflip)
        out = self.net(x)
        images, f_gen = render(self.G, out, self.image_size, self.cfg.feature_layer, self.blend(step),
                               return_features=True, spaces=self.spaces, feature_insert=self.cfg.feature_insert,
                               noise_mode=self.cfg.noise)
        return self.loss_fn(x, images, out.w, out.f, f_gen)


@torch.inference_mode()
def score_split(encoder, G, world: World, images: ImageSet, n: int, batch_size: int = 32) -> dict[str, dict[str, float]]:
    """Mean reconstruction figures per space on the first ``n`` of ``images``, named as in
    evaluate's files (:func:`clcae.scoring.score_reconstructions`): ``mse`` on [0, 1], pSp's
    ``l2_psp`` on [-1, 1], the world's perceptual distance and identity similarity."""
    sums: dict[str, dict[str, float]] = {}
    n = min(n, len(images))
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        x = to_float(images.batch(idx)).to(encoder.w_avg.device)
        inv = invert(encoder, G, x, batch_size=batch_size)
        for space, (figures, _) in score_reconstructions(world, inv.images(), x, ["mse", "l2_psp"]).items():
            acc = sums.setdefault(space, {})
            for name, values in figures.items():
                acc[name] = acc.get(name, 0.0) + values.float().sum().item()
    return {space: {k: v / n for k, v in figures.items()} for space, figures in sums.items()}


@torch.inference_mode()
def sample_grid(encoder, G, images: torch.Tensor, path: Path) -> None:
    """Rows of input | G(w) | G(w+) | G(w+, f) for up to 8 images."""
    inv = invert(encoder, G, images)
    columns = [to_float(images).to(inv.image_w.device)] + list(inv.images().values())
    grid = torch.stack(columns, 1).flatten(0, 1)  # [B * cols, 3, S, S]
    save_image_grid(to_uint8(grid).cpu(), path, nrow=len(columns))


def run_signature(params, cfg: EncoderTrainConfig, world_size: int, data: dict) -> dict:
    """What a resume point must share with this run (the worker count changes no result)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in SPEED_ONLY}
    return {"params": {**settings, "seed": params.shared.seed, "world_size": world_size,
                       "cpu_amp": params.shared.cpu_amp, "channels_last": params.shared.channels_last},
            "data": data, "code": stage_code_signature("train_encoder")}


def run(params, variant: str = "clcae") -> dict:
    """Stage entry: train one variant; writes the encoder, metrics, curves and sample grid."""
    cfg = params.train_encoder.variant(variant)
    rank, world_size, _, device = init_distributed(params.shared.device)
    try:
        return train(params, cfg, variant, rank, world_size, device)
    finally:
        cleanup_distributed()


def train(params, cfg: EncoderTrainConfig, variant: str, rank: int, world_size: int, device) -> dict:
    seed = params.shared.seed
    out = Path(params.train_encoder.out_dir) / variant
    report = Path(params.train_encoder.report_dir) / variant
    G = load_generator(params.shared.generator, device=device, channels_last=params.shared.channels_last)
    G.eval().requires_grad_(False)
    image_size = cfg.image_size or G.size
    world = load_world(params, device)
    train_set, test_set = world.train_images(image_size), world.test_images(image_size)
    if cfg.batch_size % world_size:
        raise ConfigError(f"train_encoder: batch_size ({cfg.batch_size}) must divide over {world_size} ranks")
    schedule = BatchSchedule(len(train_set), cfg.batch_size, seed, what="train_encoder.batch_size")

    torch.manual_seed(seed)
    where = f"train_encoder.variants.{variant}"
    try:
        encoder = build_encoder(cfg, G, image_size).to(device).train()
    except ValueError as e:  # sizes the generator cannot serve, e.g. image_size 48 or feature_layer 20
        raise ConfigError(f"{where}: {e}") from None
    aligner, aligner_files = None, aligner_paths(params, cfg)
    if cfg.align > 0 or cfg.warm_start:
        aligner = frozen_aligner(aligner_files, bool(cfg.aligner), G, image_size, device, where)
    if cfg.warm_start:
        try:
            encoder.init_from_aligner(aligner)
        except ValueError as e:
            raise ConfigError(f"{where}.warm_start: {e}") from None
    if cfg.init:
        start_from(encoder, cfg.init, G, where)
    seed_rank_stream(seed, rank)   # one init for all ranks, then each rank its own dropout masks, flips, noise
    # NHWC convs on GPUs, and on the CPU with shared.channels_last (oneDNN's fast layout)
    memory_format = torch.channels_last if device.type == "cuda" or params.shared.channels_last else torch.contiguous_format
    encoder.to(memory_format=memory_format)
    if aligner is not None:
        aligner.to(memory_format=memory_format)
    align = AlignLoss(aligner, mode="infonce") if cfg.align > 0 else None
    loss_fn = InversionLoss(loss_config(cfg), world, align)
    opt = make_optimizer(cfg.optimizer, encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    data = {"world": world.fingerprint(), "train_images": len(train_set),
            "generator": file_sha256(params.shared.generator),
            "aligner": [file_sha256(f) for f in aligner_files] if aligner is not None else None,
            "init": file_sha256(cfg.init) if cfg.init else None}
    point = ResumePoint(out / RESUME_FILE, run_signature(params, cfg, world_size, data))
    plateau = (EpochPlateau(opt, schedule.per_epoch, cfg.plateau_patience, cfg.plateau_factor, all_reduce_mean)
               if cfg.lr_schedule == "plateau" else None)
    resumed = restore(point, encoder, opt, device, plateau, who=f"train_encoder@{variant}")
    net = encoder
    if world_size > 1:  # after the resume: DDP starts every replica from rank 0's weights
        if device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = torch.nn.parallel.DistributedDataParallel(net)
    if cfg.compile:   # after DDP, as nanoGPT: DDP's buckets split the graph so all-reduce overlaps backward
        net = torch.compile(net)
    step_fn = TrainStep(net, G, loss_fn, cfg, image_size, schedule.per_epoch)
    fixed = test_set.batch(torch.arange(min(8, len(test_set))))

    def step_loss(images_u8, step: int):
        x = to_float(images_u8.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
        return step_fn(x, step)

    def after_step(step: int) -> None:
        if step % cfg.sample_every == 0:
            sample_grid(encoder, G, fixed, report / "samples.png")

    loop = Loop(f"train_encoder@{variant}", encoder, opt, point, cfg.steps, device, step_loss=step_loss,
                live_dir=report / "live",
                # rows rank::world_size of each step's global batch, read (decoded) ahead by loader_workers processes
                batches=lambda start: batch_loader(ImageBatches(train_set), schedule, start, cfg.steps, rank, world_size,
                                                   workers=cfg.loader_workers, pin_memory=device.type == "cuda"),
                lr=None if plateau is not None else
                lambda step: lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.final_lr_frac),
                plateau=plateau, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                log_extra=lambda step: {"train/blend": step_fn.blend(step - 1)}, after_step=after_step,
                headline="total", cpu_amp=params.shared.cpu_amp)
    step, seconds, log = fit(loop, resumed)
    identical = replicas_identical(encoder)
    barrier()
    if not is_main_process():
        return {}
    minutes = seconds / 60
    encoder.eval()
    sample_grid(encoder, G, fixed, report / "samples.png")
    n_test = min(cfg.test_images or len(test_set), len(test_set))
    test = score_split(encoder, G, world, test_set, n_test)
    train_scores = score_split(encoder, G, world, train_set, 256)
    save_encoder(encoder.cpu(), out / "encoder.pt", variant=variant, steps=step)
    metrics = {"test": test, "train_256": train_scores, "test_images": n_test, "steps": step,
               "batch_size": cfg.batch_size, "world_size": world_size, "replicas_identical": identical,
               "parameters": sum(p.numel() for p in encoder.parameters()), "minutes": round(minutes, 2),
               "device": str(device), "world": world.name,
               "unreadable_images": {split: unreadable_files(getattr(images, "skipped", []))
                                     for split, images in (("train", train_set), ("test", test_set))}}
    save_json(metrics, report / "metrics.json")
    log.end()
    point.remove()
    return metrics
