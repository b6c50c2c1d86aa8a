"""Typed params: one dataclass per block of params.yaml, validated with key paths.

Every stage reads its block through :func:`load_params` so a typo or a wrong value
fails before any work starts, with a message naming the key, e.g.
``train_encoder.lr: expected a float, got 'fast'``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from clcae.errors import ConfigError
from clcae.schema import build, check_bounds, param

# ----------------------------------------------------------------------------- blocks


@dataclass
class SharedConfig:
    """Settings every stage reads."""
    seed: int = param(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    world: Literal["procfaces", "ffhq"] = "procfaces"
    generator: str = "assets/procfaces/generator.pt"  # rosinality-layout StyleGAN2 checkpoint
    # true: checkpoints that need more than weights-only loading are unpickled fully (can run code
    # from the file); stage_main exports it as CLCAE_TRUST_CHECKPOINTS=1 (see clcae.io.read_checkpoint)
    trust_checkpoints: bool = False
    # true: the trainers' forward (train_aligner, train_encoder) runs under bfloat16 autocast on the
    # CPU too (it always does on CUDA); faster where the CPU has bf16 units, and it changes the numbers.
    # params.yaml turns it on (the default pipeline's runs); absent from a params file it stays off
    cpu_amp: bool = False
    # true: the convolutional nets (generator, encoders, aligner, the world's judges) keep their
    # activations in channels_last (NHWC), oneDNN's and cuDNN's fast layout: the world generator renders
    # 7-22% faster on the 2-core CPU, wider generators 36-44% (docs/benchmarks.md). The same maps up to
    # float rounding, so it changes the last bits of every number. params.yaml turns it on; absent from
    # a params file it stays off (on CUDA the encoder trainer puts the encoder and the frozen aligner in
    # channels_last either way). torch 2.14.1's CPU backward of a strided 1x1 conv with 8 input channels
    # crashes in channels_last at 48 px and up (docs/pipeline.md, "Memory layout")
    channels_last: bool = False


@dataclass
class WorldCNNConfig:
    """The world CNN's training recipe (params ``world.world_cnn``; trained by
    :func:`clcae.worlds.procfaces.world_cnn.train_world_cnn`); the defaults train in about
    2-3 minutes on 2 CPU cores. Bounds are checked on construction and, with key paths, by
    :func:`clcae.schema.build` when read from params."""

    n_people: int = param(2000, ge=2, help="training identities (ProcFaces train split)")
    per_person: int = param(8, ge=2, help="images per identity (attributes/nuisance vary)")
    steps: int = param(1000, ge=1, help="optimizer steps (4 epochs of the default data)")
    batch_size: int = param(64, ge=2)
    lr: float = param(3e-3, gt=0, help="AdamW, linear warm-up then cosine decay")
    weight_decay: float = param(1e-4, ge=0)
    warmup_frac: float = param(0.05, ge=0, lt=1)
    seed: int | None = param(None, ge=0, help="None: 0; the world stage sets shared.seed (params may not)")
    detail_prob: float = param(0.5, ge=0, le=1, help="share of training images with test-split details")
    blur_prob: float = param(0.5, ge=0, le=1, help="share of training images blurred, sigma ~ U(0, blur_sigma) px: "
                                                   "readouts that softness does not shift (see blur_shift)")
    blur_sigma: float = param(1.0, ge=0)
    widths: list[int] = param(default_factory=lambda: [16, 32, 64, 128, 192], help="stem + 4 stages")
    emb_dim: int = param(128, ge=1)
    margin: float = param(0.25, ge=0, help="CosFace additive cosine margin")
    scale: float = param(16.0, gt=0, help="CosFace logit scale (30 starved the attribute heads)")
    attr_weight: float = param(10.0, ge=0, help="MSE on standardised attributes; lower weights left the small "
                                                "features (lip_red, eye_open) unlearnt in the step budget")
    trait_weight: float = param(0.5, ge=0, help="auxiliary MSE on the standardised identity traits")
    eval_people: int = param(200, ge=2, help="held-out people (train split) and test-split people")
    eval_per_person: int = param(4, ge=2, help="verification needs pairs of one person")
    render_batch: int = param(500, ge=1)
    log_every: int = param(100, ge=1)

    def __post_init__(self) -> None:
        self.widths = [int(w) for w in self.widths]
        check_bounds(self, "world_cnn")
        self.check("world_cnn")

    def check(self, where: str) -> None:
        if len(self.widths) != 5 or min(self.widths) < 1:
            raise ConfigError(f"{where}.widths: needs 5 positive entries (stem + 4 stages), got {self.widths}")

    @classmethod
    def from_dict(cls, d: dict) -> WorldCNNConfig:
        return build(cls, d, "world_cnn")


@dataclass
class WorldConfig:
    """The procfaces world: data splits, world CNN, generator check (stage `world`)."""
    size: int = param(64, ge=16)
    train_people: int = param(1000, ge=2, help="identities of the world's FFHQ")
    train_per_person: int = param(8, ge=1)
    test_people: int = param(300, ge=2, help="identities of the world's CelebA-HQ (disjoint)")
    test_per_person: int = param(4, ge=1)
    shard_size: int = param(4000, ge=1)
    quality_samples: int = param(5000, ge=100, help="generator samples scored against train images")
    out_dir: str = "data/world"
    report_dir: str = "reports/world"
    world_cnn: WorldCNNConfig = field(default_factory=WorldCNNConfig)

    def check(self, where: str) -> None:
        if self.world_cnn.seed is not None:   # one seed per run: the world stage passes shared.seed
            raise ConfigError(f"{where}.world_cnn.seed: unknown key (the world CNN's seed is shared.seed)")


@dataclass
class FFHQWorldConfig:
    """The ffhq world's judges and image folders (read when shared.world is ffhq; see configs/ffhq.yaml)."""
    arcface: str = "assets/ffhq/model_ir_se50.pth"   # ArcFace IR-SE50 (pSp's identity net)
    lpips_alexnet: str | None = None   # None: torchvision's cache, torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth
    inception: str | None = None       # Inception-v3 for FID-like features; None: torchvision's cache if there,
                                       # else the features are ArcFace embeddings (named so)
    attribute_classifier: str | None = None  # clcae.worlds.ffhq.judges.AttributeClassifier file; None: no attributes
    train_dir: str = "data/ffhq/images"      # the training photos (FFHQ), PNG/JPEG
    test_dir: str = "data/celebahq/test"     # the evaluation photos (CelebA-HQ test split)
    verify_checksums: bool = param(True, help="the assets stage compares sizes and sha256 (false: stand-in files, "
                                              "checked by format only)")
    assets_report: str = "reports/ffhq/assets.json"   # the assets stage's metrics


@dataclass
class SynthesizeConfig:
    """Image-latent pairs (I = G(w), w) for the aligner."""
    n_pairs: int = param(20_000, ge=1)
    shard_size: int = param(5_000, ge=1)
    batch_size: int = param(32, ge=1)
    truncation: float = param(1.0, gt=0, le=1)
    noise_mode: Literal["const", "random"] = "const"
    resolution: int = param(0, ge=0, help="0: the generator's size; else resized with antialiasing")
    out_dir: str = "data/pairs"
    report_dir: str = "reports/synthesize"
    launcher: str = param("python", help="stage command prefix; 'torchrun --nproc_per_node 8': ranks render "
                                         "disjoint shards")


@dataclass
class TrainAlignerConfig:
    """Contrastive W-image aligner (h_I, h_w, learnable temperature)."""
    num_layers: Literal[18, 34, 50, 100, 152] = 18  # IR-SE depth of h_I (paper: 50)
    width: int = param(8, ge=1, help="IR-SE base channels (paper: 64)")
    embed_dim: int = param(128, ge=1)
    heads: int = param(4, ge=1)
    ff_dim: int = param(512, ge=1)
    dropout: float = param(0.0, ge=0, lt=1)
    temperature_init: float = param(0.07, gt=0)
    lambda_i2w: float = param(0.5, ge=0, le=1, help="weight of the image->w direction")
    logit_cap: float | None = param(100.0, gt=1, help="cap on the logit scale exp(s) = 1 / temperature (CLIP's 100); "
                                                     "null: uncapped, as the official ClipLoss")
    batch_size: int = param(128, ge=2, help="global batch (split across ranks)")
    lr: float = param(1e-3, gt=0)
    weight_decay: float = param(0.0, ge=0)
    warmup_steps: int = param(30, ge=0)
    steps: int = param(400, ge=1)
    holdout: int = param(1000, ge=2, help="last pairs kept out of training for retrieval")
    eval_every: int = param(100, ge=1)
    checkpoint_every: int = param(100, ge=1)
    loader_workers: int = param(0, ge=0, help="DataLoader processes reading batches ahead of the step (0: none)")
    out_dir: str = "data/aligner"
    report_dir: str = "reports/aligner"
    launcher: str = param("python", help="stage command prefix, e.g. 'torchrun --nproc_per_node 8'")


@dataclass
class EncoderTrainConfig:
    """One variant of the inversion encoder (stage `train_encoder`): net, losses, optimisation.

    ``train_encoder.common`` holds these keys; ``train_encoder.variants.<name>`` overrides some
    of them per variant (the baselines and the paper's ablations are switch settings).
    """
    image_size: int = param(0, ge=0, help="encoder input side; 0: the generator's size (paper: 256)")
    num_layers: Literal[18, 34, 50, 100, 152] = 18  # IR-SE depth of the pyramid (paper: 50)
    width: int = param(16, ge=1, help="IR-SE base channels (paper: 64)")
    heads: int = param(4, ge=1, help="attention heads of the W+ and F blocks")
    dropout: float = param(0.1, ge=0, lt=1, help="attention-block dropout (official 0.1)")
    feature_layer: int = param(5, ge=1, help="generator conv layer where f enters (conv1 at 4x4 = 1)")
    feature_insert: Literal["next_conv", "replace"] = "next_conv"  # official: the layer's toRGB keeps G's own
                                                                    # feature, f feeds the next conv; replace: ablation
    weight_init: Literal["official", "pytorch"] = "official"  # official: BaseNetwork.init_weights; pytorch: defaults
    warm_start: bool = param(False, help="load the pyramid and w head from the frozen aligner (the official trainer "
                                         "means to, but its strict=False load matches no key: it loads nothing)")
    noise: Literal["random", "const"] = "random"  # generator noise while training: official fresh ("random")
    hflip: float = param(0.5, ge=0, le=1, help="probability of a horizontal flip of each training image (official 0.5)")
    w_attention: bool = True   # false: pSp's w+ = w_avg + map2style offsets
    f_attention: bool = True   # false: F from T3 by the strided CNN alone (Feature-Style encoder)
    use_f: bool = True         # false: W+ only (pSp / e4e), no F branch
    w_loss: bool = True        # reconstruction terms on G(w) too (CLCAE's I1); pSp trains on G(w+) alone
    # loss weights (DESIGN.md "The method" 3; paper defaults)
    l2: float = param(1.0, ge=0, help="pSp's L2 (MSE on [-1, 1]) per reconstruction")
    perceptual: float = param(0.2, ge=0, help="the world's perceptual distance (LPIPS in the ffhq world)")
    identity: float = param(0.1, ge=0, help="1 - cos of the world's identity embeddings")
    freg: float = param(1.0, ge=0, help="||f - G5(w+)||^2 (paper 1; official code 0.01)")
    align: float = param(0.1, ge=0, help="L_align weight (0: no contrastive loss, the paper's ablation)")
    align_on: Literal["input", "w_image"] = "input"  # paper: L_align(I, w); official code: L_align(G(w), w)
    feature_blend: Literal["epoch_ramp", "single_ramp", "constant"] = "epoch_ramp"
    blend_rate: float = param(1e-4, gt=0, help="single_ramp: s = min(1, rate * step)")
    # optimisation
    optimizer: Literal["ranger", "adam", "adamw"] = "ranger"
    lr: float = param(1e-4, gt=0)
    weight_decay: float = param(0.0, ge=0)
    warmup_steps: int = param(0, ge=0)
    final_lr_frac: float = param(1.0, gt=0, le=1, help="cosine decay to lr * this (1: constant, as pSp)")
    lr_schedule: Literal["plateau", "cosine"] = "plateau"  # official: ReduceLROnPlateau on each epoch's mean loss;
                                                           # cosine: warmup_steps, then cosine to lr * final_lr_frac
    plateau_patience: int = param(10, ge=0, help="plateau: epochs without improvement before the lr drops (official 10)")
    plateau_factor: float = param(0.1, gt=0, lt=1, help="plateau: the lr's factor at each drop (official 0.1)")
    batch_size: int = param(8, ge=1, help="global batch (split across ranks)")
    steps: int = param(1000, ge=1)
    log_every: int = param(50, ge=1)
    checkpoint_every: int = param(100, ge=1)
    sample_every: int = param(250, ge=1, help="sample grid (input | G(w) | G(w+) | G(w+, f)) every N steps")
    test_images: int = param(0, ge=0, help="test-split images scored at the end (0: all)")
    aligner: list[str] = param(default_factory=list,
                               help="the frozen aligner of L_align: []: train_aligner's aligner.pt; [file]: a clcae "
                                    "aligner.pt; [image, latent]: the released CLCAE contrastive models "
                                    "(best_model_image.pt, best_model_latent.pt), converted")
    init: str | None = param(None, help="start from these weights: a clcae encoder.pt or the released CLCAE "
                                        "checkpoint (converted); null: random init")
    loader_workers: int = param(0, ge=0, help="DataLoader processes reading (decoding) batches ahead of the step; "
                                              "results do not depend on it")
    compile: bool = param(False, help="torch.compile the encoder (GPU speed; same results within float tolerance)")

    def check(self, where: str) -> None:
        if len(self.aligner) > 2:
            raise ConfigError(f"{where}.aligner: [] (train_aligner's), [aligner.pt] or [image.pt, latent.pt] "
                              f"(the released CLCAE models), got {len(self.aligner)} files")
        if self.align > 0 and self.align_on == "w_image" and not self.w_loss:
            raise ConfigError(f"{where}.align_on: 'w_image' scores G(w), which w_loss: false does not render")
        if self.lr_schedule == "plateau" and (self.warmup_steps or self.final_lr_frac != 1.0):
            raise ConfigError(f"{where}.lr_schedule: 'plateau' (the official ReduceLROnPlateau) has no warm-up or "
                              f"cosine decay: set warmup_steps: 0 and final_lr_frac: 1.0, or lr_schedule: cosine")


@dataclass
class TrainEncoderConfig:
    """Block `train_encoder`: shared settings and the variants the pipeline trains."""
    common: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    variants: dict[str, dict[str, Any]] = param(default_factory=lambda: {"clcae": {}})
    out_dir: str = "data/encoder"             # <out_dir>/<variant>/encoder.pt
    report_dir: str = "reports/train_encoder"  # <report_dir>/<variant>/metrics.json, live/, samples.png
    launcher: str = param("python", help="stage command prefix, e.g. 'torchrun --nproc_per_node 8'")

    def check(self, where: str) -> None:
        if not self.variants:
            raise ConfigError(f"{where}.variants: at least one variant is needed")
        for name in self.variants:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ConfigError(f"{where}.variants.{name}: variant names are letters, digits, '_' and '-'")
            self.variant(name, where)

    def variant(self, name: str, where: str = "train_encoder") -> EncoderTrainConfig:
        """The common settings with the variant's overrides, validated (errors name the key path)."""
        if name not in self.variants:
            raise ConfigError(f"{where}.variants: no variant {name!r} (known: {', '.join(self.variants)})")
        overrides = self.variants[name] or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}.variants.{name}: expected a mapping of overrides, got {overrides!r}")
        return build(EncoderTrainConfig, {**dataclasses.asdict(self.common), **overrides}, f"{where}.variants.{name}")


@dataclass
class FitDirectionsConfig:
    """Block `fit_directions`: InterFaceGAN boundaries and a GANSpace PCA from sampled w."""
    n_samples: int = param(10_000, ge=100, help="mapped w rendered and labelled (InterFaceGAN: 500,000)")
    batch_size: int = param(64, ge=1)
    truncation: float = param(1.0, gt=0, le=1)
    attributes: list[str] = param(default_factory=list, help="[]: every attribute the world's classifier reads")
    chosen_frac: float = param(0.1, gt=0, le=0.5, help="most confident fraction of each side (InterFaceGAN: 0.02)")
    train_frac: float = param(0.7, gt=0, lt=1, help="of the chosen samples; the rest scores the SVM")
    svm_c: float = param(1.0, gt=0)
    strength: float = param(3.0, help="the typical strength recorded with each InterFaceGAN direction")
    conditions: dict[str, list[str]] = param(default_factory=dict,
                                             help="{attr: [other, ...]}: also `<attr>_without_<other>...`")
    pca_components: int = param(16, ge=1)
    effect_samples: int = param(256, ge=2, help="sampled w each GANSpace component's attribute effect is read on")
    ganspace_edits: dict[str, list[float]] = param(default_factory=dict,
                                                   help="{name: [component, first_layer, last_layer, strength]}")
    published: dict[str, str] = param(default_factory=dict,
                                      help="{name: file}: published InterFaceGAN normals (.pt [1, D] or .npy)")
    published_pca: str | None = param(None, help="a published GANSpace ffhq_pca.pt; replaces the fitted PCA")
    out_dir: str = "data/directions"
    report_dir: str = "reports/directions"

    def check(self, where: str) -> None:
        for name, edit in self.ganspace_edits.items():
            if len(edit) != 4 or any(float(v) != int(v) for v in edit[:3]) or not 0 <= edit[1] <= edit[2]:
                raise ConfigError(f"{where}.ganspace_edits.{name}: expected [component, first_layer, last_layer, "
                                  f"strength] with first_layer <= last_layer, got {edit}")
            if not 0 <= edit[0] < self.pca_components and self.published_pca is None:
                raise ConfigError(f"{where}.ganspace_edits.{name}: component {int(edit[0])} not in "
                                  f"0..{self.pca_components - 1} (pca_components)")
        for name, others in self.conditions.items():
            if name in others:
                raise ConfigError(f"{where}.conditions.{name}: an attribute cannot be its own condition")


@dataclass
class EvaluateConfig:
    """Block `evaluate`: the trained variants on the world's test split: reconstruction and editing."""
    variants: list[str] = param(default_factory=list, help="train_encoder variants or evaluate.released names; "
                                                         "[]: every trained variant, then every released one")
    test_images: int = param(0, ge=0, help="first n test images reconstructed and scored (0: all)")
    metrics: list[str] = param(default_factory=lambda: ["mse", "l2_psp", "psnr", "ssim", "ms_ssim", "lpips"],
                               help="registered image metrics (clcae.metrics.list_metrics())")
    edit_images: int = param(200, ge=2, help="first n test images the editing scores use")
    edit_directions: list[str] = param(default_factory=lambda: ["smile", "eye_open", "yaw", "beard"])
    edit_strengths: list[float] = param(default_factory=lambda: [-4.0, -2.0, 2.0, 4.0])
    edit_strength: float = param(2.0, gt=0, help="the strength of the headline editing check and the consistency")
    consistency_images: int = param(50, ge=1, help="first n of the edit images for e4e's editing consistency")
    same_person_threshold: float | None = param(None, help="None: from the world's test-split verification curve")
    released: dict[str, str] = param(default_factory=dict,
                                     help="more encoders to evaluate, name -> file: the released CLCAE checkpoint "
                                          "(converted) or a clcae encoder.pt, e.g. {clcae_released: FFHQ_Inversion.pt}")
    batch_size: int = param(64, ge=1)
    report_dir: str = "reports/evaluate"
    metrics_file: str = "reports/metrics.json"


@dataclass
class ReportConfig:
    """Block `report`: reports/report.md from the metrics files (claims with bootstrap intervals)."""
    n_boot: int = param(2000, ge=100, help="bootstrap resamples of every interval")
    out_dir: str = "reports"   # report.md, claims.csv, report_summary.json, figures/


@dataclass
class SeedsConfig:
    """Block `seeds`: the claims with more training seeds per variant (``seeds/dvc.yaml``, run by
    ``dvc repro seeds/dvc.yaml``; the default ``dvc repro`` stays single-seed)."""
    seeds: list[int] = param(default_factory=lambda: [1, 2],
                             help="training seeds besides shared.seed (whose run is the default pipeline's)")
    variants: list[str] = param(default_factory=lambda: ["clcae", "psp", "no_align"],
                                help="train_encoder variants retrained with each seed")
    out_dir: str = "data/seeds"        # encoder/seed<s>/<variant>/, train_encoder/seed<s>/, evaluate/seed<s>/
    report_dir: str = "reports/seeds"  # report.md, claims.csv, claims_by_seed.csv, figures/

    def check(self, where: str) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"{where}.seeds: distinct seeds >= 0, at least one, got {self.seeds}")
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"{where}.variants: distinct variant names, at least one, got {self.variants}")


@dataclass
class Params:
    """The whole params.yaml. Later stages add their blocks here."""
    shared: SharedConfig = field(default_factory=SharedConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    ffhq: FFHQWorldConfig = field(default_factory=FFHQWorldConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    train_aligner: TrainAlignerConfig = field(default_factory=TrainAlignerConfig)
    train_encoder: TrainEncoderConfig = field(default_factory=TrainEncoderConfig)
    fit_directions: FitDirectionsConfig = field(default_factory=FitDirectionsConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    seeds: SeedsConfig = field(default_factory=SeedsConfig)


def read_yaml(path: str | os.PathLike) -> dict:
    path = os.fspath(path)
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of blocks at the top level")
    return data


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    """Read and validate a params file; errors name the file and the key path."""
    data = read_yaml(path)
    try:
        return build(Params, data)
    except ConfigError as e:
        raise ConfigError(f"{os.fspath(path)}: {e}") from None
