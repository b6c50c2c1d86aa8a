"""Stand-ins of the published files the paper pipeline names, each in its real file's layout.

One writer per file of :data:`clcae.worlds.ffhq.assets.MANIFEST` (the image folders aside). Each
builds what the publisher's ``torch.save`` wrote, as recorded in ``tests/data/published/layouts.json``
(made from the publishers' repositories: the saving and loading code cited there): the container
(legacy pickle or zip), the nesting and key order, the extra entries (``opts``, ``iter``, ``g``,
``d``), the dtypes, the storage device tag (``cuda:0`` for files saved from a GPU) and the shapes;
the values are seeded, not the published ones. The key lists are spelled out here from the
publishers' module definitions (rosinality's ``model.py``, TreB1eN's / pSp's ``model_irse.py``,
CLCAE's ``psp_encoders.py`` / contrastive encoders, torchvision), not taken from this project's
modules, so a loader that expects another layout fails on them.

``build(name, real=True)`` is the file at its real sizes with every tensor on the ``meta`` device
(no memory): the tests compare it with ``layouts.json``. ``build(name)`` is the file written by
``write(name, path)``: real sizes where they are small (the directions, the PCA, Inception-v3,
whose loader builds torchvision's full net) and otherwise :data:`SMALL` sizes (the 1024 px
generator, IR-SE50 and the released encoder at 2-4 channels per layer) with the same keys, key
order, nesting and dtypes, and shapes that differ only in the channel counts.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import zlib
from collections import Counter, OrderedDict
from pathlib import Path

import torch

LAYOUTS_FILE = Path(__file__).parent / "data" / "published" / "layouts.json"
LAYOUTS: dict = json.loads(LAYOUTS_FILE.read_text())
F32, I64 = torch.float32, torch.int64

# the published sizes: StyleGAN2 config-f at 1024 px (rosinality's channel table, channel_multiplier 2),
# IR-SE50 at width 64, CLCAE's 512-d attention blocks with 1024-wide feed-forward
REAL = {"style_dim": 512, "channels": {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32},
        "width": 64, "ff": 1024, "embed": 512, "alex_hidden": 4096}
# the written stand-ins: the same 1024 px, 8-layer mapping, 18 W+ layers, IR-SE50 and 18 attention blocks,
# at a few channels (the released encoder's 8 * width must equal its style_dim: one packed in_proj)
SMALL = {"style_dim": 32, "channels": {4: 16, 8: 16, 16: 8, 32: 4, 64: 4, 128: 2, 256: 2, 512: 2, 1024: 2},
         "width": 4, "ff": 64, "embed": 32, "alex_hidden": 16}
SIZE, N_MLP, IMAGE_SIZE, N_LATENT = 1024, 8, 256, 18
# files saved from a GPU (layouts.json: storage_location_tag, or 'cuda:<rank>' in its notes); the rest 'cpu'
DEVICE_TAG = {"interfacegan_pose": "cuda:0", "clcae_encoder": "cuda:0", "clcae_aligner_image": "cuda:0",
              "clcae_aligner_latent": "cuda:0"}
# the files written at their real shapes (the others: SMALL channels)
FULL_SIZE = ("inception", "interfacegan_age", "interfacegan_smile", "interfacegan_pose", "ganspace_pca")

Spec = list  # [(key, shape tuple, dtype)], in the state dict's order


# ----------------------------------------------------------------------------- key lists


def _bn(prefix: str, c: int) -> Spec:
    """BatchNorm: affine, running statistics and the int64 batch counter."""
    return [(f"{prefix}.weight", (c,), F32), (f"{prefix}.bias", (c,), F32), (f"{prefix}.running_mean", (c,), F32),
            (f"{prefix}.running_var", (c,), F32), (f"{prefix}.num_batches_tracked", (), I64)]


def _linear(prefix: str, n_out: int, n_in: int, bias: bool = True) -> Spec:
    return [(f"{prefix}.weight", (n_out, n_in), F32)] + ([(f"{prefix}.bias", (n_out,), F32)] if bias else [])


def _conv(prefix: str, n_out: int, n_in: int, k: int, bias: bool = True) -> Spec:
    return [(f"{prefix}.weight", (n_out, n_in, k, k), F32)] + ([(f"{prefix}.bias", (n_out,), F32)] if bias else [])


def _layer_norm(prefix: str, c: int) -> Spec:
    return [(f"{prefix}.weight", (c,), F32), (f"{prefix}.bias", (c,), F32)]


def _styled_conv(p: str, n_in: int, n_out: int, style_dim: int, upsample: bool) -> Spec:
    """rosinality's StyledConv: ModulatedConv2d (weight, [blur], modulation), NoiseInjection, FusedLeakyReLU."""
    return ([(f"{p}.conv.weight", (1, n_out, n_in, 3, 3), F32)] + ([(f"{p}.conv.blur.kernel", (4, 4), F32)] if upsample else [])
            + _linear(f"{p}.conv.modulation", n_in, style_dim)
            + [(f"{p}.noise.weight", (1,), F32), (f"{p}.activate.bias", (n_out,), F32)])


def _to_rgb(p: str, n_in: int, style_dim: int, upsample: bool) -> Spec:
    """rosinality's ToRGB: its bias first (own parameter), then [upsample], conv (modulated, no demodulation)."""
    return ([(f"{p}.bias", (1, 3, 1, 1), F32)] + ([(f"{p}.upsample.kernel", (4, 4), F32)] if upsample else [])
            + [(f"{p}.conv.weight", (1, 3, n_in, 1, 1), F32)] + _linear(f"{p}.conv.modulation", n_in, style_dim))


def generator_spec(channels: dict, style_dim: int, n_mlp: int = N_MLP, size: int = SIZE) -> Spec:
    """rosinality/stylegan2-pytorch ``Generator(size, style_dim, n_mlp).state_dict()`` (layouts.json: generator.g_ema)."""
    log_size = int(math.log2(size))
    spec = [s for i in range(1, n_mlp + 1) for s in _linear(f"style.{i}", style_dim, style_dim)]
    spec += [("input.input", (1, channels[4], 4, 4), F32)]
    spec += _styled_conv("conv1", channels[4], channels[4], style_dim, False) + _to_rgb("to_rgb1", channels[4], style_dim, False)
    convs, rgbs, n_in = [], [], channels[4]
    for i in range(3, log_size + 1):
        n_out = channels[2 ** i]
        convs += _styled_conv(f"convs.{2 * (i - 3)}", n_in, n_out, style_dim, True)
        convs += _styled_conv(f"convs.{2 * (i - 3) + 1}", n_out, n_out, style_dim, False)
        rgbs += _to_rgb(f"to_rgbs.{i - 3}", n_out, style_dim, True)
        n_in = n_out
    spec += convs + rgbs
    for layer in range((log_size - 2) * 2 + 1):   # registered buffers, one per conv layer
        side = 2 ** ((layer + 5) // 2)
        spec += [(f"noises.noise_{layer}", (1, 1, side, side), F32)]
    return spec


def discriminator_spec(channels: dict, size: int = SIZE) -> Spec:
    """rosinality's ``Discriminator(size, channel_multiplier=2).state_dict()`` (layouts.json: generator.d)."""
    log_size = int(math.log2(size))
    spec = [("convs.0.0.weight", (channels[size], 3, 1, 1), F32), ("convs.0.1.bias", (channels[size],), F32)]
    n_in = channels[size]
    for j, i in enumerate(range(log_size, 2, -1), 1):   # ResBlock(in, out): conv1, conv2 (blur, conv, act), skip
        n_out, p = channels[2 ** (i - 1)], f"convs.{j}"
        spec += [(f"{p}.conv1.0.weight", (n_in, n_in, 3, 3), F32), (f"{p}.conv1.1.bias", (n_in,), F32),
                 (f"{p}.conv2.0.kernel", (4, 4), F32), (f"{p}.conv2.1.weight", (n_out, n_in, 3, 3), F32),
                 (f"{p}.conv2.2.bias", (n_out,), F32), (f"{p}.skip.0.kernel", (4, 4), F32),
                 (f"{p}.skip.1.weight", (n_out, n_in, 1, 1), F32)]
        n_in = n_out
    c4 = channels[4]
    return spec + [("final_conv.0.weight", (c4, n_in + 1, 3, 3), F32), ("final_conv.1.bias", (c4,), F32),
                   *_linear("final_linear.0", c4, c4 * 4 * 4), *_linear("final_linear.1", 1, c4)]


IRSE50_UNITS = (3, 4, 14, 3)


def irse_input_spec(prefix: str, width: int) -> Spec:
    """IR-SE stem: Conv2d (no bias), BatchNorm2d, PReLU."""
    return _conv(f"{prefix}input_layer.0", width, 3, 3, bias=False) + _bn(f"{prefix}input_layer.1", width) \
        + [(f"{prefix}input_layer.2.weight", (width,), F32)]


def irse_body_spec(prefix: str, width: int) -> Spec:
    """pSp / TreB1eN ``bottleneck_IR_SE`` units of IR-SE50: shortcut (MaxPool, or conv + BN), then
    res_layer (BN, conv, PReLU, strided conv, BN, SE). SE's hidden width is channels // 16 (at
    least 1 in the SMALL stand-ins, as this project builds it)."""
    spec, unit = [], 0
    for stage, n_units in enumerate(IRSE50_UNITS):
        depth = width * 2 ** stage
        for u in range(n_units):
            n_in = (width * 2 ** (stage - 1) if stage else width) if u == 0 else depth
            p = f"{prefix}body.{unit}"
            if n_in != depth:
                spec += _conv(f"{p}.shortcut_layer.0", depth, n_in, 1, bias=False) + _bn(f"{p}.shortcut_layer.1", depth)
            hidden = max(1, depth // 16)
            spec += (_bn(f"{p}.res_layer.0", n_in) + _conv(f"{p}.res_layer.1", depth, n_in, 3, bias=False)
                     + [(f"{p}.res_layer.2.weight", (depth,), F32)] + _conv(f"{p}.res_layer.3", depth, depth, 3, bias=False)
                     + _bn(f"{p}.res_layer.4", depth) + _conv(f"{p}.res_layer.5.fc1", hidden, depth, 1, bias=False)
                     + _conv(f"{p}.res_layer.5.fc2", depth, hidden, 1, bias=False))
            unit += 1
    return spec


def arcface_spec(width: int, embed: int = 512, side: int = 7) -> Spec:
    """TreB1eN's ``Backbone(112, 50, 'ir_se').state_dict()``: input_layer, output_layer, then body
    (the order of its __init__; layouts.json: arcface, first key input_layer.0.weight, last body.23...)."""
    c = 8 * width
    output = _bn("output_layer.0", c) + _linear("output_layer.3", embed, c * side * side) + _bn("output_layer.4", embed)
    return irse_input_spec("", width) + output + irse_body_spec("", width)


def map2style_spec(prefix: str, n_in: int, n_out: int, spatial: int) -> Spec:
    """pSp's GradualStyleBlock: log2(spatial) stride-2 convs (Sequential with LeakyReLUs: indices 0, 2, ...) and an EqualLinear."""
    spec = []
    for i in range(int(math.log2(spatial))):
        spec += _conv(f"{prefix}.convs.{2 * i}", n_out, n_in if i == 0 else n_out, 3)
    return spec + _linear(f"{prefix}.linear", n_out, n_out)


def cross_attention_spec(prefix: str, d: int, ff: int) -> Spec:
    """CLCAE's CrossAttention layer (DETR decoder style): nn.MultiheadAttention, FFN, norm1..3."""
    return ([(f"{prefix}.multihead_attn.in_proj_weight", (3 * d, d), F32), (f"{prefix}.multihead_attn.in_proj_bias", (3 * d,), F32)]
            + _linear(f"{prefix}.multihead_attn.out_proj", d, d) + _linear(f"{prefix}.linear1", ff, d)
            + _linear(f"{prefix}.linear2", d, ff) + _layer_norm(f"{prefix}.norm1", d) + _layer_norm(f"{prefix}.norm2", d)
            + _layer_norm(f"{prefix}.norm3", d))


def layer_spatial(layer: int) -> int:
    """pSp's map2style input for W+ layer ``layer`` at 256 px: T1 (16) for 0-2, T2 (32) for 3-6, T3 (64) after."""
    return 16 if layer < 3 else 32 if layer < 7 else 64


def clcae_encoder_spec(width: int, style_dim: int, ff: int, f_channels: int) -> Spec:
    """CLCAE's AFPSP encoder (``encoder.*``, 891 keys at the published sizes): the IR-SE50 pyramid,
    styles.0 (w), content_layer (F CNN), feature_cross_attention, styles_others (W+ offsets 1..17),
    cross_attention.0..17, latlayer1/2 - in the order the official module registers them."""
    c, p = 8 * width, "encoder."
    spec = irse_input_spec(p, width) + irse_body_spec(p, width)
    spec += map2style_spec(f"{p}styles.0", c, style_dim, layer_spatial(0))
    spec += _conv(f"{p}content_layer.convs.0", f_channels, c, 3) + _conv(f"{p}content_layer.convs.2", f_channels, f_channels, 3)
    spec += cross_attention_spec(f"{p}feature_cross_attention", c, ff)
    for j in range(N_LATENT - 1):
        spec += map2style_spec(f"{p}styles_others.{j}", c, style_dim, layer_spatial(j + 1))
    for i in range(N_LATENT):
        spec += cross_attention_spec(f"{p}cross_attention.{i}", style_dim, ff)
    return spec + _conv(f"{p}latlayer1", c, 4 * width, 1) + _conv(f"{p}latlayer2", c, 2 * width, 1)


def projection_spec(prefix: str, n_in: int, n_out: int) -> Spec:
    """The contrastive projection head: Linear (no bias), BatchNorm1d, Linear (no bias)."""
    return _linear(f"{prefix}.lin1", n_in, n_in, bias=False) + _bn(f"{prefix}.bn", n_in) \
        + _linear(f"{prefix}.lin2", n_out, n_in, bias=False)


def aligner_image_spec(width: int, embed: int) -> Spec:
    """CLCAE's contrastive image encoder (best_model_image.pt): logit_scale, the IR-SE50 pyramid in
    image mode (styles.0 only, latlayers built but unused), image_projection (407 keys)."""
    c = 8 * width
    return ([("logit_scale", (), F32)] + irse_input_spec("encoder.", width) + irse_body_spec("encoder.", width)
            + map2style_spec("encoder.styles.0", c, c, layer_spatial(0))
            + _conv("encoder.latlayer1", c, 4 * width, 1) + _conv("encoder.latlayer2", c, 2 * width, 1)
            + projection_spec("image_projection", c, embed))


def transformer_layer_spec(prefix: str, d: int, ff: int) -> Spec:
    """``nn.TransformerEncoderLayer(d, nhead, ff).state_dict()``."""
    return ([(f"{prefix}.self_attn.in_proj_weight", (3 * d, d), F32), (f"{prefix}.self_attn.in_proj_bias", (3 * d,), F32)]
            + _linear(f"{prefix}.self_attn.out_proj", d, d) + _linear(f"{prefix}.linear1", ff, d)
            + _linear(f"{prefix}.linear2", d, ff) + _layer_norm(f"{prefix}.norm1", d) + _layer_norm(f"{prefix}.norm2", d))


def aligner_latent_spec(style_dim: int, ff: int, embed: int) -> Spec:
    """CLCAE's contrastive latent encoder (best_model_latent.pt): pos_embedding, coarse/medium/fine, latent_projection."""
    spec = [("pos_embedding", (1, 1, style_dim), F32)]
    for part in ("coarse", "medium", "fine"):
        spec += transformer_layer_spec(part, style_dim, ff)
    return spec + projection_spec("latent_projection", style_dim, embed)


def alexnet_spec(hidden: int) -> Spec:
    """torchvision's AlexNet: features (5 convs, the LPIPS trunk) and the classifier (hidden width ``hidden``; 4096 published)."""
    spec = []
    for i, (n_out, n_in, k) in zip((0, 3, 6, 8, 10), ((64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3))):
        spec += _conv(f"features.{i}", n_out, n_in, k)
    return spec + _linear("classifier.1", hidden, 256 * 6 * 6) + _linear("classifier.4", hidden, hidden) \
        + _linear("classifier.6", 1000, hidden)


@functools.lru_cache(maxsize=1)
def inception_spec() -> Spec:
    """torchvision's ``inception_v3(aux_logits=True)`` state dict without its 96 BatchNorm
    ``num_batches_tracked`` entries and without ``_metadata`` (read off the published size; layouts.json:
    inception): BatchNorm fills the counters in on load."""
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    return [(k, tuple(v.shape), v.dtype) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")]


# ----------------------------------------------------------------------------- values


def _kernel(scale: float) -> torch.Tensor:
    """rosinality's make_kernel([1, 3, 3, 1]) times ``scale`` (the upsampling factor squared)."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[None] * k[:, None]
    return k / k.sum() * scale


def _value(key: str, shape: tuple, dtype: torch.dtype, seed: int, upsample_kernels: bool) -> torch.Tensor:
    """A deterministic tensor for ``key``: the constant buffers as the publisher's code makes them
    (blur / upsample kernels), seeded small values for the rest."""
    if key.endswith("kernel"):
        return _kernel(4.0 if upsample_kernels else 1.0)   # generator: factor**2 = 4; discriminator: 1
    if dtype == I64:
        return torch.full(shape, 7, dtype=I64)   # a batch counter
    gen = torch.Generator().manual_seed(seed * 7919 + zlib.crc32(key.encode()))
    if key.endswith("running_var"):
        return torch.rand(shape, generator=gen) + 0.5
    if len(shape) >= 2:
        fan_in = math.prod(shape[2:] if len(shape) == 5 else shape[1:])   # rosinality's convs: [1, out, in, k, k]
        return torch.randn(shape, generator=gen) / math.sqrt(max(fan_in, 1))
    base = 1.0 if key.endswith((".weight", "modulation.bias")) and not key.endswith("noise.weight") else 0.0
    return base + 0.1 * torch.randn(shape, generator=gen)


def _metadata(keys) -> OrderedDict:
    """``state_dict()._metadata``: a version per module that holds entries (BatchNorm 2, others 1)."""
    meta = OrderedDict([("", {"version": 1})])
    for key in keys:
        parts = key.split(".")[:-1]
        for n in range(1, len(parts) + 1):
            meta.setdefault(".".join(parts[:n]), {"version": 1})
        if key.endswith("running_mean"):
            meta[".".join(parts)] = {"version": 2}
    return meta


def state(spec: Spec, seed: int = 0, real: bool = False, metadata: bool = True,
          upsample_kernels: bool = True) -> OrderedDict:
    """The state dict of ``spec``: meta tensors when ``real`` (layout checks), else seeded values."""
    out = OrderedDict((k, torch.empty(shape, dtype=dtype, device="meta") if real else _value(k, shape, dtype, seed, upsample_kernels))
              for k, shape, dtype in spec)
    if metadata:
        out._metadata = _metadata(out)
    return out


def _unit(shape, seed: int, real: bool) -> torch.Tensor:
    if real:
        return torch.empty(shape, device="meta")
    return torch.nn.functional.normalize(torch.randn(shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ----------------------------------------------------------------------------- CLCAE's opts

# options/train_options.py of KumapowerLIU/CLCAE (its argparse defaults, in its order; layouts.json:
# clcae_encoder.structure.keys.opts.keys_per_code_at_HEAD), then 'device' set by the coach
CLCAE_OPTS = {
    "train_inversion": False, "train_contrastive": False, "exp_dir": "experiment", "dataset_type": "ffhq_encode_inversion",
    "encoder_type": "GradualStyleEncoder", "input_nc": 3, "label_nc": 0, "output_size": 1024, "batch_size": 2,
    "test_batch_size": 2, "workers": 4, "test_workers": 2, "learning_rate": 0.0001, "optim_name": "ranger",
    "train_decoder": False, "start_from_latent_avg": False, "learn_in_w": False, "n_styles": 18, "num_latent": 1,
    "contrastive_lambda": 0.1, "use_norm": False, "latent_embedding_dim": 512, "image_embedding_dim": 512,
    "projection_dim": 512, "load_pretrain_image_encoder": False, "checkpoint_path_image": None,
    "checkpoint_path_latent": None, "checkpoint_path_af": None, "landmark_lambda": 0.8, "feature_matching_lambda": 0.01,
    "multi_scale_lpips": True, "not_for_feature": False, "not_for_ww": False, "global_step": None,
    "no_feature_attention": False, "contrastive_model_image": "contrastive_ffhq_image",
    "contrastive_model_latent": "contrastive_ffhq_latent", "no_w_attention": False, "idx_k": None, "no_res": False,
    "lpips_lambda": 0.8, "id_lambda": 0.0, "l2_lambda": 1.0, "w_norm_lambda": 0.0, "lpips_lambda_crop": 0.0,
    "l2_lambda_crop": 0.0, "moco_lambda": 0.0, "stylegan_weights": "pretrained/stylegan2-ffhq-config-f.pt",
    "checkpoint_path": None, "max_epoch": 80, "max_steps": 500000, "image_interval": 100, "board_interval": 50,
    "val_interval": 1000, "save_interval": None, "local_rank": 0, "use_ddp": True, "use_wandb": False,
}


def clcae_opts(run: str) -> dict:
    """``vars(opts)`` of a CLCAE training run (``'inversion'`` or ``'contrastive'``), with its torch.device."""
    return {**CLCAE_OPTS, f"train_{run}": True, "exp_dir": f"experiments/ffhq_{run}", "device": torch.device("cuda", 0)}


# ----------------------------------------------------------------------------- the files


def _sizes(real: bool) -> dict:
    return REAL if real else SMALL


def build(name: str, real: bool = False, seed: int = 0):
    """The object the publisher's ``torch.save`` wrote for MANIFEST entry ``name`` (see the module doc)."""
    z = _sizes(real)
    d, c = z["style_dim"], 8 * z["width"]
    if name == "generator":   # convert_weight.py: {'g_ema', 'latent_avg'}, + 'g' (--gen), + 'd' (--disc)
        gen = generator_spec(z["channels"], d)
        return {"g_ema": state(gen, seed, real), "latent_avg": torch.empty(d, device="meta") if real else
                0.1 * torch.randn(d, generator=torch.Generator().manual_seed(seed)),
                "g": state(gen, seed + 1, real), "d": state(discriminator_spec(z["channels"]), seed, real,
                                                              upsample_kernels=False)}
    if name == "arcface":   # Learner.py: torch.save(model.state_dict()), a bare state dict
        return state(arcface_spec(z["width"]), seed, real)
    if name == "lpips_alexnet":
        return state(alexnet_spec(z["alex_hidden"]), seed, real)
    if name == "inception":
        return state(inception_spec(), seed, real, metadata=False)
    if name in ("interfacegan_age", "interfacegan_smile"):
        return _unit((1, 512), seed + zlib.crc32(name.encode()), real)
    if name == "interfacegan_pose":   # [1, 18, 512]: one unit vector on every W+ layer
        row = _unit((1, 512), seed + 3, real)
        return row.expand(1, N_LATENT, 512).clone()
    if name == "ganspace_pca":   # a plain dict; comp is a transposed [512, 80] block (stride [1, 80, 80])
        if real:
            return {"mean": torch.empty(1, 512, device="meta"),
                    "comp": torch.empty(512, 80, device="meta").as_strided((80, 1, 512), (1, 80, 80)),
                    "std": torch.empty(80, device="meta")}
        gen = torch.Generator().manual_seed(seed)
        block = torch.linalg.qr(torch.randn(512, 80, generator=gen))[0].contiguous()   # orthonormal columns
        return {"mean": 0.1 * torch.randn(1, 512, generator=gen), "comp": block.as_strided((80, 1, 512), (1, 80, 80)),
                "std": torch.linspace(4.0, 0.5, 80)}
    if name == "clcae_encoder":   # inversion_coach.__get_save_dict: {'state_dict', 'opts', 'iter'}
        f_channels = z["channels"][16]   # the generator's layer-5 (16 px) output, where F enters
        spec = clcae_encoder_spec(z["width"], d, z["ff"], f_channels)
        spec += [("decoder." + k, shape, dtype) for k, shape, dtype in generator_spec(z["channels"], d)]
        if not real:
            assert c == d, "the released encoder's pyramid channels and style_dim are one width (packed in_proj)"
        return {"state_dict": state(spec, seed, real), "opts": clcae_opts("inversion"), "iter": 0.4375}
    if name == "clcae_aligner_image":   # contrastive_coach.__get_save_dict: {'state_dict', 'opts'}
        return {"state_dict": state(aligner_image_spec(z["width"], z["embed"]), seed, real),
                "opts": clcae_opts("contrastive")}
    if name == "clcae_aligner_latent":
        return {"state_dict": state(aligner_latent_spec(d, z["ff"], z["embed"]), seed, real),
                "opts": clcae_opts("contrastive")}
    raise KeyError(f"no writer for {name!r}")


NAMES = ("generator", "arcface", "lpips_alexnet", "inception", "interfacegan_age", "interfacegan_smile",
         "interfacegan_pose", "ganspace_pca", "clcae_encoder", "clcae_aligner_image", "clcae_aligner_latent")


@contextlib.contextmanager
def storage_tag(tag: str):
    """torch.save tags every storage ``tag`` (e.g. 'cuda:0', as a file saved from a GPU is)."""
    import torch.serialization as ser

    if tag == "cpu":
        yield
        return
    original = ser.location_tag
    ser.location_tag = lambda storage: tag
    try:
        yield
    finally:
        ser.location_tag = original


def save(obj, path, legacy: bool = False, device_tag: str = "cpu") -> Path:
    """``torch.save`` in the given container (legacy pickle or zip) with the given storage tag."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with storage_tag(device_tag):
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def write(name: str, path, seed: int = 0) -> Path:
    """Write the stand-in of MANIFEST entry ``name`` at ``path`` in its real container and device tag."""
    return save(build(name, seed=seed), path, legacy=LAYOUTS[name]["container"] == "legacy_pickle",
                device_tag=DEVICE_TAG.get(name, "cpu"))


# ----------------------------------------------------------------------------- reading a layout back


def pattern(key: str) -> str:
    """layouts.json's key pattern: every all-digit part of a dotted key becomes N."""
    return ".".join("N" if re.fullmatch(r"\d+", part) else part for part in key.split("."))


def summary(sd: dict) -> dict:
    """What layouts.json records of a state dict: count, first and last key, key patterns, dtypes."""
    keys = list(sd)
    return {"n_keys": len(keys), "first_key": keys[0], "last_key": keys[-1],
            "key_patterns": dict(Counter(pattern(k) for k in keys)),
            "dtypes": dict(Counter(str(v.dtype).removeprefix("torch.") for v in sd.values()))}


def storage_tags(path) -> set[str]:
    """The device tag of every storage in a torch.save file (read weights-only onto the CPU)."""
    tags: set[str] = set()

    def record(storage, location):
        tags.add(location)
        return storage

    torch.load(path, map_location=record, weights_only=True)
    return tags


def container(path) -> str:
    """'zip' (torch.save's default since 1.6) or 'legacy_pickle' (the magic-number pickle before it)."""
    import zipfile

    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as f:
        head = f.read(4)
    return "legacy_pickle" if head.startswith(b"\x80\x02\x8a\x0a") else "unknown"
