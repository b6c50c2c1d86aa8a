"""Edits of inverted images in W, W+ and F (CLCAE's section 3.3).

Given an inversion (w, w+, f) and a direction d on a layer range, with delta = strength * d,
two settings (``Editor.mode``):

``"encoder"`` (the official CLCAE edit, ``scripts/inference_edit.py`` -> ``AFPSP.forward(edit_offset=...)``;
the default for an encoder with W+ attention): the move enters w *inside the encoder*, before the
cross-attention, so w+ and f are computed again from w' = w + delta (:meth:`CLCAEEncoder.decode`,
from the codes ``invert(..., keep_codes=True)`` kept):

* W:  G(w + delta)
* W+: G(w+(w'))
* F:  G(w+(w'), f') with f' = f(w') + G5(w+(w')) - G5(w+)

``"latent"`` (the e4e / HFGI-style edit of the codes; this project's only edit before): the
encoder is not run again:

* W:  G(w + delta)                    the plain w, broadcast to every layer, then moved
* W+: G(w+ + delta)
* F:  G(w+', f') with w+' = w+ + delta and f' = f + G5(w+') - G5(w+): the encoder's detail
  feature f carries over, shifted by how the generator's own layer-5 output moves.

An encoder without W+ attention (the pSp baseline) builds w+ without w, so both settings give
w+ + delta there. At strength 0 every space gives back its inversion exactly (same code path as
``invert``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from clcae.data import resize_square
from clcae.editing.directions import Direction, LayerRange
from clcae.spaces import SPACES


@dataclass
class Edited:
    """One batch edited: the edited latents and images ([-1, 1], the inversion's size) by space."""
    w: torch.Tensor                 # [B, N, D]  w broadcast and moved
    wplus: torch.Tensor             # [B, N, D]
    f: torch.Tensor | None          # [B, C, H, W]
    images: dict[str, torch.Tensor]  # {'w', 'wplus'[, 'f']}: [B, 3, S, S]


EDIT_MODES = ("encoder", "latent")


class Editor:
    """Applies directions to inversions with one generator (and, in ``"encoder"`` mode, the encoder);
    ``feature_layer`` / ``feature_insert``: where f enters the generator."""

    def __init__(self, G, feature_layer: int = 5, batch_size: int = 32, encoder=None, mode: str = "latent",
                 feature_insert: str = "next_conv"):
        if mode not in EDIT_MODES:
            raise ValueError(f"Editor: mode must be one of {list(EDIT_MODES)}, got {mode!r}")
        if mode == "encoder" and encoder is None:
            raise ValueError("Editor: mode 'encoder' (the official edit) needs the encoder")
        self.G, self.feature_layer, self.batch_size = G, feature_layer, batch_size
        self.encoder, self.mode, self.feature_insert = encoder, mode, feature_insert

    @classmethod
    def for_encoder(cls, encoder, G, batch_size: int = 32, mode: str = "encoder") -> Editor:
        """``mode``: ``"encoder"`` (official, default) or ``"latent"``."""
        return cls(G, encoder.cfg.feature_layer, batch_size, encoder, mode, encoder.cfg.feature_insert)

    @torch.inference_mode()
    def base_features(self, inversion) -> torch.Tensor:
        """G5(w+) of an inversion ``[B, C, H, W]``: pass it to :meth:`edit` as ``g_base`` when
        editing one inversion many times (a strength sweep) to render it once."""
        return torch.cat([self.G.layer_features(wp, self.feature_layer) for wp in inversion.wplus.split(self.batch_size)])

    @torch.inference_mode()
    def edit(self, inversion, direction: Direction, strength: float | torch.Tensor,
             layers: LayerRange | None = None, spaces: tuple[str, ...] = SPACES,
             g_base: torch.Tensor | None = None) -> Edited:
        """Edit a batch (an :class:`~clcae.inversion.Inversion`); ``strength`` a float or per-image ``[B]``.

        ``layers`` overrides the direction's range; ``spaces`` picks the renders (F needs an f);
        ``g_base``: :meth:`base_features` of the inversion, if already computed."""
        direction.check_dim(self.G.style_dim)
        delta = direction.delta(torch.as_tensor(strength).cpu(), self.G.n_latent, layers)   # [B|1, N, D]
        return self.apply(inversion, delta, spaces, g_base)

    def combined_delta(self, moves: list[tuple[Direction, float]]) -> torch.Tensor:
        """The sum of several directions' moves ``[1, N, D]`` (each on its own layers): one edit of
        several attributes at once (the web page's sliders)."""
        delta = torch.zeros(1, self.G.n_latent, self.G.style_dim)
        for direction, strength in moves:
            delta = delta + direction.check_dim(self.G.style_dim).delta(strength, self.G.n_latent)
        return delta

    @torch.inference_mode()
    def apply(self, inversion, delta: torch.Tensor, spaces: tuple[str, ...] = SPACES,
              g_base: torch.Tensor | None = None) -> Edited:
        """Add ``delta [B|1, N, D]`` to every image's codes and render the ``spaces``."""
        G = self.G
        B, size = inversion.wplus.shape[0], inversion.size
        delta = delta.to(inversion.wplus.device)
        if delta.shape[0] not in (1, B):
            raise ValueError(f"edit: {delta.shape[0]} strengths for a batch of {B}")
        delta = delta.expand(B, -1, -1)
        through_encoder = self.mode == "encoder"
        if through_encoder and inversion.codes is None:
            raise ValueError("Editor (mode 'encoder', the official edit) needs the encoder's codes: invert with "
                             "keep_codes=True, or use mode 'latent'")
        w_edit = inversion.w[:, None].expand(-1, G.n_latent, -1) + delta
        want_f = "f" in spaces and inversion.f is not None
        parts = {s: [] for s in spaces if s != "f" or want_f}
        wplus_parts, f_parts = [], []
        for i in range(0, B, self.batch_size):
            sl = slice(i, i + self.batch_size)
            chunk = inversion.select(sl)
            if "w" in parts:
                parts["w"].append(resize_square(G.synthesis(w_edit[sl]), size))
            if through_encoder:
                moved = self.encoder.decode(chunk.codes, delta[sl])   # w+ and f computed again from w + delta
                wplus_edit, f_moved = moved.wplus, moved.f
            else:
                wplus_edit, f_moved = chunk.wplus + delta[sl], chunk.f
            wplus_parts.append(wplus_edit)
            if "wplus" in parts:
                image, g_edit = G.synthesis(wplus_edit, feature_layer=self.feature_layer, return_features=True)
                parts["wplus"].append(resize_square(image, size))
            elif want_f:   # G(w+') is not asked for: only its layer output, the layers above it skipped
                g_edit = G.layer_features(wplus_edit, self.feature_layer)
            if want_f:
                base = g_base[sl] if g_base is not None else G.layer_features(chunk.wplus, self.feature_layer)
                f_edit = f_moved + (g_edit - base)   # exactly f when the edit is 0
                f_parts.append(f_edit)
                parts["f"].append(resize_square(
                    G.synthesis(wplus_edit, feature=f_edit, feature_layer=self.feature_layer,
                                feature_insert=self.feature_insert), size))
        return Edited(w_edit, torch.cat(wplus_parts), torch.cat(f_parts) if want_f else None,
                      {s: torch.cat(p) for s, p in parts.items()})
