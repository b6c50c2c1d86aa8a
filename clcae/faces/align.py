"""FFHQ alignment of a face from five landmarks, and pasting an edited crop back into the photo.

The crop is the one the FFHQ dataset defines (its ``recreate_aligned_images``), written from that
description: with the eye centres ``e_l, e_r`` and mouth corners ``m_l, m_r``,

    eye_avg = (e_l + e_r) / 2,  eye_to_eye = e_r - e_l,  eye_to_mouth = (m_l + m_r) / 2 - eye_avg
    x = eye_to_eye - rot90(eye_to_mouth)            (the face's horizontal axis, both cues pooled)
    x = x / |x| * max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)
    y = rot90(x),  c = eye_avg + 0.1 eye_to_mouth
    quad = [c - x - y, c - x + y, c + x + y, c + x - y]   (top-left, bottom-left, bottom-right, top-right)

and the quad (a square of side 2 |x|) is resampled to ``size`` x ``size``. FFHQ first shrinks the
photo by an integer factor when the quad is more than twice the output side, then warps with a
bilinear filter; here the same antialiasing is an area downscale by that factor, then a bilinear
``grid_sample``. Outside the photo FFHQ pads by reflection and blurs the padding; here the
reflection is kept and the blur is not (pixels that far out are rarely part of the face).

Coordinates are pixel centres: pixel (i, j) has centre (x, y) = (j + 0.5, i + 0.5) (FFHQ's
convention: ``PIL.Image.transform(QUAD)`` maps the quad's corners to the output's outer corners).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _rot90(v: torch.Tensor) -> torch.Tensor:
    """FFHQ's ``flipud(v) * [-1, 1]``: (x, y) -> (-y, x)."""
    return torch.stack([-v[..., 1], v[..., 0]], -1)


def ffhq_quad(landmarks: torch.Tensor) -> torch.Tensor:
    """landmarks [..., 5, 2] (x, y): eye left, eye right, nose, mouth left, mouth right (image left
    first, as MTCNN gives them) -> quad [..., 4, 2] (top-left, bottom-left, bottom-right, top-right)."""
    lm = landmarks.double()
    eye_left, eye_right, mouth_left, mouth_right = lm[..., 0, :], lm[..., 1, :], lm[..., 3, :], lm[..., 4, :]
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    x = x / x.norm(dim=-1, keepdim=True)
    x = x * torch.maximum(eye_to_eye.norm(dim=-1) * 2.0, eye_to_mouth.norm(dim=-1) * 1.8)[..., None]
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    return torch.stack([c - x - y, c - x + y, c + x + y, c + x - y], -2)


def rotate(points: torch.Tensor, degrees: float) -> torch.Tensor:
    """points [..., 2] turned about the origin by ``degrees`` (x right, y down: clockwise on screen)."""
    a = math.radians(degrees)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=points.dtype)
    return points @ rot.T


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """The inverse of an affine map [2, 3] (x' = A x + b)."""
    inv = torch.linalg.inv(m[:, :2])
    return torch.cat([inv, -(inv @ m[:, 2:])], 1)


def apply_affine(m: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """points [..., 2] through the affine map m [2, 3]."""
    m = m.to(points.dtype)
    return points @ m[:, :2].T + m[:, 2]


def pixel_centres(h: int, w: int) -> torch.Tensor:
    """[h, w, 2] (x, y) of every pixel's centre, float64."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    return torch.stack([xs, ys], -1)


@dataclass
class Alignment:
    """One face's crop geometry: ``crop_to_photo`` [2, 3] maps crop pixel coordinates (x, y, 1) to
    the photo's; ``size`` the crop's side; ``quad`` [4, 2] in photo coordinates."""
    quad: torch.Tensor
    size: int

    @property
    def crop_to_photo(self) -> torch.Tensor:
        tl, bl, _, tr = self.quad
        s = self.size
        return torch.stack([(tr - tl) / s, (bl - tl) / s, tl], 1)   # [2, 3]: x' = A [x, y] + tl

    @property
    def photo_to_crop(self) -> torch.Tensor:
        return invert_affine(self.crop_to_photo)

    @property
    def scale(self) -> float:
        """Photo pixels per crop pixel."""
        return float((self.quad[3] - self.quad[0]).norm()) / self.size

    def to_crop(self, points: torch.Tensor) -> torch.Tensor:
        """Photo coordinates [..., 2] -> crop coordinates."""
        return apply_affine(self.photo_to_crop, points)


def sample_at(image: torch.Tensor, points: torch.Tensor, padding: str) -> torch.Tensor:
    """image [B, C, H, W] float, bilinear at ``points`` [h', w', 2] (x, y in its pixel coordinates)."""
    h, w = image.shape[-2:]
    grid = torch.stack([points[..., 0] / w * 2 - 1, points[..., 1] / h * 2 - 1], -1)   # align_corners=False
    return F.grid_sample(image, grid[None].to(image.dtype).expand(image.shape[0], -1, -1, -1),
                         mode="bilinear", padding_mode=padding, align_corners=False)


def align_face(photo: torch.Tensor, landmarks: torch.Tensor, size: int) -> tuple[torch.Tensor, Alignment]:
    """photo uint8 [3, H, W], landmarks [5, 2] -> (the FFHQ crop uint8 [3, size, size], its Alignment)."""
    if photo.ndim != 3 or photo.shape[0] != 3:
        raise ValueError(f"align_face: photo must be [3, H, W], got {list(photo.shape)}")
    if tuple(landmarks.shape) != (5, 2):
        raise ValueError(f"align_face: landmarks must be [5, 2], got {list(landmarks.shape)}")
    geo = Alignment(ffhq_quad(landmarks), size)
    image = photo[None].double()
    shrink = int(geo.scale // 2) if geo.scale >= 4 else 1   # FFHQ: shrink when the quad is > 2x the output
    matrix = geo.crop_to_photo
    if shrink > 1:   # area filter: each output pixel then averages about the photo pixels it covers
        image = F.avg_pool2d(image, shrink, ceil_mode=True)
        matrix = matrix / shrink
    crop = sample_at(image, apply_affine(matrix, pixel_centres(size, size)), "reflection")
    return crop[0].round().clamp(0, 255).to(torch.uint8), geo


def paste_back(photo: torch.Tensor, crop: torch.Tensor, geo: Alignment, feather: float = 0.1) -> torch.Tensor:
    """The crop (uint8 [3, S, S], e.g. an edited reconstruction at any S) warped back into ``photo``
    (uint8 [3, H, W]) through the inverse of ``geo``, blended with a mask that is 1 inside the crop
    and falls to 0 over ``feather`` of its side at the border; outside the quad the photo is kept."""
    s, (h, w) = crop.shape[-1], photo.shape[-2:]
    lo, hi = geo.quad.amin(0).floor().long(), geo.quad.amax(0).ceil().long()   # the quad's box: nothing moves outside it
    x0, y0 = int(lo[0].clamp(0, w)), int(lo[1].clamp(0, h))
    x1, y1 = int(hi[0].clamp(0, w)), int(hi[1].clamp(0, h))
    out = photo.clone()
    if x1 <= x0 or y1 <= y0:
        return out
    centres = pixel_centres(y1 - y0, x1 - x0) + torch.tensor([x0, y0], dtype=torch.float64)
    at = Alignment(geo.quad, s).to_crop(centres)         # [h, w, 2]: each box pixel in the crop
    back = sample_at(crop[None].double(), at, "border")[0]
    uv = at / s                                          # in crop sides: inside is [0, 1]^2
    edge = torch.minimum(uv, 1 - uv).amin(-1)            # distance to the crop's border, in crop sides
    mask = (edge / feather).clamp(0, 1) if feather > 0 else (edge > 0).double()
    region = photo[:, y0:y1, x0:x1].double() * (1 - mask) + back * mask
    out[:, y0:y1, x0:x1] = region.round().clamp(0, 255).to(torch.uint8)
    return out
