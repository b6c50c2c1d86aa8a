"""The inversion spaces, one spelling for the whole project.

An encoder output renders three images (the paper's I1, I2, I3): ``w`` = G(w), ``wplus`` = G(w+),
``f`` = G(w+, f) (``clcae.inversion.Inversion.images``). Editing has a second setting for the
spaces that carry w+ (``<space>_latent``: the edit applied to w+ only, f recomputed or kept;
``clcae.pipeline.evaluate.evaluate_editing``). Metrics files, CSV ``space`` columns, curves and
the CLI use the keys; reports, figures and the web page use the labels.
"""
from __future__ import annotations

SPACES = ("w", "wplus", "f")                     # I1 = G(w), I2 = G(w+), I3 = G(w+, f)
RENDERS = {"w": "G(w)", "wplus": "G(w+)", "f": "G(w+, f)"}
LATENT_EDIT = "_latent"                          # suffix of the w+ edit setting: "wplus_latent", "f_latent"
LABELS = {"w": "W", "wplus": "W+", "f": "F",
          "wplus" + LATENT_EDIT: "W+ (w+ edit)", "f" + LATENT_EDIT: "F (w+ edit)"}


def label(space: str) -> str:
    """How a report names ``space`` (unknown keys as they are)."""
    return LABELS.get(space, space)
