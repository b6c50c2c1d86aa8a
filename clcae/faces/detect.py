"""Faces and their five landmarks in a photo: MTCNN with the weights facenet-pytorch ships.

The choice and why (weights inside a registry package, MIT, the five points FFHQ's alignment needs,
runs beside torch 2.14.1 at facenet-pytorch 2.5.3): ``docs/face_detector_choice.md``. Nothing is
downloaded: the three networks' files come with the package.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clcae.errors import InputError


@dataclass
class Face:
    """One detected face: ``box`` [4] (x1, y1, x2, y2), ``prob``, ``landmarks`` [5, 2] (x, y): eye
    left, eye right, nose, mouth left, mouth right (image left first)."""
    box: torch.Tensor
    prob: float
    landmarks: torch.Tensor


class FaceDetector:
    """``detector(photo uint8 [3, H, W]) -> [Face]``, numbered left to right; faces below
    ``min_prob`` are dropped (MTCNN's last stage already keeps only those above 0.7)."""

    def __init__(self, min_prob: float = 0.9, device: str | torch.device = "cpu"):
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise InputError("face detection needs facenet-pytorch (pip install 'facenet-pytorch==2.5.3'; "
                             "its wheel carries the MTCNN weights)") from None
        self.mtcnn = MTCNN(keep_all=True, device=torch.device(device))
        self.min_prob = min_prob

    def __call__(self, photo: torch.Tensor) -> list[Face]:
        from PIL import Image

        if photo.ndim != 3 or photo.shape[0] != 3 or photo.dtype != torch.uint8:
            raise ValueError(f"FaceDetector: photo must be uint8 [3, H, W], got {photo.dtype} {list(photo.shape)}")
        image = Image.fromarray(photo.permute(1, 2, 0).cpu().numpy())
        with torch.inference_mode():
            boxes, probs, landmarks = self.mtcnn.detect(image, landmarks=True)
        if boxes is None:
            return []
        faces = [Face(torch.from_numpy(np.asarray(b, dtype=np.float64)), float(p),
                      torch.from_numpy(np.asarray(lm, dtype=np.float64)))
                 for b, p, lm in zip(boxes, probs, landmarks) if p is not None and p >= self.min_prob]
        return sorted(faces, key=lambda f: float(f.box[0]))
