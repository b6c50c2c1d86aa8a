"""CLCAE's contrastive aligner: an image encoder h_I and a latent encoder h_w (CLIP-like).

Both map to unit vectors in a shared space; training pulls the embedding of an image
I = G(w) towards that of its own w (InfoNCE, :mod:`clcae.losses`). Once trained and frozen,
it scores how well an inverted w fits an image (the L_align term of the encoder loss).

Architecture as in the official models (``best_model_image.pt`` / ``best_model_latent.pt``):
    h_I: image - image_avg -> IR-SE body -> T1 -> map2style -> Linear/BN/ReLU/Linear -> unit
    h_w: w - w_avg -> 3 post-norm transformer layers (coarse, medium, fine) -> same head -> unit
Sizes come from :class:`AlignerConfig`; the defaults are the published ones.

Our key layout differs from the official in three renames, done by
:func:`convert_official_aligner`: ``encoder.styles.0.*`` -> ``image_encoder.map2style.*``,
``encoder.*`` -> ``image_encoder.encoder.*``, the latent keys gain ``latent_encoder.``; the
official image encoder's ``latlayer1/2`` are dropped (its image mode never uses them).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clcae.io import CheckpointError, load_state_strict, read_checkpoint, read_state_dict, save_torch
from clcae.nets.irse import infer_body
from clcae.nets.psp import Centred, FeaturePyramid, Map2Style, check_pyramid_sizes


@dataclass
class AlignerConfig:
    """Sizes of the aligner. Defaults: the official FFHQ models (256 px, IR-SE50, 512-d)."""
    image_size: int = 256  # input side; T1 is image_size / 16
    num_layers: int = 50  # IR depth: 18, 34, 50, 100, 152
    mode: str = "ir_se"
    width: int = 64  # base channels; image features are 8 * width
    style_dim: int = 512  # w dimension = transformer d_model
    embed_dim: int = 512  # shared embedding dimension
    heads: int = 4
    ff_dim: int = 1024
    num_tokens: int = 1  # latent tokens (1: a single w; pos_embedding [1, num_tokens, style_dim])
    dropout: float = 0.1  # transformer dropout (official 0.1; off in eval)
    init_temperature: float = 0.07

    def __post_init__(self):
        check_pyramid_sizes("AlignerConfig", self.image_size, self.num_layers, self.mode)
        if self.style_dim % self.heads:
            raise ValueError(f"AlignerConfig.style_dim ({self.style_dim}) must be divisible by heads ({self.heads})")
        if not 0 < self.init_temperature:
            raise ValueError(f"AlignerConfig.init_temperature must be > 0, got {self.init_temperature}")


class Projection(nn.Module):
    """Linear (no bias) -> BatchNorm1d -> ReLU -> Linear (no bias): the official projection head."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int):
        super().__init__()
        self.lin1 = nn.Linear(n_in, n_hidden, bias=False)  # BN's shift makes a bias redundant
        self.bn = nn.BatchNorm1d(n_hidden)
        self.lin2 = nn.Linear(n_hidden, n_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.bn(self.lin1(x))))  # [B, n_out]


class TransformerLayer(nn.Module):
    """Post-norm transformer encoder layer (DETR style): the positional embedding is added to
    queries and keys only, values are the plain tokens. Keys match ``nn.TransformerEncoderLayer``.
    """

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, ff_dim)
        self.linear2 = nn.Linear(ff_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)  # inside the feed-forward
        self.dropout1 = nn.Dropout(dropout)  # on the attention branch
        self.dropout2 = nn.Dropout(dropout)  # on the feed-forward branch

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        qk = x + pos  # [B, N, D]
        attn = self.self_attn(qk, qk, x, need_weights=False)[0]
        x = self.norm1(x + self.dropout1(attn))
        ff = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm2(x + self.dropout2(ff))  # [B, N, D]


class ImageEncoder(nn.Module):
    """h_I: a centred image [B, 3, S, S] -> unit embedding [B, E] (map2style on T1 + projection)."""

    def __init__(self, image_size: int = 256, num_layers: int = 50, mode: str = "ir_se", width: int = 64,
                 embed_dim: int = 512):
        super().__init__()
        self.image_size = image_size
        channels = 8 * width
        self.encoder = FeaturePyramid(num_layers, mode, width, lateral=False)
        self.map2style = Map2Style(channels, channels, image_size // 16)
        self.image_projection = Projection(channels, channels, embed_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"ImageEncoder built for {self.image_size}px images got shape {list(image.shape)}")
        t1 = self.encoder.coarse(image)  # [B, C, S/16, S/16]
        h = self.map2style(t1)  # [B, C]
        return F.normalize(self.image_projection(h), dim=-1)  # [B, E]


class LatentEncoder(nn.Module):
    """h_w: a centred latent [B, D] or [B, N, D] -> unit embedding [B, E].

    Three transformer layers over the N latent tokens (N = 1 for a single w, where the
    attention softmax is over one key and the positional embedding has no effect), tokens
    averaged, then the projection head.
    """

    def __init__(self, style_dim: int = 512, embed_dim: int = 512, heads: int = 4, ff_dim: int = 1024,
                 num_tokens: int = 1, dropout: float = 0.1):
        super().__init__()
        self.style_dim, self.num_tokens = style_dim, num_tokens
        self.pos_embedding = nn.Parameter(torch.randn(1, num_tokens, style_dim))
        self.coarse = TransformerLayer(style_dim, heads, ff_dim, dropout)
        self.medium = TransformerLayer(style_dim, heads, ff_dim, dropout)
        self.fine = TransformerLayer(style_dim, heads, ff_dim, dropout)
        self.latent_projection = Projection(style_dim, style_dim, embed_dim)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = w.unsqueeze(1) if w.dim() == 2 else w  # [B, N, D]
        if tuple(x.shape[1:]) != (self.num_tokens, self.style_dim):
            raise ValueError(f"LatentEncoder expects w of shape [B, {self.style_dim}] or "
                             f"[B, {self.num_tokens}, {self.style_dim}], got {list(w.shape)}")
        for layer in (self.coarse, self.medium, self.fine):
            x = layer(x, self.pos_embedding)  # [B, N, D]
        return F.normalize(self.latent_projection(x.mean(1)), dim=-1)  # [B, E]


class Aligner(Centred):
    """h_I and h_w with the learnable log inverse temperature and the centring statistics.

    ``image_avg`` [1, 3, S, S] and ``w_avg`` [1, D] are buffers (saved with the weights) so a
    frozen aligner embeds raw images and latents; set them with :meth:`set_averages`.
    """

    def __init__(self, cfg: AlignerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or AlignerConfig()
        self.image_encoder = ImageEncoder(cfg.image_size, cfg.num_layers, cfg.mode, cfg.width, cfg.embed_dim)
        self.latent_encoder = LatentEncoder(cfg.style_dim, cfg.embed_dim, cfg.heads, cfg.ff_dim, cfg.num_tokens,
                                            cfg.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.init_temperature)))
        self.register_buffer("image_avg", torch.zeros(1, 3, cfg.image_size, cfg.image_size))
        self.register_buffer("w_avg", torch.zeros(1, cfg.style_dim))

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image - self.image_avg)  # [B, E]

    def embed_latent(self, w: torch.Tensor) -> torch.Tensor:
        return self.latent_encoder(w - (self.w_avg if w.dim() == 2 else self.w_avg[:, None]))  # [B, E]

    def forward(self, image: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h_image [B, E], h_latent [B, E], logit_scale []) for :class:`clcae.losses.InfoNCELoss`."""
        return self.embed_image(image), self.embed_latent(w), self.logit_scale


# ----------------------------------------------------------------------------- checkpoints


def save_aligner(model: Aligner, path: str | os.PathLike, **extra) -> None:
    """Atomically write ``{'state_dict', 'config', **extra}``; :func:`load_aligner` reads it back."""
    save_torch({"state_dict": model.state_dict(), "config": asdict(model.cfg), **extra}, path)


def load_aligner(path: str | os.PathLike, device: str | torch.device = "cpu", trust: bool | None = None) -> Aligner:
    """Load an aligner written by :func:`save_aligner`; eval mode (freeze it yourself if needed).

    Read weights-only by :func:`clcae.io.read_checkpoint` (``trust`` as there)."""
    source = os.fspath(path)
    ckpt = read_checkpoint(source, trust=trust)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "state_dict" not in ckpt:
        hint = ""
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
        if any(str(k).startswith(("encoder.", "pos_embedding")) for k in state):
            hint = " (an official CLCAE checkpoint? use load_official_aligner(image_ckpt, latent_ckpt))"
        raise CheckpointError(f"{source}: not an aligner checkpoint: expected 'state_dict' and 'config' entries{hint}")
    try:
        cfg = AlignerConfig(**ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad aligner config: {e}") from e
    model = Aligner(cfg)
    load_state_strict(model, ckpt["state_dict"], source)
    return model.to(device).eval()


# official checkpoints

_DROPPED = ("encoder.latlayer1.", "encoder.latlayer2.")  # built but unused by the official image mode


def convert_official_aligner(image_state: dict, latent_state: dict) -> dict:
    """Official image/latent state dicts -> one state dict in :class:`Aligner`'s layout (no buffers)."""
    out = {}
    for key, value in image_state.items():
        if key.startswith(_DROPPED):
            continue
        if key.startswith("encoder.styles.0."):
            out["image_encoder.map2style." + key[len("encoder.styles.0."):]] = value
        elif key.startswith(("encoder.", "image_projection.")):
            out["image_encoder." + key] = value
        else:  # logit_scale, and anything unknown (reported by the strict load)
            out[key] = value
    for key, value in latent_state.items():
        out["latent_encoder." + key] = value
    return out


def infer_official_aligner_config(image_state: dict, latent_state: dict, heads: int = 4,
                                  source: str = "<state dict>") -> AlignerConfig:
    """AlignerConfig from the official state dicts' shapes (heads cannot be read off; official: 4)."""
    required = {"image": (image_state, ("encoder.styles.0.convs.0.weight", "image_projection.lin2.weight")),
                "latent": (latent_state, ("pos_embedding", "coarse.linear1.weight"))}
    for what, (state, keys) in required.items():
        missing = [k for k in keys if k not in state]
        if missing:
            raise CheckpointError(f"{source}: not an official CLCAE {what} encoder state dict: missing {missing}")
    body = infer_body(image_state, "encoder.", source)
    n_convs = sum(1 for k in image_state if k.startswith("encoder.styles.0.convs.") and k.endswith(".weight"))
    _, num_tokens, style_dim = latent_state["pos_embedding"].shape
    return AlignerConfig(image_size=16 * 2 ** n_convs, num_layers=body["num_layers"], mode=body["mode"],
                         width=body["width"], style_dim=style_dim,
                         embed_dim=image_state["image_projection.lin2.weight"].shape[0], heads=heads,
                         ff_dim=latent_state["coarse.linear1.weight"].shape[0], num_tokens=num_tokens)


def load_official_aligner(image_ckpt, latent_ckpt, image_avg: torch.Tensor | None = None,
                          w_avg: torch.Tensor | None = None, heads: int = 4, trust: bool | None = None) -> Aligner:
    """Build an :class:`Aligner` from the official ``best_model_image.pt`` / ``best_model_latent.pt``.

    Each checkpoint may be a path, the loaded ``{'state_dict': ..., 'opts': ...}`` or a bare
    state dict. The official checkpoints carry no centring statistics: pass ``image_avg``
    (the average image, as the official forward subtracts it) and ``w_avg`` (the generator's
    latent_avg). Paths are read weights-only by :func:`clcae.io.read_checkpoint` (``trust`` as
    there; the official ``opts`` load as they are). Returned in eval mode.
    """
    image_state, image_source = read_state_dict(image_ckpt, "<image checkpoint>", trust=trust)
    latent_state, latent_source = read_state_dict(latent_ckpt, "<latent checkpoint>", trust=trust)
    source = f"{image_source} + {latent_source}"
    cfg = infer_official_aligner_config(image_state, latent_state, heads, source)
    model = Aligner(cfg)
    state = convert_official_aligner(image_state, latent_state)
    state.update(image_avg=model.image_avg, w_avg=model.w_avg)
    if "logit_scale" in state:
        state["logit_scale"] = state["logit_scale"].reshape(())
    load_state_strict(model, state, source)
    model.set_averages(image_avg, w_avg)
    return model.eval()

