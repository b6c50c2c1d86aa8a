"""Editing: directions (InterFaceGAN SVM normals, GANSpace PCA, published files) and edits of
inversions in W, W+ and F. Never imports ``clcae.worlds``: judges are passed in."""
from clcae.editing.directions import (
                                      Direction,
                                      DirectionError,
                                      LayerRange,
                                      PCABasis,
                                      load_direction,
                                      load_pca,
                                      read_directions,
                                      save_direction,
                                      save_pca,
)
from clcae.editing.edit import Edited, Editor
from clcae.editing.ganspace import fit_pca
from clcae.editing.interfacegan import Boundary, fit_boundary, project_out

__all__ = ["Direction", "DirectionError", "LayerRange", "PCABasis", "load_direction", "load_pca", "save_direction", "read_directions",
           "save_pca", "Edited", "Editor", "fit_pca", "Boundary", "fit_boundary", "project_out"]
