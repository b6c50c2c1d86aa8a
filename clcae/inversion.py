"""Inversion API for everything after the encoder: images -> (w, w+, f) and their renders.

``invert(encoder, G, images)`` runs the trained encoder and the frozen generator in batches
under ``torch.inference_mode()``: I1 = G(w), I2 = G(w+), I3 = G(w+, f) with f entering the
generator at its F layer as the official model does (blend 1, as at inference; the layer's toRGB
skip keeps G's own feature: ``Generator.synthesis``'s ``feature_insert``). Images of any size are resized (antialiased)
to the encoder's input side; renders come back at that side too, so inputs and
reconstructions compare pixel for pixel.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from clcae.data import resize, resize_square
from clcae.images import to_float
from clcae.io import CheckpointError, read_checkpoint
from clcae.nets.aligner import Aligner
from clcae.nets.encoder import (
    CLCAEEncoder,
    EncoderCodes,
    EncoderOutput,
    check_compatible,
    encoder_from_checkpoint,
    load_encoder,  # noqa: F401 (load_encoder: re-export)
    load_official_encoder,
)
from clcae.spaces import SPACES


def average_image(G, size: int) -> torch.Tensor:
    """G(w_avg) at the encoder's side [1, 3, S, S]: the image the encoder input is centred on (pSp)."""
    with torch.inference_mode():
        w = G.latent_avg[None, None].expand(1, G.n_latent, -1)
        return resize_square(G.synthesis(w), size).float().clone()


def load_any_encoder(path: str | os.PathLike, G, device: str | torch.device = "cpu",
                     trust: bool | None = None) -> CLCAEEncoder:
    """An encoder file of either kind, checked against ``G``, in eval mode: a clcae ``encoder.pt``
    (:func:`~clcae.nets.encoder.save_encoder`), or the released CLCAE checkpoint converted key by key
    (:func:`~clcae.nets.encoder.load_official_encoder`), centred as the official code does: on
    G(w_avg) at the encoder's side and on ``G.latent_avg``."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: encoder file not found")
    ckpt = read_checkpoint(source, trust=trust)
    ours = isinstance(ckpt, dict) and "config" in ckpt
    if ours:
        encoder = encoder_from_checkpoint(ckpt, source)
    else:   # not ours: the released layout, or load_official_encoder's error names what it is
        encoder, _ = load_official_encoder(ckpt if isinstance(ckpt, dict) else source, trust=trust)
    try:
        check_compatible(encoder, G)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    if not ours:
        encoder.set_averages(average_image(G, encoder.cfg.image_size).cpu(), G.latent_avg.detach().cpu())
    return encoder.to(device).eval()


def load_any_aligner(files: list[str], G, image_size: int, device: str | torch.device = "cpu") -> Aligner:
    """The frozen aligner of L_align from ``[aligner.pt]`` (ours, :func:`~clcae.nets.aligner.save_aligner`) or
    ``[best_model_image.pt, best_model_latent.pt]`` (the released CLCAE contrastive models, converted and
    centred on G(w_avg) at its input size and on ``G.latent_avg``, as the released encoder), checked
    against the encoder's input size and the generator's W; eval mode."""
    from clcae.nets.aligner import load_aligner, load_official_aligner

    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: aligner file not found")
    if len(files) == 1:
        aligner = load_aligner(files[0])
    elif len(files) == 2:
        aligner = load_official_aligner(*files)
        aligner.set_averages(average_image(G, aligner.cfg.image_size).cpu(), G.latent_avg.detach().cpu())
    else:
        raise ValueError(f"an aligner is one clcae aligner.pt or two released files (image, latent), got {files}")
    source = " + ".join(map(str, files))
    if aligner.cfg.image_size != image_size or aligner.cfg.style_dim != G.style_dim:
        raise CheckpointError(f"{source}: the aligner embeds {aligner.cfg.image_size} px images and "
                              f"{aligner.cfg.style_dim}-d w; the encoder here sees {image_size} px and the "
                              f"generator's w is {G.style_dim}-d")
    return aligner.to(device).eval()


@dataclass
class Inversion:
    """One batch inverted: latents and the three reconstructions, images in [-1, 1] (a render is
    None when ``invert`` was not asked for it, ``size`` is their side all the same)."""
    w: torch.Tensor                   # [B, D]
    wplus: torch.Tensor               # [B, N, D]
    f: torch.Tensor | None            # [B, C, H, W] (None for a W+-only encoder)
    image_w: torch.Tensor | None      # [B, 3, S, S]  G(w)
    image_wplus: torch.Tensor | None  # [B, 3, S, S]  G(w+)
    image_f: torch.Tensor | None      # [B, 3, S, S]  G(w+, f)
    codes: EncoderCodes | None = None  # the encoder's codes, for the official edit (invert(keep_codes=True))
    size: int = 0                     # S: the side renders (and edits of this inversion) come at

    def select(self, index) -> Inversion:
        """The images at ``index`` (a slice, or an index tensor that may repeat images), codes too."""
        def take(v):
            return v[index] if torch.is_tensor(v) else v
        codes = None if self.codes is None else EncoderCodes(*(take(c) for c in self.codes))
        return Inversion(**{k: take(getattr(self, k)) for k in self.__dataclass_fields__ if k != "codes"},
                         codes=codes)

    @classmethod
    def cat(cls, parts: list[Inversion]) -> Inversion:
        """The inversions of consecutive chunks as one (codes too, when the chunks kept them)."""
        def join(values):
            return values[0] if values[0] is None or isinstance(values[0], int) else torch.cat(values)
        codes = None if parts[0].codes is None else EncoderCodes(*map(join, zip(*(p.codes for p in parts))))
        return cls(**{k: join([getattr(p, k) for p in parts]) for k in cls.__dataclass_fields__ if k != "codes"},
                   codes=codes)

    def images(self) -> dict[str, torch.Tensor]:
        """The reconstructions by space: {'w', 'wplus'[, 'f']} (those rendered)."""
        out = {"w": self.image_w, "wplus": self.image_wplus, "f": self.image_f}
        return {space: image for space, image in out.items() if image is not None}


def render(G, out: EncoderOutput, size: int, feature_layer: int = 5, feature_blend: float = 1.0,
           return_features: bool = False, spaces: tuple[str, ...] = SPACES, feature_insert: str = "next_conv",
           noise_mode: str = "const"):
    """The renders of one encoder output at side ``size``: {'w': G(w), 'wplus': G(w+)[, 'f': G(w+, f)]},
    those of ``spaces`` only (F needs an f).

    With ``return_features`` also G's own output at ``feature_layer`` for w+ (G5(w+), the target
    of the F regularisation), captured in the G(w+) pass (without G(w+): by the layers up to it).
    ``noise_mode='random'`` draws fresh noise for every render (the official trainer).
    """
    images, f_gen = {}, None
    if "w" in spaces:
        images["w"] = resize_square(G.synthesis(out.w[:, None].expand(-1, G.n_latent, -1), noise_mode=noise_mode),
                                    size)
    if "wplus" in spaces:
        image_wplus, f_gen = G.synthesis(out.wplus, noise_mode=noise_mode, feature_layer=feature_layer,
                                         return_features=True)
        images["wplus"] = resize_square(image_wplus, size)
    elif return_features:
        f_gen = G.layer_features(out.wplus, feature_layer, noise_mode)
    if "f" in spaces and out.f is not None:
        image_f = G.synthesis(out.wplus, noise_mode=noise_mode, feature=out.f, feature_layer=feature_layer,
                              feature_blend=feature_blend, feature_insert=feature_insert)
        images["f"] = resize_square(image_f, size)
    return (images, f_gen) if return_features else images


@torch.inference_mode()
def invert(encoder: CLCAEEncoder, G, images: torch.Tensor, batch_size: int = 32, keep_codes: bool = False,
           spaces: tuple[str, ...] = SPACES) -> Inversion:
    """Invert a batch of images (uint8 [0, 255] or float [-1, 1], [B, 3, H, W], any H = W).

    Runs in eval mode in chunks of ``batch_size``; results are on the encoder's device.
    ``keep_codes``: keep the encoder's :class:`EncoderCodes` (T3 included: 8 MB an image at paper
    scale) for the official edit (:class:`clcae.editing.Editor`). ``spaces``: the renders to make
    (``()``: the codes alone, e.g. to edit them at once).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"invert: images must be [B, 3, H, W], got {list(images.shape)}")
    check_compatible(encoder, G)
    was_training = encoder.training
    encoder.eval()
    device = encoder.w_avg.device
    size, layer, insert = encoder.cfg.image_size, encoder.cfg.feature_layer, encoder.cfg.feature_insert
    parts: list[Inversion] = []
    for chunk in images.split(batch_size):
        x = resize(to_float(chunk).to(device), size)
        codes = encoder.image_codes(x)
        out = encoder.decode(codes)
        rec = render(G, out, size, layer, spaces=spaces, feature_insert=insert)
        parts.append(Inversion(out.w, out.wplus, out.f, rec.get("w"), rec.get("wplus"), rec.get("f"),
                               codes if keep_codes else None, size))
    encoder.train(was_training)
    return Inversion.cat(parts)
