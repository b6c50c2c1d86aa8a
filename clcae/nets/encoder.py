"""CLCAE's inversion encoder: image -> w, w+ and f, built from w by cross-attention.

The official encoder (``GradualStyleEncoder`` of CLCAE's ``psp_encoders.py``, inside ``AFPSP``):

    T1, T2, T3 = IR-SE pyramid(x - image_avg)          # strides 16 / 8 / 4
    w_off = map2style(T1);  w = w_off + w_avg          # the "good w" the aligner scores
    dw_0 = w_off;  dw_i = map2style_i(T1 | T2 | T3)    # i = 1..N-1, pSp's coarse/medium/fine split
    w+_i = w + Block_i(query = w_off, key/value = dw_i)
    f = CNN(Block_F(query = every position of T3, key/value = w_off))

Each block is DETR's post-norm cross-attention layer: x = LN(q + Attn(q, kv));
x = LN(x + FFN(x)). Every key/value sequence is a single token, so the attention softmax is
identically 1 and Attn(q, kv) = out_proj(v_proj(kv)) whatever the query: the blocks reduce to
projections of w (the query enters through the residual only). That is the official
behaviour and is kept as is; :class:`CrossAttention` is the general multi-token operation.

Switches (:class:`EncoderConfig`) give the baselines and the paper's ablations:
  * ``w_attention=False``: pSp's W+, w+_i = w_avg + dw_i; no attention blocks. The reported w
    is w+_0 (the first, coarse head on T1, like e4e's base code), so G(w) stays defined.
    (The official ``no_w_attention`` ablation instead adds w again, w+_i = w + dw_i.)
  * ``f_attention=False``: f = CNN(T3) alone, as the Feature-Style encoder (the same CNN as the
    full model, so the ablation removes only the attention; the official ablation swaps in a
    conv/BN/PReLU stack).
  * ``use_f=False``: W+ only (pSp/e4e); no F parameters, ``f`` is None.

Sizes: the number of layers N, style_dim and the F layer's shape come from the generator
(:meth:`EncoderConfig.from_generator`); depth and width of the IR-SE pyramid from the config.
The published model: IR-SE50, width 64, 256 px input, N = 18 x 512, F = 512 x 16 x 16.

:func:`load_official_encoder` reads the released ``{'state_dict': {encoder.*, decoder.*},
'opts', 'iter'}`` checkpoint; :func:`save_encoder` / :func:`load_encoder` are our own format.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from clcae.io import CheckpointError, load_state_strict, read_checkpoint, save_torch
from clcae.nets.irse import infer_body
from clcae.nets.psp import Centred, FeaturePyramid, Map2Style, check_pyramid_sizes
from clcae.nets.stylegan2 import FEATURE_INSERTS, Generator, generator_from_state

# W+ layers [0, COARSE) read T1, [COARSE, MEDIUM) T2, the rest T3 (pSp's split, kept by CLCAE)
COARSE, MEDIUM = 3, 7


def layer_levels(n_latent: int) -> list[int]:
    """Pyramid level (0: T1, 1: T2, 2: T3) whose map2style head gives each W+ layer's offset."""
    return [0 if i < COARSE else 1 if i < MEDIUM else 2 for i in range(n_latent)]


@dataclass
class EncoderConfig:
    """Sizes and switches of the encoder; plain types only (saved as a dict in checkpoints)."""
    image_size: int  # encoder input side (T1/T2/T3 are image_size / 16, / 8, / 4)
    style_dim: int  # generator's w dimension
    n_latent: int  # generator's number of W+ layers
    f_channels: int  # shape of the generator's F layer output: [f_channels, f_size, f_size]
    f_size: int
    feature_layer: int = 5  # generator conv layer where f enters (1-based, conv1 = 1)
    feature_insert: str = "next_conv"  # how: official "next_conv" | ablation "replace" (Generator.synthesis)
    num_layers: int = 50  # IR-SE pyramid depth: 18, 34, 50, 100, 152
    mode: str = "ir_se"
    width: int = 64  # base channels; pyramid maps have 8 * width
    heads: int = 4  # attention heads (official 4)
    ff_mult: int = 2  # feed-forward width / d_model (official 1024 / 512)
    dropout: float = 0.1  # attention-block dropout (official 0.1; off in eval)
    w_attention: bool = True  # False: pSp's w+ = w_avg + per-layer map2style offsets
    f_attention: bool = True  # False: f = CNN(T3) alone (Feature-Style encoder)
    use_f: bool = True  # False: W+ only (pSp/e4e), no F branch

    def __post_init__(self):
        check_pyramid_sizes("EncoderConfig", self.image_size, self.num_layers, self.mode)
        if self.feature_insert not in FEATURE_INSERTS:
            raise ValueError(f"EncoderConfig.feature_insert must be one of {list(FEATURE_INSERTS)}, "
                             f"got {self.feature_insert!r}")
        if self.n_latent < 1 or self.style_dim < 1:
            raise ValueError(f"EncoderConfig: n_latent and style_dim must be >= 1, got {self.n_latent}, "
                             f"{self.style_dim}")
        for name, dim in (("style_dim", self.style_dim), ("8 * width", 8 * self.width)):
            if dim % self.heads:
                raise ValueError(f"EncoderConfig: {name} ({dim}) must be divisible by heads ({self.heads})")
        if self.use_f:
            t3 = self.image_size // 4
            ratio = t3 // self.f_size if self.f_size > 0 else 0
            if ratio < 1 or t3 % self.f_size or ratio & (ratio - 1):
                raise ValueError(f"EncoderConfig: the F layer's size {self.f_size} must divide T3's size "
                                 f"{t3} (image_size / 4) by a power of two")
            if self.f_channels < 1:
                raise ValueError(f"EncoderConfig.f_channels must be >= 1, got {self.f_channels}")
        elif self.n_latent <= MEDIUM:
            # without F and W+ layers on T3, the last lateral conv would get no gradient (DDP stalls)
            raise ValueError(f"EncoderConfig: use_f=False needs n_latent > {MEDIUM} (W+ layers that read T3), "
                             f"got {self.n_latent}")

    @property
    def f_downsamples(self) -> int:
        """Stride-2 convs from T3 (image_size / 4) to the F layer's size."""
        return int(math.log2((self.image_size // 4) // self.f_size))

    @classmethod
    def from_generator(cls, G: Generator, image_size: int, **kw) -> EncoderConfig:
        """style_dim, n_latent and the F shape read off ``G`` (at ``feature_layer``, default 5)."""
        layer = kw.pop("feature_layer", 5)
        c, h, _ = G.feature_shape(layer)
        return cls(image_size=image_size, style_dim=G.style_dim, n_latent=G.n_latent, f_channels=c, f_size=h,
                   feature_layer=layer, **kw)


class EncoderOutput(NamedTuple):
    w: torch.Tensor  # [B, D]: map2style(T1) + w_avg
    wplus: torch.Tensor  # [B, N, D]
    f: torch.Tensor | None  # [B, C, H, W] for the generator's F layer; None without the F branch


class EncoderCodes(NamedTuple):
    """What the encoder reads off an image before w enters: enough to recompute w+ and f from
    another w (the official edit, :meth:`CLCAEEncoder.decode`) without running the pyramid again."""
    w_off: torch.Tensor  # [B, D]: map2style(T1), w minus w_avg
    offsets: torch.Tensor  # [B, N - 1, D]: map2style offsets dw_1..dw_{N-1}
    t3: torch.Tensor | None  # [B, C, S/4, S/4]: the F block's queries (None without the F branch)


class CrossAttention(nn.Module):
    """Multi-head attention of queries [B, Lq, D] over keys/values [B, Lk, Dkv].

    The maths of ``nn.MultiheadAttention`` (dropout on the attention weights), with separate
    q/k/v projections so that keys and values may have another width than the queries.
    ``nn.MultiheadAttention(kdim=, vdim=, batch_first=True)`` would do the same but is not used,
    measured (CPU, fp32, batch 16; ``docs/faithfulness.md``): forwards agree bitwise for the
    one-token keys of training but gradients do not (it works in [L, B, E] layout, and projects
    k and v in one matmul: the F block's out_proj.weight grad is off by 1.2e-3, 1e-6 relative),
    and its init draws the RNG in another order, so a seeded encoder would start elsewhere.
    """

    def __init__(self, d_model: int, heads: int, kv_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        kv_dim = kv_dim or d_model
        self.heads, self.dropout = heads, dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(kv_dim, d_model)
        self.v_proj = nn.Linear(kv_dim, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):  # nn.MultiheadAttention's init
            nn.init.zeros_(lin.bias)
        if kv_dim == d_model:  # one packed in_proj_weight [3D, D], xavier-uniform as a whole
            packed = nn.init.xavier_uniform_(torch.empty(3 * d_model, d_model))
            for lin, part in zip((self.q_proj, self.k_proj, self.v_proj), packed.chunk(3)):
                lin.weight.data.copy_(part)
        else:  # separate q/k/v_proj_weight, each xavier-uniform
            for lin in (self.q_proj, self.k_proj, self.v_proj):
                nn.init.xavier_uniform_(lin.weight)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, lq, d = x.shape
        h = self.heads
        q = self.q_proj(x).view(b, lq, h, d // h).transpose(1, 2)  # [B, h, Lq, d/h]
        k = self.k_proj(context).view(b, -1, h, d // h).transpose(1, 2)  # [B, h, Lk, d/h]
        v = self.v_proj(context).view(b, -1, h, d // h).transpose(1, 2)  # [B, h, Lk, d/h]
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, d))  # [B, Lq, D]


class AttentionBlock(nn.Module):
    """The official ``CrossAttention`` layer (DETR, post-norm): attention and FFN, each residual + LN.

    The official module also builds a ``norm1`` that its forward never uses; it is left out
    here (an unused parameter would stall DDP) and dropped when converting its weights.
    """

    def __init__(self, d_model: int, heads: int, kv_dim: int | None = None, ff_dim: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        self.attn = CrossAttention(d_model, heads, kv_dim, dropout)
        self.norm_attn = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ff_dim or 2 * d_model)
        self.linear2 = nn.Linear(ff_dim or 2 * d_model, d_model)
        self.norm_ff = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm_attn(x + self.dropout(self.attn(x, context)))  # [B, Lq, D]
        ff = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm_ff(x + self.dropout(ff))  # [B, Lq, D]


class FeatureHead(nn.Module):
    """The official ``content_layer``: stride-2 3x3 convs, each + LeakyReLU, from T3 to the F size.

    With no downsampling needed (T3 already at the F size, e.g. 64 px input, 16x16 F layer),
    one stride-1 conv keeps a learned map (and the channel change) in place.
    """

    def __init__(self, in_c: int, out_c: int, downsamples: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(max(downsamples, 1)):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, 2 if downsamples else 1, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)  # [B, out_c, H / 2**downsamples, W / 2**downsamples]


class CLCAEEncoder(Centred):
    """image -> (w, w+, f); see the module docstring for the structure and the switches.

    Buffers ``w_avg`` [D] (the generator's latent_avg) and ``image_avg`` [1, 3, S, S] (the
    average training image) are saved with the weights; set them with :meth:`set_averages`.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        s, d, c = cfg.image_size, cfg.style_dim, 8 * cfg.width
        self.levels = layer_levels(cfg.n_latent)
        sides = (s // 16, s // 8, s // 4)
        self.pyramid = FeaturePyramid(cfg.num_layers, cfg.mode, cfg.width)
        self.w_head = Map2Style(c, d, sides[0])  # official styles.0
        self.offset_heads = nn.ModuleList(Map2Style(c, d, sides[lvl]) for lvl in self.levels[1:])  # styles_others
        self.w_blocks = None
        if cfg.w_attention:  # official cross_attention.0..N-1
            self.w_blocks = nn.ModuleList(AttentionBlock(d, cfg.heads, d, cfg.ff_mult * d, cfg.dropout)
                                          for _ in range(cfg.n_latent))
        self.f_block = self.f_head = None
        if cfg.use_f:
            if cfg.f_attention:  # official feature_cross_attention
                self.f_block = AttentionBlock(c, cfg.heads, d, cfg.ff_mult * c, cfg.dropout)
            self.f_head = FeatureHead(c, cfg.f_channels, cfg.f_downsamples)  # official content_layer
        self.register_buffer("w_avg", torch.zeros(d))
        self.register_buffer("image_avg", torch.zeros(1, 3, s, s))

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        """The official forward: ``x`` [B, 3, S, S] already minus the average image."""
        return self.decode(self.codes(x))

    def codes(self, x: torch.Tensor) -> EncoderCodes:
        """The pyramid's part of :meth:`encode` (``x`` already minus the average image)."""
        levels = self.pyramid(x)  # T1 [B, C, S/16, S/16], T2 [.., S/8], T3 [.., S/4]
        w_off = self.w_head(levels.t1)  # [B, D]
        offsets = [head(levels[lvl]) for head, lvl in zip(self.offset_heads, self.levels[1:])]
        dw = torch.stack(offsets, 1) if offsets else w_off.new_zeros(w_off.shape[0], 0, w_off.shape[1])
        return EncoderCodes(w_off, dw, levels.t3 if self.f_head is not None else None)

    def decode(self, codes: EncoderCodes, edit: torch.Tensor | None = None) -> EncoderOutput:
        """w, w+ and f from the codes; ``edit`` [B|1, N, D] moves w *before* the cross-attention,
        as the official edit (``AFPSP.forward(edit_offset=...)``): w' = w + edit[:, 0] is the
        first offset, the key/value of the F block and, per layer i, the query is w_off + edit[:, i]
        (every row is the same for an InterFaceGAN edit, the official case; rows that are zero
        leave their layer as it was). Without attention (pSp), w+ + edit."""
        w_off = codes.w_off
        shift = None if edit is None else edit.to(w_off).expand(w_off.shape[0], -1, -1)  # [B, N, D]
        w_off0 = w_off if shift is None else w_off + shift[:, 0]  # the official edit_offset[:, 0, :]
        w = w_off0 + self.w_avg
        dw = torch.cat([w_off0[:, None], codes.offsets], 1)  # [B, N, D]
        if self.w_blocks is None:
            wplus = self.w_avg + dw  # pSp: w+_0 = w
            if shift is not None:
                wplus = torch.cat([wplus[:, :1], wplus[:, 1:] + shift[:, 1:]], 1)
        else:
            q = w_off[:, None].expand_as(dw) if shift is None else w_off[:, None] + shift  # [B, N, D]: layer i's query
            refine = torch.cat([block(q[:, i:i + 1], dw[:, i:i + 1]) for i, block in enumerate(self.w_blocks)], 1)
            wplus = q + self.w_avg + refine  # [B, N, D]
        f = None
        if self.f_head is not None:
            t3 = codes.t3
            if self.f_block is not None:
                b, c, h, wd = t3.shape
                tokens = self.f_block(t3.flatten(2).transpose(1, 2), w_off0[:, None])  # [B, HW, C]
                t3 = tokens.transpose(1, 2).reshape(b, c, h, wd)  # [B, C, H, W]
            f = self.f_head(t3)  # [B, f_channels, f_size, f_size]
        return EncoderOutput(w, wplus, f)

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        """``x`` [B, 3, S, S] in [-1, 1] at the encoder's image size."""
        return self.decode(self.image_codes(x))

    def image_codes(self, x: torch.Tensor) -> EncoderCodes:
        """:meth:`codes` of images ``x`` [B, 3, S, S] in [-1, 1] (centred here, as :meth:`forward`)."""
        s = self.cfg.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"CLCAEEncoder expects images [B, 3, {s}, {s}], got {list(x.shape)} "
                             f"(resize to the encoder's image_size first)")
        return self.codes(x - self.image_avg)

    @torch.no_grad()
    def init_weights(self, gain: float = 0.02) -> None:
        """The official initialisation (``BaseNetwork.init_weights`` in ``models/base_network.py``,
        called by ``inversion_coach.py`` before training): convs N(0, gain) with zero bias, linears
        (and map2style's EqualLinear) truncated N(0, 0.02) with their bias as it was, BatchNorm2d and
        LayerNorm N(1, gain) with zero shift; PReLU slopes and the attention's packed q/k/v
        projections (``in_proj_weight``, which that function does not reach) keep their init."""
        qkv = {id(m) for blk in self.modules() if isinstance(blk, CrossAttention)
               for m in (blk.q_proj, blk.k_proj, blk.v_proj)}
        for m in self.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                nn.init.normal_(m.weight, 1.0, gain)
                nn.init.zeros_(m.bias)
            elif (isinstance(m, nn.Linear) and id(m) not in qkv) or type(m).__name__ == "EqualLinear":
                nn.init.trunc_normal_(m.weight, std=0.02)
            elif isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.no_grad()
    def init_from_aligner(self, aligner) -> None:
        """Warm start as the official training does: the pyramid body and the w head from the
        aligner's image encoder (:class:`clcae.nets.aligner.Aligner`), whose sizes must match."""
        image_encoder = aligner.image_encoder
        pairs = [(self.pyramid, image_encoder.encoder, "pyramid"), (self.w_head, image_encoder.map2style, "w head")]
        for ours, theirs, what in pairs:
            own = ours.state_dict()
            src = theirs.state_dict()
            bad = [k for k in src if k not in own or own[k].shape != src[k].shape]
            if bad:
                raise ValueError(f"init_from_aligner: the aligner's {what} does not fit the encoder's "
                                 f"(e.g. {bad[0]}: aligner {list(src[bad[0]].shape)} vs encoder "
                                 f"{list(own[bad[0]].shape) if bad[0] in own else 'absent'})")
            ours.load_state_dict(src, strict=False)  # the aligner's pyramid has no lateral convs


def check_compatible(encoder: nn.Module, G: Generator) -> None:
    """Raise ValueError naming each size on which ``encoder`` and ``G`` disagree."""
    cfg = getattr(encoder, "module", encoder).cfg
    problems = []
    if cfg.style_dim != G.style_dim:
        problems.append(f"style_dim: encoder {cfg.style_dim}, generator {G.style_dim}")
    if cfg.n_latent != G.n_latent:
        problems.append(f"W+ layers (n_latent): encoder {cfg.n_latent}, generator {G.n_latent} "
                        f"(a {G.size} px generator)")
    if cfg.use_f:
        want = (cfg.f_channels, cfg.f_size, cfg.f_size)
        if not 1 <= cfg.feature_layer <= G.num_layers:
            problems.append(f"feature_layer: encoder {cfg.feature_layer}, generator has conv layers "
                            f"1..{G.num_layers}")
        elif G.feature_shape(cfg.feature_layer) != want:
            problems.append(f"F layer {cfg.feature_layer} shape [C, H, W]: encoder {list(want)}, "
                            f"generator {list(G.feature_shape(cfg.feature_layer))}")
        elif problem := G.feature_insert_problem(cfg.feature_layer, cfg.feature_insert):
            problems.append(problem)
    if problems:
        raise ValueError("encoder and generator do not fit: " + "; ".join(problems))


# ----------------------------------------------------------------------------- own checkpoints

_CONFIG_FIELDS = {f.name for f in fields(EncoderConfig)}


def save_encoder(encoder: nn.Module, path: str | os.PathLike, **meta) -> None:
    """Atomically write ``{'state_dict', 'config', **meta}``; :func:`load_encoder` reads it back."""
    encoder = getattr(encoder, "module", encoder)
    clash = {"state_dict", "config"} & set(meta)
    if clash:
        raise ValueError(f"save_encoder: meta keys {sorted(clash)} are reserved")
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    save_torch({"state_dict": state, "config": asdict(encoder.cfg), **meta}, path)


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu",
                 trust: bool | None = None) -> CLCAEEncoder:
    """Load an encoder written by :func:`save_encoder` (weights-only read); eval mode."""
    source = os.fspath(path)
    return encoder_from_checkpoint(read_checkpoint(source, trust=trust), source).to(device).eval()


def encoder_from_checkpoint(ckpt, source: str) -> CLCAEEncoder:
    """The encoder of an already-read :func:`save_encoder` checkpoint (``source`` names it in errors)."""
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not (isinstance(config, dict) and "n_latent" in config and isinstance(ckpt.get("state_dict"), dict)):
        raise CheckpointError(f"{source}: not a CLCAE encoder checkpoint written by save_encoder: it is "
                              f"{describe_checkpoint(ckpt)}")
    unknown = sorted(set(config) - _CONFIG_FIELDS)
    if unknown:
        raise CheckpointError(f"{source}: encoder config has unknown fields {unknown} (written by a newer clcae?)")
    try:
        cfg = EncoderConfig(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad encoder config: {e}") from e
    model = CLCAEEncoder(cfg)
    load_state_strict(model, ckpt["state_dict"], source)
    return model


def describe_checkpoint(ckpt) -> str:
    """What a loaded checkpoint looks like, for error messages ('a pSp/e4e encoder', ...)."""
    if not isinstance(ckpt, dict):
        return f"a {type(ckpt).__name__}, not a dict"
    config = ckpt.get("config")
    if isinstance(config, dict) and "n_latent" in config:
        return "a CLCAE encoder checkpoint written by save_encoder (use load_encoder)"
    if isinstance(config, dict) and "embed_dim" in config:
        return "an aligner checkpoint written by save_aligner (use load_aligner)"
    if isinstance(ckpt.get("g_ema"), dict) or isinstance(ckpt.get("g"), dict):
        return "a StyleGAN2 generator checkpoint (rosinality layout; use load_generator)"
    state = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), dict) else ckpt
    keys = [str(k) for k in state]

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("encoder.cross_attention.") or has("encoder.feature_cross_attention.") or has("encoder.styles_others."):
        return "an official CLCAE inversion checkpoint (use load_official_encoder)"
    if has("encoder.styles.1."):
        return ("a pSp/e4e encoder checkpoint (one map2style head per layer in encoder.styles.*, no "
                "cross-attention blocks)")
    if has("image_projection."):
        return "an official CLCAE contrastive image encoder (best_model_image.pt; use load_official_aligner)"
    if "pos_embedding" in state:
        return "an official CLCAE contrastive latent encoder (best_model_latent.pt; use load_official_aligner)"
    if "style.1.weight" in state:
        return "a bare StyleGAN2 generator state dict (use load_generator)"
    if has("output_layer.") and has("body."):
        return "an ArcFace IR/IR-SE recognition net (use load_arcface)"
    return f"an unrecognised checkpoint (top-level keys {sorted(map(str, ckpt))[:8]})"


# ----------------------------------------------------------------------------- official checkpoints

# official encoder.* prefix -> ours; blocks additionally split in_proj and rename norms
_RENAMES = (("encoder.input_layer.", "pyramid.input_layer."), ("encoder.body.", "pyramid.body."),
            ("encoder.latlayer1.", "pyramid.latlayer1."), ("encoder.latlayer2.", "pyramid.latlayer2."),
            ("encoder.styles.0.", "w_head."), ("encoder.styles_others.", "offset_heads."),
            ("encoder.cross_attention.", "w_blocks."), ("encoder.feature_cross_attention.", "f_block."),
            ("encoder.content_layer.", "f_head."))
_BLOCK_RENAMES = {"multihead_attn.out_proj.": "attn.out_proj.", "norm2.": "norm_attn.", "norm3.": "norm_ff.",
                  "linear1.": "linear1.", "linear2.": "linear2."}


def convert_official_encoder(state: dict, source: str = "<state dict>") -> dict:
    """The official ``encoder.*`` keys (+ ``latent_avg``) -> :class:`CLCAEEncoder`'s layout.

    Every key is consumed: renamed, split (``in_proj_*`` -> q/k/v), or dropped for a reason
    (``norm1`` of each attention block, unused by the official forward); ``decoder.*`` is
    skipped (the generator's). Any other key raises :class:`CheckpointError`.
    """
    out, unknown = {}, []
    for key, value in state.items():
        if key.startswith("decoder."):
            continue
        if key == "latent_avg":
            out["w_avg"] = value.reshape(-1)
            continue
        for old, new in _RENAMES:  # noqa: B007 (new is used after the break)
            if key.startswith(old):
                rest = key[len(old):]
                break
        else:
            unknown.append(key)
            continue
        if new not in ("w_blocks.", "f_block."):
            out[new + rest] = value
            continue
        index, rest = (rest.split(".", 1) if new == "w_blocks." else ("", rest))
        prefix = f"{new}{index}." if index else new
        if rest.startswith("norm1."):
            continue  # built but never used by the official CrossAttention.forward
        if rest.startswith("multihead_attn.in_proj_"):
            kind = rest.rsplit("_", 1)[1]  # weight | bias
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{prefix}attn.{name}.{kind}"] = part
            continue
        for old_part, new_part in _BLOCK_RENAMES.items():
            if rest.startswith(old_part):
                out[prefix + new_part + rest[len(old_part):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: unexpected keys for the official CLCAE encoder: {len(unknown)} "
                              f"{sorted(unknown)[:6]}")
    return out


def official_key(key: str) -> str:
    """Our state-dict key -> the official one it comes from (q/k/v name their packed in_proj_*)."""
    if key == "w_avg":
        return "latent_avg"
    for old, new in _RENAMES:  # noqa: B007 (old is used after the break)
        if key.startswith(new):
            rest = key[len(new):]
            break
    else:
        return key
    if new in ("w_blocks.", "f_block."):
        index, rest = rest.split(".", 1) if new == "w_blocks." else ("", rest)
        old = f"{old}{index}." if index else old
        if rest.startswith(("attn.q_proj.", "attn.k_proj.", "attn.v_proj.")):
            return f"{old}multihead_attn.in_proj_{rest.rsplit('.', 1)[1]}"
        for theirs, ours in _BLOCK_RENAMES.items():
            if rest.startswith(ours):
                return old + theirs + rest[len(ours):]
    return old + rest


def _opts_get(opts, name: str, default=None):
    if isinstance(opts, dict):
        return opts.get(name, default)
    return getattr(opts, name, default)


def load_official_encoder(path, device: str | torch.device = "cpu", image_avg: torch.Tensor | None = None,
                          latent_avg: torch.Tensor | None = None, trust: bool | None = None,
                          ) -> tuple[CLCAEEncoder, Generator]:
    """The released CLCAE inversion checkpoint -> (encoder, generator), both in eval mode.

    ``path``: the file (``{'state_dict': {encoder.*, decoder.*}, 'opts', 'iter'}``) or that
    dict loaded. The encoder is built in the published configuration read off the shapes
    (IR-SE50, width 64, 256 px, 18 x 512, F 512 x 16 x 16, 4 heads) and the generator from
    ``decoder.*`` by the code of :func:`clcae.nets.stylegan2.load_generator`, frozen.
    w_avg (= G.latent_avg) is the ``latent_avg`` argument, else the checkpoint's (state dict or
    top level; the official code reads it from the StyleGAN2 file), else estimated from G's
    mapping. ``image_avg`` (the official code's average training image) is not in the
    checkpoint: pass it for ``encoder(x)``, or call ``encoder.encode(x - image_avg)`` as the
    official forward does. The encoder takes over
    the checkpoint's tensors (no copy): a dict passed in shares its float32 tensors with it.
    """
    source = os.fspath(path) if isinstance(path, (str, os.PathLike)) else "<official CLCAE checkpoint>"
    ckpt = read_checkpoint(source, trust=trust) if isinstance(path, (str, os.PathLike)) else path
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(str(k).startswith("encoder.styles_others.") for k in state):
        raise CheckpointError(f"{source}: not an official CLCAE inversion checkpoint (expected 'state_dict' with "
                              f"encoder.* and decoder.* keys): it is {describe_checkpoint(ckpt)}")
    if any(str(k).startswith("encoder.content_layer.0.") for k in state):
        raise CheckpointError(f"{source}: an official CLCAE checkpoint of the no_feature_attention ablation "
                              f"(conv/BN/PReLU content_layer); only the released configuration is supported")
    missing = [part for part in ("encoder.cross_attention.", "encoder.feature_cross_attention.",
                                 "encoder.content_layer.", "decoder.") if not any(k.startswith(part) for k in state)]
    if missing:
        raise CheckpointError(f"{source}: official CLCAE checkpoint without {missing} (an ablation, a "
                              f"no_res or W+-only model, or a damaged file); only the released configuration "
                              f"(W+ and F cross-attention, with its generator) is supported")
    generator = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
    if latent_avg is None:
        latent_avg = state.get("latent_avg", ckpt.get("latent_avg"))
    G = generator_from_state(generator, latent_avg, f"{source} (decoder.*)", device)

    head = "encoder.styles.0.convs."
    n_convs = sum(1 for k in state if k.startswith(head) and k.endswith(".weight"))
    body = infer_body(state, "encoder.", source)
    d = state["encoder.styles.0.linear.weight"].shape[0]
    ff = state["encoder.cross_attention.0.linear1.weight"].shape[0]
    feature_layer = _opts_get(ckpt.get("opts"), "idx_k") or 5  # AFPSP's idx_k (None means 5)
    try:
        cfg = EncoderConfig.from_generator(G, 16 * 2 ** n_convs, feature_layer=feature_layer,
                                           num_layers=body["num_layers"], mode=body["mode"], width=body["width"],
                                           heads=4, ff_mult=ff // d)
    except ValueError as e:
        raise CheckpointError(f"{source}: encoder and decoder sizes do not fit together: {e}") from e
    if d != G.style_dim:
        raise CheckpointError(f"{source}: encoder style_dim {d} vs decoder style_dim {G.style_dim}")
    with torch.device("meta"):  # no 312M-parameter init that the weights overwrite anyway
        encoder = CLCAEEncoder(cfg)
    converted = convert_official_encoder(state, source)
    converted = {k: v.float() if v.is_floating_point() else v for k, v in converted.items()}
    absent = sorted({official_key(k) for k in encoder.state_dict()} - {official_key(k) for k in converted}
                    - {"image_avg", "latent_avg"})   # both set below (the trainer's own save has no latent_avg)
    if absent:
        raise CheckpointError(f"{source}: official CLCAE checkpoint misses {len(absent)} keys {absent[:6]}"
                              f"{' ...' if len(absent) > 6 else ''} (a damaged file or another model)")
    shape = tuple(encoder.image_avg.shape)
    converted["image_avg"] = torch.zeros(shape) if image_avg is None else image_avg.float().reshape(shape).cpu()
    converted["w_avg"] = G.latent_avg.detach().to("cpu", copy=True)  # one w_avg for both
    with warnings.catch_warnings():  # the checked copy into meta tensors is a no-op; assign follows
        warnings.simplefilter("ignore", UserWarning)
        load_state_strict(encoder, converted, source)
    encoder.load_state_dict(converted, strict=True, assign=True)
    return encoder.to(device).eval(), G
