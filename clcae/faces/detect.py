"""Faces and their five landmarks in a photo: MTCNN with the weights facenet-pytorch ships.

The choice and why (weights inside a registry package, MIT, the five points FFHQ's alignment needs,
runs beside torch 2.14.1 at facenet-pytorch 2.5.3): ``docs/face_detector_choice.md``. Nothing is
downloaded: the three networks' files come with the package.

MTCNN reads landmarks from a 48 px view of the face and was trained on upright faces: its points
move by 2-4 px of a 256 px crop when the same face is turned by 15 degrees, and the FFHQ quad
amplifies that (its corners moved 7.7 px). So each face's landmarks are refined: MTCNN runs again
on views of the face's FFHQ crop, five zooms times three turns (-6, 0, 6 degrees) and the mirror
of each (30 views, one batch), and the points found there, mapped back into the photo, are
averaged: the errors that depend on the face's angle and scale average out. Measured on two real
photos turned by 15, -15 and 10 degrees: ``docs/face_detector_choice.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clcae.errors import InputError
from clcae.faces.align import Alignment, apply_affine, ffhq_quad, pixel_centres, rotate, sample_at

MIRROR = [1, 0, 2, 4, 3]   # the landmarks' order in a mirrored image: the eyes and the mouth corners swap


@dataclass
class Face:
    """One detected face: ``box`` [4] (x1, y1, x2, y2), ``prob``, ``landmarks`` [5, 2] (x, y): eye
    left, eye right, nose, mouth left, mouth right (image left first), refined over the face's
    upright views; ``mtcnn_landmarks``: MTCNN's own, from the photo."""
    box: torch.Tensor
    prob: float
    landmarks: torch.Tensor
    mtcnn_landmarks: torch.Tensor


class FaceDetector:
    """``detector(photo uint8 [3, H, W]) -> [Face]``, numbered left to right; faces below
    ``min_prob`` are dropped (MTCNN's last stage already keeps only those above 0.7)."""

    def __init__(self, min_prob: float = 0.9, device: str | torch.device = "cpu",
                 zooms: tuple[float, ...] = (0.85, 0.925, 1.0, 1.075, 1.15), turns: tuple[float, ...] = (-6.0, 0.0, 6.0),
                 view_size: int = 256):
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise InputError("face detection needs facenet-pytorch (pip install 'facenet-pytorch==2.5.3'; "
                             "its wheel carries the MTCNN weights)") from None
        self.mtcnn = MTCNN(keep_all=True, device=torch.device(device))
        self.min_prob, self.view_size = min_prob, view_size
        self.views = [(z, t) for z in zooms for t in turns]   # (zoom, degrees); none: no refinement

    def __call__(self, photo: torch.Tensor) -> list[Face]:
        from PIL import Image

        if photo.ndim != 3 or photo.shape[0] != 3 or photo.dtype != torch.uint8:
            raise ValueError(f"FaceDetector: photo must be uint8 [3, H, W], got {photo.dtype} {list(photo.shape)}")
        image = Image.fromarray(photo.permute(1, 2, 0).cpu().numpy())
        with torch.inference_mode():
            boxes, probs, landmarks = self.mtcnn.detect(image, landmarks=True)
        if boxes is None:
            return []
        faces = []
        for b, p, lm in zip(boxes, probs, landmarks):
            if p is None or p < self.min_prob:
                continue
            lm = torch.from_numpy(np.asarray(lm, dtype=np.float64))   # [5, 2]
            faces.append(Face(torch.from_numpy(np.asarray(b, dtype=np.float64)), float(p), self.refine(photo, lm), lm))
        return sorted(faces, key=lambda f: float(f.box[0]))

    def refine(self, photo: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """``landmarks`` [5, 2] of one face averaged over MTCNN's points in views of it: the FFHQ
        quad zoomed by each of ``zooms`` (the face that much larger) and turned by each of
        ``turns`` at ``view_size`` px, and the mirror of each; in every view the face nearest the
        centre counts. The landmarks as they were when no view finds the face."""
        from PIL import Image

        if not self.views:
            return landmarks
        quad = ffhq_quad(landmarks)                       # [4, 2]
        centre, n = quad.mean(0), self.view_size
        geos = [Alignment(centre + rotate(quad - centre, degrees) / zoom, n) for zoom, degrees in self.views]
        image, grid = photo[None].double(), pixel_centres(n, n)   # grid: the view's pixel centres [n, n, 2]
        views = torch.cat([sample_at(image, apply_affine(g.crop_to_photo, grid), "reflection")
                           for g in geos]).round().clamp(0, 255).to(torch.uint8)   # [Z, 3, n, n]
        views = torch.cat([views, views.flip(-1)])        # [2Z, 3, n, n]: the mirrors after
        with torch.inference_mode():
            _, _, found = self.mtcnn.detect([Image.fromarray(v.permute(1, 2, 0).numpy()) for v in views],
                                            landmarks=True)
        points = []
        for k, lms in enumerate(found):
            if lms is None:
                continue
            lms = torch.from_numpy(np.asarray(lms, dtype=np.float64))   # [faces, 5, 2]
            own = lms[(lms.mean(1) - n / 2).norm(dim=-1).argmin()]   # the face in the middle of the view
            if k >= len(geos):   # a mirror: back to the view's coordinates and the landmarks' order
                own = torch.stack([n - own[:, 0], own[:, 1]], -1)[MIRROR]
            points.append(apply_affine(geos[k % len(geos)].crop_to_photo, own))
        return torch.stack(points).mean(0) if points else landmarks
