"""Editing scores: does an edit move its attribute, leave the others and the person alone, and
stay realistic?  Judges come in as callables (a world's ``attributes``, ``identity``,
``features``, ``perceptual``); this module never asks which world it runs in.

Per image, for each direction, space and strength (against the same space's unedited render):

* ``target_change``: the edited attribute's change; ``target_gain``: the change times the sign
  the edit should have (> 0: the right way); ``right_way``: the change has that sign;
* ``other_drift``: mean absolute change of the other attributes (in their own units);
* ``identity``: cosine of identity embeddings, edited image vs the *input* image;
  ``identity_kept``: above the same-person threshold (from the verification curve);

per set: a Frechet distance between the edited images' features and the real test images';
and e4e's latent editing consistency (edit, re-invert, edit back, compare).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from clcae.editing.directions import Direction
from clcae.editing.edit import Editor
from clcae.metrics.frechet import FrechetReference
from clcae.metrics.mse import mse01
from clcae.spaces import SPACES

Describe = Callable[[torch.Tensor], dict]


@dataclass
class EditJudges:
    """What scores an edit: ``describe(x)`` -> ``{'attributes' [B, K] (in ``attribute_names`` order),
    'identity' [B, E] (unit), 'features' [B, F]}`` (a world's one-pass readout) and
    ``perceptual(x, y) [B]``."""
    describe: Describe
    attribute_names: list[str]
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    same_person_threshold: float | None = None   # None: identity_kept is not scored
    batch_size: int = 128

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The readout of a whole set (clamped to [-1, 1], as saved images are), in batches, on the CPU."""
        with torch.inference_mode():
            parts = [self.describe(x.clamp(-1, 1)) for x in images.split(self.batch_size)]
        return {k: torch.cat([p[k] for p in parts]).float().cpu() for k in parts[0]}


def edit_sweep(editor: Editor, inversion, inputs: torch.Tensor, directions: dict[str, Direction],
               strengths: list[float], judges: EditJudges, real_features: torch.Tensor,
               spaces: tuple[str, ...] = SPACES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every (direction, space, strength) on one batch of inversions of ``inputs`` ([-1, 1]).

    Each direction is scored on its ``attribute`` (the judge's name; default: the direction's
    name), moving the right way when the change has the sign of ``strength x attribute_sign``.
    ``spaces``: those of the inversion to edit. Strength 0 is the inversion itself (exactly what
    the edit renders). Returns ``(per_image, per_set)``: one row per image and setting; one row
    per setting with the Frechet distance to ``real_features`` (``[M, F]``) and the per-image means.
    """
    spaces = tuple(s for s in spaces if s in inversion.images())
    unedited = {s: judges(img) for s, img in inversion.images().items() if s in spaces}
    input_id = judges(inputs)["identity"]
    real = FrechetReference(real_features)
    g_base = editor.base_features(inversion) if "f" in spaces else None
    rows, sets = [], []
    for name, direction in tqdm(directions.items(), desc="editing sweep", unit="direction", leave=False):
        k = judges.attribute_names.index(direction.attribute or name)
        others = [j for j in range(len(judges.attribute_names)) if j != k]
        for strength in strengths:
            if strength:
                edited = editor.edit(inversion, direction, strength, spaces=spaces, g_base=g_base)
                readouts = {space: judges(edited.images[space]) for space in spaces}
            else:
                readouts = unedited
            for space in spaces:
                readout = readouts[space]
                change = readout["attributes"] - unedited[space]["attributes"]    # [B, K]
                ident = (readout["identity"] * input_id).sum(1)                   # [B]
                way = np.sign(strength) * direction.attribute_sign
                frame = pd.DataFrame({
                    "direction": name, "space": space, "strength": strength, "image": np.arange(len(ident)),
                    "attribute": judges.attribute_names[k],
                    "target_change": change[:, k].numpy(),
                    "target_gain": change[:, k].numpy() * way if strength else np.nan,   # > 0: the right way
                    "right_way": (torch.sign(change[:, k]) == way).numpy() if strength else np.nan,
                    "other_drift": change[:, others].abs().mean(1).numpy(),
                    "identity": ident.numpy(),
                    "identity_kept": ((ident > judges.same_person_threshold).numpy()
                                      if judges.same_person_threshold is not None else np.nan)})
                rows.append(frame)
                sets.append({"direction": name, "space": space, "strength": strength,
                             "frechet": real.distance(readout["features"]),
                             **frame.drop(columns=["direction", "space", "strength", "image", "attribute"])
                             .astype(float).mean().to_dict()})
    return pd.concat(rows, ignore_index=True), pd.DataFrame(sets)


def editing_consistency(editor: Editor, invert: Callable, inversion, directions: dict[str, Direction],
                        strength: float, judges: EditJudges, spaces: tuple[str, ...] = SPACES) -> pd.DataFrame:
    """e4e's latent editing consistency, per image: edit by ``+strength``, re-invert the edited
    image, edit that back by ``-strength``, compare with the unedited inversion. ``invert(x,
    spaces)``: the encoder's inversion of ``x`` with the renders of ``spaces`` (here none).

    ``latent``: L2 distance of the w+ codes (W, W+; e4e's definition); ``perceptual`` and ``mse``:
    between the round-tripped render and the unedited render of the same space (F too).
    """
    spaces = tuple(s for s in spaces if s in inversion.images())
    rows = []
    for name, direction in directions.items():
        forth = editor.edit(inversion, direction, strength, spaces=spaces)
        for space in spaces:
            again = invert(forth.images[space].clamp(-1, 1), ())   # the codes: edited back at once, not rendered
            back = editor.edit(again, direction, -strength, spaces=(space,))
            before = inversion.images()[space]
            after = back.images[space]
            codes = {"w": (inversion.w[:, None].expand_as(back.w), back.w), "wplus": (inversion.wplus, back.wplus)}
            latent = ((codes[space][0] - codes[space][1]).flatten(1).norm(dim=1).cpu().numpy()
                      if space in codes else np.full(len(after), np.nan))
            with torch.inference_mode():
                perceptual = torch.cat([judges.perceptual(a.clamp(-1, 1), b.clamp(-1, 1)) for a, b in
                                        zip(after.split(judges.batch_size), before.split(judges.batch_size))]).cpu()
            rows.append(pd.DataFrame({"direction": name, "space": space, "strength": strength,
                                      "image": np.arange(len(after)), "latent": latent,
                                      "perceptual": perceptual.numpy(),
                                      "mse": mse01(after.clamp(-1, 1), before.clamp(-1, 1)).cpu().numpy()}))
    return pd.concat(rows, ignore_index=True)
