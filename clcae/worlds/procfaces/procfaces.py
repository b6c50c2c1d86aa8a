"""ProcFaces: a vectorised, pure-PyTorch procedural face renderer with exact labels.

Why it exists: the offline (procfaces) world has no face data set, so the project renders its
own faces. Every random choice of an image comes from one standard-normal latent vector
``u [N, LATENT_DIM]``; :func:`decode` maps it deterministically to parameters (continuous ones
through the normal CDF, near-binary ones such as glasses and beard through a steep sigmoid, so
that ``u -> image`` stays continuous and a generator can regress the image from ``u``), and
:func:`render` draws them as soft-edged shapes at twice the output size before an antialiased
2x average-pool.

Conventions: canvas coordinates are normalised, ``x`` and ``y`` in [-1, 1], ``y`` pointing
down (row order), so one unit is ``size / 2`` output pixels. Images are ``[N, 3, size, size]``
floats in [-1, 1]. ``yaw > 0`` turns the face towards image right (inner features shift to
+x, the right half is foreshortened, the right ear hides).

Splits: the "train" split plays FFHQ, the "test" split plays CelebA-HQ: its identities are
disjoint and it adds *details* the generator never sees (textured backgrounds, earrings, hat
bands, hair clips, pixel noise) drawn from a separate seeded generator, not from ``u``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clcae.images import to_uint8
from clcae.io import atomic_path
from clcae.seeding import derive_seed, seeded_generator  # noqa: F401  (derive_seed: re-exported)

# --------------------------------------------------------------------------------------------
# Latent layout
# --------------------------------------------------------------------------------------------

#: identity traits, fixed per person (all decoded to [0, 1])
IDENTITY_NAMES: tuple[str, ...] = (
    "face_w", "face_h", "jaw", "skin_tone", "hair_color", "hair_red", "hair_len", "hair_vol",
    "fringe", "hair_part", "eye_color", "eye_spacing", "eye_size", "nose_len", "nose_w",
    "brow_thick", "brow_height", "ear_size", "mouth_w", "lip_thick",
)
#: editable attributes; labels in [0, 1] except yaw in [-1, 1]
ATTRIBUTES: list[str] = ["smile", "eye_open", "yaw", "beard", "glasses", "lip_red", "age"]
#: nuisance: background and lighting, drawn fresh per image
NUISANCE_NAMES: tuple[str, ...] = ("bg_hue", "bg_val", "bg_grad", "light", "light_side")

PARAM_NAMES: tuple[str, ...] = IDENTITY_NAMES + tuple(ATTRIBUTES) + NUISANCE_NAMES
LATENT_DIM: int = len(PARAM_NAMES)  # 32
IDENTITY_DIMS: tuple[int, ...] = tuple(range(len(IDENTITY_NAMES)))
ATTRIBUTE_DIMS: tuple[int, ...] = tuple(PARAM_NAMES.index(a) for a in ATTRIBUTES)
NUISANCE_DIMS: tuple[int, ...] = tuple(PARAM_NAMES.index(a) for a in NUISANCE_NAMES)

#: near-binary attributes: value = sigmoid(slope * (u - centre)); smooth in u, mostly 0 or 1
_SIGMOID_PARAMS = {"beard": (4.0, 0.55), "glasses": (5.0, 0.6)}
#: test-split person ids start here so they never collide with train ids
TEST_ID_OFFSET = 1_000_000
SPLITS = ("train", "test")


def decode(u: torch.Tensor) -> dict[str, torch.Tensor]:
    """Map latents ``u [N, LATENT_DIM]`` to named parameters ``{name: [N]}`` (deterministic)."""
    if u.ndim != 2 or u.shape[1] != LATENT_DIM:
        raise ValueError(f"decode expects u of shape [N, {LATENT_DIM}], got {tuple(u.shape)}")
    u = u.float()
    p = torch.special.ndtr(u)  # [N, D] uniform in (0, 1) for standard-normal u
    out: dict[str, torch.Tensor] = {}
    for i, name in enumerate(PARAM_NAMES):
        if name in _SIGMOID_PARAMS:
            slope, centre = _SIGMOID_PARAMS[name]
            out[name] = torch.sigmoid(slope * (u[:, i] - centre))
        elif name == "yaw":
            out[name] = 2.0 * p[:, i] - 1.0
        elif name == "hair_red":
            out[name] = p[:, i] ** 3  # red hair is rare
        else:
            out[name] = p[:, i]
    return out


def attribute_labels(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Stack the editable attributes in :data:`ATTRIBUTES` order -> ``[N, 7]``."""
    return torch.stack([params[a].float() for a in ATTRIBUTES], dim=1)


# --------------------------------------------------------------------------------------------
# Seeds and splits
# --------------------------------------------------------------------------------------------

def _generator(seed: int, *tags: str) -> torch.Generator:
    return seeded_generator(seed, *tags)


def sample_latents(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fresh i.i.d. standard-normal latents ``[n, LATENT_DIM]`` (every image a new person)."""
    return torch.randn(n, LATENT_DIM, generator=generator)


def sample_split(split: str, n_people: int, per_person: int, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents and person ids for a split: ``(u [N, D], person_id [N] int64)``, person-major.

    Identity dims come from a per-(seed, split) stream, one row per person; the other dims are
    drawn fresh per image. Test ids are offset by :data:`TEST_ID_OFFSET` and use another
    stream, so train and test identities are disjoint.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n_people < 1 or per_person < 1:
        raise ValueError(f"n_people and per_person must be >= 1, got {n_people}, {per_person}")
    ident = torch.randn(n_people, len(IDENTITY_DIMS), generator=_generator(seed, split, "identity"))
    n = n_people * per_person
    u = torch.randn(n, LATENT_DIM, generator=_generator(seed, split, "image"))
    u[:, list(IDENTITY_DIMS)] = ident.repeat_interleave(per_person, dim=0)
    offset = TEST_ID_OFFSET if split == "test" else 0
    person_id = torch.arange(n_people, dtype=torch.int64).repeat_interleave(per_person) + offset
    return u, person_id


def sample_details(n: int, generator: torch.Generator | None = None, p: float = 1.0
                   ) -> dict[str, torch.Tensor]:
    """Random test-split details ``{name: [n] or [n, ...]}``, independent of ``u``.

    ``p`` is the chance that an image gets details at all (``on``); the world CNN trains with
    ``p = 0.5`` so it sees both kinds of image.
    """
    g = generator

    def r(*shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=g)

    on = (r() < p).float()
    kind = torch.randint(0, 3, (n,), generator=g)  # 0 stripes, 1 checks, 2 blotchy noise
    return {
        "on": on,
        "bg_kind": F.one_hot(kind, 3).float(),          # [n, 3]
        "bg_amp": 0.25 + 0.35 * r(),                     # texture contrast
        "bg_freq": 10.0 + 25.0 * r(),                    # stripes/checks frequency (rad/unit)
        "bg_angle": math.pi * r(),
        "bg_phase": 2 * math.pi * r(),
        "bg_noise": torch.rand(n, 1, 6, 6, generator=g) * 2 - 1,  # low-res blotches
        "earrings": (r() < 0.5).float(),
        "earring_col": r(3),
        "hat": (r() < 0.35).float(),
        "hat_col": r(3),
        "clip": (r() < 0.4).float(),
        "clip_side": torch.where(r() < 0.5, -1.0, 1.0),
        "clip_col": r(3),
        "noise_std": 0.01 + 0.03 * r(),
        "noise_seed": torch.randint(0, 2**62, (n,), generator=g),
    }


# --------------------------------------------------------------------------------------------
# Drawing primitives (all vectorised over the batch; per-image scalars are [N, 1, 1, 1])
# --------------------------------------------------------------------------------------------

def _c(t: torch.Tensor) -> torch.Tensor:
    """Per-image scalar [N] -> broadcastable column [N, 1, 1, 1]."""
    return t.reshape(-1, 1, 1, 1)


def _palette(t: torch.Tensor, colours: list[tuple[float, float, float]]) -> torch.Tensor:
    """Piecewise-linear colour ramp: ``t [N]`` in [0, 1] -> ``[N, 3]``."""
    pal = torch.tensor(colours, dtype=torch.float32)  # [K, 3]
    s = t.clamp(0, 1) * (len(colours) - 1)
    i0 = s.floor().long().clamp(max=len(colours) - 2)
    w = (s - i0.float()).unsqueeze(1)
    return pal[i0] * (1 - w) + pal[i0 + 1] * w


def _hsv(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB for ``[N]`` tensors -> ``[N, 3]``."""
    n = torch.tensor([5.0, 3.0, 1.0])
    k = (n[None] + 6.0 * h[:, None]) % 6.0
    f = torch.minimum(k, 4.0 - k).clamp(0, 1)
    return v[:, None] * (1 - s[:, None] * f)


_SKIN = [(0.99, 0.86, 0.76), (0.92, 0.72, 0.58), (0.78, 0.55, 0.40), (0.56, 0.37, 0.25),
         (0.36, 0.23, 0.15)]
_HAIR = [(0.95, 0.86, 0.60), (0.80, 0.60, 0.32), (0.50, 0.32, 0.17), (0.26, 0.16, 0.10),
         (0.07, 0.06, 0.06)]
_EYES = [(0.25, 0.50, 0.85), (0.25, 0.58, 0.40), (0.55, 0.42, 0.18), (0.38, 0.22, 0.10),
         (0.12, 0.08, 0.06)]


class _Canvas:
    """Pixel-centre grids at render resolution plus the sigmoid edge sharpness."""

    def __init__(self, res: int):
        self.res = res
        g = (torch.arange(res, dtype=torch.float32) + 0.5) / res * 2 - 1
        self.x = g.view(1, 1, 1, res)  # [1, 1, 1, W]
        self.ys = g                     # [H]
        self.k = res / 2 * 1.6           # ~0.6 render-px edge (logistic scale)

    def rows(self, y0: float, y1: float) -> tuple[slice, torch.Tensor]:
        """Row slice covering normalised y in [y0, y1] and its y column [1, 1, h, 1]."""
        i0 = max(0, int(math.floor((y0 + 1) / 2 * self.res)))
        i1 = min(self.res, int(math.ceil((y1 + 1) / 2 * self.res)))
        return slice(i0, i1), self.ys[i0:i1].view(1, 1, -1, 1)


def _ellipse(cv: _Canvas, y: torch.Tensor, cx, cy, rx, ry, soft: float = 1.0,
             x_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Soft ellipse coverage [N, 1, h, W]; ``x_scale [N|1, 1, h, 1]`` narrows rows (jaw)."""
    rx, ry = torch.as_tensor(rx), torch.as_tensor(ry)
    c = torch.minimum(rx, ry) * (0.5 * cv.k / soft)  # converts (1 - q) to ~pixels
    qx = ((cv.x - cx) / rx) ** 2  # [N, 1, 1, W]
    qy = ((y - cy) / ry) ** 2     # [N, 1, h, 1]
    if x_scale is None:
        a = c * (0.5 - qx) + c * (0.5 - qy)
    else:
        a = torch.addcmul(c * (1 - qy), c * qx, -x_scale)
    return a.sigmoid_()


def _ring(cv: _Canvas, y, cx, cy, rx, ry, width) -> torch.Tensor:
    """Soft elliptical ring (glasses frames) [N, 1, h, W]."""
    q = ((cv.x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
    d = (q.sqrt_() - 1).abs_() * torch.minimum(rx, ry)
    return (width - d).mul_(cv.k).sigmoid_()


def _stroke(cv: _Canvas, y, yc, x0, x1, width, soft: float = 1.0) -> torch.Tensor:
    """Soft stroke around the curve y = yc(x) [N, 1, 1, W] for x in [x0, x1]; width may vary."""
    k = cv.k / soft
    a = (width - (y - yc).abs_()).mul_(k).sigmoid_()
    span = torch.sigmoid((cv.x - x0) * k) * torch.sigmoid((x1 - cv.x) * k)  # [N, 1, 1, W]
    return a * span  # [N, 1, h, W]


def _over(img: torch.Tensor, rows: slice, colour: torch.Tensor, alpha: torch.Tensor) -> None:
    """Alpha-composite a flat colour ``[N, 3]`` over ``img[:, :, rows]`` in place."""
    img[:, :, rows].lerp_(colour[:, :, None, None].expand(-1, -1, alpha.shape[2], alpha.shape[3]),
                          alpha)


# --------------------------------------------------------------------------------------------
# Geometry shared by the renderer and the region boxes
# --------------------------------------------------------------------------------------------

def _geometry(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Face layout in normalised coordinates, all ``[N]``."""
    yaw = p["yaw"]
    g: dict[str, torch.Tensor] = {}
    g["fcx"] = 0.05 * yaw
    g["fcy"] = torch.full_like(yaw, 0.06)
    g["frx"] = 0.53 + 0.13 * p["face_w"]
    g["fry"] = 0.70 + 0.10 * p["face_h"]
    g["jaw"] = 0.10 + 0.35 * p["jaw"]
    g["ey"] = -0.20 + 0.03 * (p["face_h"] - 0.5)
    g["esp"] = 0.21 + 0.06 * p["eye_spacing"]
    g["erx"] = 0.090 + 0.025 * p["eye_size"]
    g["ery"] = 0.060 + 0.015 * p["eye_size"]
    g["eye_shift"] = 0.13 * yaw
    g["nose_x"] = g["fcx"] + 0.18 * yaw
    g["nose_y"] = g["ey"] + 0.22 + 0.09 * p["nose_len"]
    g["nose_w"] = 0.045 + 0.035 * p["nose_w"]
    g["mx"] = g["fcx"] + 0.12 * yaw
    g["my"] = g["nose_y"] + 0.15
    g["mw"] = (0.17 + 0.07 * p["mouth_w"]) * (1 - 0.12 * yaw.abs())
    g["lip"] = 0.026 + 0.014 * p["lip_thick"]
    return g


def _eye_x(g: dict[str, torch.Tensor], yaw: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre x and half-width of eye ``side`` (-1 left, +1 right), foreshortened by yaw."""
    squash = 1 - 0.3 * yaw * side
    return g["fcx"] + g["eye_shift"] + side * g["esp"] * squash, g["erx"] * squash


def region_boxes(params: dict[str, torch.Tensor], size: int = 64) -> dict[str, torch.Tensor]:
    """Pixel boxes ``[N, 4]`` (x0, y0, x1, y1, exclusive ends) of face parts.

    Why: tests check that an attribute only moves pixels in its region, and training code
    can up-weight the small parts (eyes, mouth) that a plain pixel loss blurs.
    """
    g = _geometry(params)
    yaw = params["yaw"]
    xl, rl = _eye_x(g, yaw, -1)
    xr, rr = _eye_x(g, yaw, +1)
    boxes = {
        "eyes": (xl - rl * 1.9, g["ey"] - 0.13, xr + rr * 1.9, g["ey"] + 0.11),
        "glasses": (g["fcx"] - g["frx"] - 0.03, g["ey"] - 0.13, g["fcx"] + g["frx"] + 0.03,
                    g["ey"] + 0.13),
        "mouth": (g["mx"] - g["mw"] - 0.05, g["my"] - 0.13, g["mx"] + g["mw"] + 0.05,
                  g["my"] + 0.12),
        "face": (g["fcx"] - g["frx"], g["fcy"] - g["fry"], g["fcx"] + g["frx"],
                 g["fcy"] + g["fry"]),
    }
    out = {}
    for name, (x0, y0, x1, y1) in boxes.items():
        b = torch.stack([x0, y0, x1, y1], dim=1)
        out[name] = ((b + 1) / 2 * size).clamp(0, size)
    return out


def region_mask(params: dict[str, torch.Tensor], size: int = 64,
                names: tuple[str, ...] = ("eyes", "mouth")) -> torch.Tensor:
    """Union of region boxes as a {0, 1} mask ``[N, 1, size, size]``."""
    boxes = region_boxes(params, size)
    idx = torch.arange(size, dtype=torch.float32) + 0.5
    n = next(iter(params.values())).shape[0]
    mask = torch.zeros(n, 1, size, size)
    for name in names:
        b = boxes[name]
        mx = (idx[None] >= b[:, 0:1]) & (idx[None] < b[:, 2:3])  # [N, W]
        my = (idx[None] >= b[:, 1:2]) & (idx[None] < b[:, 3:4])  # [N, H]
        mask = torch.maximum(mask, (my[:, None, :, None] & mx[:, None, None, :]).float())
    return mask


# --------------------------------------------------------------------------------------------
# The renderer
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def render(params: dict[str, torch.Tensor], size: int = 64,
           details: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Draw faces -> ``[N, 3, size, size]`` float in [-1, 1].

    Rendered at ``2 * size`` with ~1-pixel sigmoid edges, then 2x average-pooled (antialiased).
    ``details`` (from :func:`sample_details`) adds test-split extras that ``u`` cannot express.
    """
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise KeyError(f"render: params lack {missing} (build them with decode(u))")
    p = {k: params[k].float().reshape(-1) for k in PARAM_NAMES}
    n = p["smile"].shape[0]
    cv = _Canvas(2 * size)
    res = cv.res
    g = _geometry(p)
    C = {k: _c(v) for k, v in g.items()}  # columns [N, 1, 1, 1]
    yaw = p["yaw"]
    full, yf = cv.rows(-1.0, 1.0)

    # ---- colours [N, 3]
    skin = _palette(p["skin_tone"], _SKIN)
    age = p["age"]
    hair = _palette(p["hair_color"], _HAIR)
    hair = torch.lerp(hair, torch.tensor([0.62, 0.22, 0.10]).expand_as(hair),
                      (0.7 * p["hair_red"] * (1 - 0.6 * p["hair_color"]))[:, None])
    grey = torch.tensor([0.78, 0.78, 0.80]).expand_as(hair)
    hair = torch.lerp(hair, grey, (0.9 * ((age - 0.25) / 0.75).clamp(0, 1))[:, None])
    eye_col = _palette(p["eye_color"], _EYES)
    bg_top = _hsv(p["bg_hue"], 0.15 + 0.35 * p["bg_grad"], 0.40 + 0.55 * p["bg_val"])
    bg_bot = bg_top * (1 - 0.45 * p["bg_grad"])[:, None]
    cloth = _hsv((p["bg_hue"] + 0.5) % 1.0, 0.25 + 0.5 * p["light_side"], 0.25 + 0.5 * p["bg_grad"])

    # ---- background: vertical gradient (+ test-split texture)
    t = (yf + 1) / 2  # [1, 1, H, 1]
    img = (bg_top[:, :, None, None] * (1 - t) + bg_bot[:, :, None, None] * t).expand(n, 3, res, res)
    img = img.contiguous()
    if details is not None:
        img.mul_(_bg_texture(cv, details))

    # ---- shoulders and neck
    rs, ys = cv.rows(0.45, 1.0)
    _over(img, rs, cloth, _ellipse(cv, ys, C["fcx"] * 0.5, 1.25, C["frx"] * 1.9, 0.5))
    neck_a = (torch.sigmoid((C["frx"] * 0.5 - (cv.x - C["fcx"] * 0.7).abs()) * cv.k)
              * torch.sigmoid((ys - 0.5) * cv.k))  # [N, 1, h, W], top hidden behind the jaw
    _over(img, rs, skin * 0.82, neck_a)

    # ---- hair behind the head (cap + optional long hair)
    hx, hy = C["fcx"] - 0.02 * _c(yaw), C["fcy"] - 0.10
    hrx = C["frx"] * (1.10 + 0.22 * _c(p["hair_vol"]))
    hry = C["fry"] * (1.02 + 0.16 * _c(p["hair_vol"]))
    y_cut = C["fcy"] - 0.15 + 1.25 * _c(p["hair_len"])  # lowest hair row
    cap = _ellipse(cv, yf, hx, hy, hrx, hry)
    long_box = (torch.sigmoid((hrx * 0.97 - (cv.x - hx).abs()) * cv.k)
                * torch.sigmoid((yf - C["fcy"]) * cv.k))
    back = torch.maximum(cap, long_box).mul_(torch.sigmoid((y_cut - yf) * (cv.k / 3)))
    _over(img, full, hair * 0.85, back)

    # ---- ears (the one on the far side hides with yaw)
    re, ye = cv.rows(-0.5, 0.35)
    for side in (-1, 1):
        vis = _c((1 - torch.relu(side * yaw) * 1.2).clamp(0, 1))
        ex = C["fcx"] + side * (C["frx"] * (1.0 - 0.12 * side * _c(yaw)) + 0.01)
        ers = 0.7 + 0.5 * _c(p["ear_size"])
        ear = _ellipse(cv, ye, ex, C["ey"] + 0.10, 0.07 * ers, 0.14 * ers) * vis
        _over(img, re, skin * 0.92, ear)

    # ---- face (ellipse narrowing towards the jaw)
    jaw_t = torch.relu(yf - C["fcy"]) / C["fry"]  # [N, 1, H, 1]
    x_scale = (1 + C["jaw"] * jaw_t ** 2) ** 2
    face_a = _ellipse(cv, yf, C["fcx"], C["fcy"], C["frx"], C["fry"], x_scale=x_scale)
    _over(img, full, skin, face_a)

    # ---- forehead wrinkles (age), under the fringe
    rw, yw = cv.rows(-0.62, 0.35)
    for dy in (0.21, 0.27):
        yc = C["ey"] - dy + 0.05 * ((cv.x - C["fcx"]) / C["frx"]) ** 2
        a = _stroke(cv, yw, yc, C["fcx"] - 0.22, C["fcx"] + 0.22, 0.011, soft=1.5) * _c(0.85 * age)
        _over(img, rw, skin * 0.62, a)

    # ---- front hair: hairline descends with the fringe
    rf, yfr = cv.rows(-1.0, 0.25)
    dxn = (cv.x - C["fcx"]) / C["frx"]  # [N, 1, 1, W]
    h0 = C["fcy"] - C["fry"] * 0.72 + _c(p["fringe"]) * (C["fry"] * 0.72 + C["ey"] - C["fcy"] - 0.22)
    hairline = h0 + 0.30 * dxn ** 2 + 0.10 * _c(p["hair_part"] - 0.5) * dxn
    front = ((hairline - yfr) * cv.k).sigmoid_().mul_(cap[:, :, rf])
    front.mul_(((0.05 - yfr) * (cv.k / 4)).sigmoid_())  # side locks fade out by cheek level
    _over(img, rf, hair, front)

    # ---- beard (density), lower face and jaw, with a fixed fine texture
    rb, yb = cv.rows(-0.45, 1.0)
    by_top = C["nose_y"] + 0.01 - 0.30 * dxn.abs() ** 1.5  # [N, 1, 1, W]
    beard_face = _ellipse(cv, yb, C["fcx"], C["fcy"] + 0.02, C["frx"] * 1.03, C["fry"] * 1.05,
                          x_scale=x_scale[:, :, rb])
    tex = 0.95 + 0.05 * torch.sin(cv.x * 65.0 + 3.0 * torch.sin(yb * 20.0))  # strands [1, 1, h, W]
    beard_a = beard_face.mul_(((yb - by_top) * (cv.k / 4)).sigmoid_()).mul_(tex)
    beard_a.mul_(_c(p["beard"]) * 0.95)
    _over(img, rb, hair * 0.8, beard_a)

    # ---- nose: shaded tip, nostrils and a side shadow along the ridge
    rn, yn = cv.rows(-0.3, 0.4)
    nx, ny, nw = C["nose_x"], C["nose_y"], C["nose_w"]
    _over(img, rn, skin * 0.80, _ellipse(cv, yn, nx, ny, nw, nw * 0.65, soft=3.0) * 0.6)
    ridge_x = nx - 0.025 * (1 - _c(yaw))  # shadow on the side away from the light/turn
    ridge_a = (torch.sigmoid((0.012 - (cv.x - ridge_x).abs()) * (cv.k / 2))
               * torch.sigmoid((yn - C["ey"] - 0.05) * (cv.k / 2))
               * torch.sigmoid((ny - yn) * (cv.k / 2)))  # [N, 1, h, W]
    _over(img, rn, skin * 0.75, ridge_a * 0.5)
    for side in (-1, 1):
        nos = _ellipse(cv, yn, nx + side * nw * 0.55, ny + 0.025, 0.020, 0.013)
        _over(img, rn, skin * 0.35, nos * 0.9)

    # ---- age: nasolabial folds
    for side in (-1, 1):
        x0 = nx + side * (nw + 0.02)
        x1 = C["mx"] + side * (C["mw"] + 0.03)
        s = (cv.x - x0) / (x1 - x0)  # 0 at nose, 1 at mouth corner
        yc = ny + (C["my"] - ny + 0.02) * s.clamp(0, 1)
        lo, hi = torch.minimum(x0, x1), torch.maximum(x0, x1)
        a = _stroke(cv, yn, yc, lo, hi, 0.011, soft=1.5) * _c(0.85 * age)
        _over(img, rn, skin * 0.6, a)

    # ---- mouth: lips around a centre line that bends with the smile; opening shows teeth
    rm, ym = cv.rows(-0.05, 0.60)
    mx, my, mw = C["mx"], C["my"], C["mw"]
    smile = _c(p["smile"])
    tn = ((cv.x - mx) / mw)  # [N, 1, 1, W]
    env = (1 - tn ** 2).clamp(min=0).sqrt()  # lip profile
    bend = 0.11 * smile - 0.025
    yc = my + bend * (0.5 - tn ** 2)  # corners rise when smiling (y points down)
    opening = 0.040 * smile ** 2 * env
    lip_col = torch.lerp(skin * torch.tensor([0.92, 0.76, 0.74]),
                         torch.tensor([0.82, 0.05, 0.12]).expand_as(skin), p["lip_red"][:, None])
    span = torch.sigmoid((1 - tn.abs()) * mw * cv.k)
    dist = (ym - yc).abs()  # [N, 1, h, W]
    lips = ((opening + C["lip"] * (0.35 + 0.65 * env) - dist) * cv.k).sigmoid_().mul_(span)
    _over(img, rm, lip_col, lips)
    inner = ((opening - dist) * cv.k + 1.0).sigmoid_().mul_(span)
    _over(img, rm, skin * 0.25 + torch.tensor([0.10, 0.0, 0.0]), inner)
    teeth = inner * ((yc - ym + opening * 0.1) * cv.k).sigmoid_() * ((opening - 0.004) * 400).clamp(0, 1)
    _over(img, rm, torch.tensor([[0.95, 0.93, 0.88]]).expand(n, 3), teeth)

    # ---- eyes, brows and glasses
    ry_, yy = cv.rows(-0.5, 0.08)
    eye_open = _c(p["eye_open"])
    ey = C["ey"]
    brow_col = torch.lerp(hair * 0.55, torch.tensor([0.10, 0.07, 0.05]).expand_as(hair), 0.5)
    for side in (-1, 1):
        ex, erx = (_c(v) for v in _eye_x(g, yaw, side))
        ery = C["ery"] * (0.08 + 0.92 * eye_open)
        # socket shadow, then the visible aperture
        socket = _ellipse(cv, yy, ex, ey - 0.01, erx * 1.35, C["ery"] * 1.5, soft=4)
        _over(img, ry_, skin * 0.85, socket * 0.5)
        # a lens-shaped opening whose half-height shrinks to nothing as the lid closes
        env = (1 - ((cv.x - ex) / erx) ** 2).clamp(min=0).sqrt()  # [N, 1, 1, W]
        aperture = _stroke(cv, yy, ey, ex - erx, ex + erx, ery * env - 0.004)
        _over(img, ry_, torch.tensor([[0.97, 0.97, 0.95]]).expand(n, 3), aperture)
        iris_x = ex + 0.2 * erx * _c(yaw)
        ir = C["ery"] * 0.85
        iris = _ellipse(cv, yy, iris_x, ey, ir, ir).mul_(aperture)
        _over(img, ry_, eye_col, iris)
        pupil = _ellipse(cv, yy, iris_x, ey, ir * 0.45, ir * 0.45).mul_(aperture)
        _over(img, ry_, torch.full((n, 3), 0.04), pupil)
        # upper lid line and lashes follow the top of the aperture
        lid_y = ey - ery * env
        lid = _stroke(cv, yy, lid_y, ex - erx * 1.08, ex + erx * 1.08, 0.010)
        _over(img, ry_, torch.full((n, 3), 0.08), lid)
        # brow: an arch above the eye, tapered towards the temple
        bw = erx * 1.45
        bx = ex + side * 0.01
        by = ey - 0.09 - 0.045 * _c(p["brow_height"])
        bt = 0.016 + 0.016 * _c(p["brow_thick"])
        bn = (cv.x - bx) / bw
        brow_y = by + 0.035 * bn ** 2
        taper = (1 - 0.5 * (side * bn).clamp(0, 1))
        brow = _stroke(cv, yy, brow_y, bx - bw, bx + bw, bt * taper)
        _over(img, ry_, brow_col, brow * 0.95)
    # glasses: frames around both eyes, a bridge and temple arms; opacity = glasses label
    gl = _c(p["glasses"])
    frame_col = torch.full((n, 3), 0.06)
    lens_col = torch.tensor([[0.80, 0.88, 0.95]]).expand(n, 3)
    xs = []
    for side in (-1, 1):
        ex, erx = (_c(v) for v in _eye_x(g, yaw, side))
        grx, gry = erx * 1.65, C["ery"] * 1.75
        lens = _ellipse(cv, yy, ex, ey + 0.01, grx, gry)
        _over(img, ry_, lens_col, lens * (0.25 * gl))
        _over(img, ry_, frame_col, _ring(cv, yy, ex, ey + 0.01, grx, gry, 0.012) * gl)
        xs.append((ex, grx))
        # temple arm from the outer frame edge to the face edge
        x_out = ex + side * grx
        x_edge = C["fcx"] + side * C["frx"] * 0.98
        lo, hi = torch.minimum(x_out, x_edge), torch.maximum(x_out, x_edge)
        arm = _stroke(cv, yy, ey - 0.02, lo, hi, 0.008)
        _over(img, ry_, frame_col, arm * gl)
    (xl, gl_l), (xr, gl_r) = xs
    bridge = _stroke(cv, yy, ey - 0.02 + 0.02 * ((cv.x - (xl + xr) / 2) / 0.05) ** 2,
                     xl + gl_l, xr - gl_r, 0.009)
    _over(img, ry_, frame_col, bridge * gl)

    if details is not None:
        _accessories(img, cv, C, p, details)

    # ---- light: global brightness and a horizontal side-light ramp
    gain = 0.80 + 0.35 * _c(p["light"]) + 0.25 * _c(p["light_side"] - 0.5) * cv.x  # [N, 1, 1, W]
    img.mul_(gain).clamp_(0, 1)

    out = F.avg_pool2d(img, 2) * 2 - 1  # [N, 3, size, size]
    if details is not None:
        out = out + _pixel_noise(details, size) * _c(details["on"])
        out = out.clamp_(-1, 1)
    return out


def _bg_texture(cv: _Canvas, d: dict[str, torch.Tensor]) -> torch.Tensor:
    """Multiplicative background texture [N, 1, H, W]: stripes, checks or blotches."""
    x, y = cv.x, cv.ys.view(1, 1, -1, 1)
    ang, fr, ph = _c(d["bg_angle"]), _c(d["bg_freq"]), _c(d["bg_phase"])
    stripes = torch.sin(fr * (x * torch.cos(ang) + y * torch.sin(ang)) + ph)
    checks = torch.tanh(3 * torch.sin(fr * 0.5 * x + ph) * torch.sin(fr * 0.5 * y))
    blotch = F.interpolate(d["bg_noise"].float(), size=(cv.res, cv.res), mode="bicubic",
                           align_corners=False)
    w = d["bg_kind"].float()
    tex = _c(w[:, 0]) * stripes + _c(w[:, 1]) * checks + _c(w[:, 2]) * blotch
    return 1 + tex * _c(d["bg_amp"] * d["on"])


def _accessories(img, cv: _Canvas, C, p, d) -> None:
    """Test-split accessories: earrings, a hat band, a hair clip (composited in place)."""
    on = d["on"]
    yaw = p["yaw"]
    re, ye = cv.rows(-0.15, 0.25)  # rows each accessory can reach, from _geometry's ranges
    for side in (-1, 1):
        vis = (1 - torch.relu(side * yaw) * 1.2).clamp(0, 1)
        ex = C["fcx"] + side * (C["frx"] * (1.0 - 0.12 * side * _c(yaw)) + 0.01)
        ers = 0.7 + 0.5 * _c(p["ear_size"])
        ring = _ellipse(cv, ye, ex, C["ey"] + 0.10 + 0.16 * ers, 0.035, 0.035)
        _over(img, re, 0.3 + 0.7 * d["earring_col"], ring * _c(vis * d["earrings"] * on))
    # hat band across the top of the head
    rh, yh = cv.rows(-0.75, -0.33)
    hy = C["fcy"] - C["fry"] * 0.78
    band = (torch.sigmoid((0.06 - (yh - hy).abs()) * cv.k)
            * torch.sigmoid((C["frx"] * 1.15 - (cv.x - C["fcx"]).abs()) * cv.k))
    _over(img, rh, d["hat_col"], band * _c(d["hat"] * on))
    # hair clip: a small bar in the hair at one side
    cx = C["fcx"] + _c(d["clip_side"]) * C["frx"] * 0.62
    rc, yc = cv.rows(-0.55, -0.25)
    clip = _ellipse(cv, yc, cx, C["fcy"] - C["fry"] * 0.62, 0.09, 0.025)
    _over(img, rc, 0.2 + 0.8 * d["clip_col"], clip * _c(d["clip"] * on))


def _pixel_noise(d: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Fine per-pixel noise [N, 3, size, size], uniform with std ``noise_std``.

    A vectorised integer hash of (per-image seed, pixel index) keeps every image's noise the
    same whatever the batch it is rendered in. Products stay below 2**62 (no int64 overflow).
    """
    mask = 0x7FFFFFFF
    key = (d["noise_seed"].long() & mask).view(-1, 1, 1, 1)                      # [N, 1, 1, 1]
    idx = torch.arange(3 * size * size, dtype=torch.int64).view(1, 3, size, size)
    h = key ^ ((idx * 2654435761) & mask)                                        # [N, 3, S, S]
    for mult in (0x2C1B3C6D, 0x297A2D39, 0x1B873593):
        h = ((h ^ (h >> 15)) * mult) & mask
    uni = (h ^ (h >> 13)).double().div_(float(mask)).float()                     # [0, 1]
    return (uni - 0.5) * (math.sqrt(12.0) * _c(d["noise_std"]))


# --------------------------------------------------------------------------------------------
# Whole splits and PNG folders
# --------------------------------------------------------------------------------------------

def render_split(split: str, n_people: int, per_person: int, seed: int, batch_size: int = 500,
                 size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render a whole split -> ``(images uint8 [N, 3, size, size], u [N, D], person_id [N],
    labels [N, 7])``; details (textures, accessories, noise) are on for "test" only."""
    u, person_id = sample_split(split, n_people, per_person, seed)
    n = u.shape[0]
    details = None
    if split == "test":
        details = sample_details(n, _generator(seed, split, "details"))
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i in range(0, n, batch_size):
        sl = slice(i, min(n, i + batch_size))
        d = None if details is None else {k: v[sl] for k, v in details.items()}
        images[sl] = to_uint8(render(decode(u[sl]), size=size, details=d))
    labels = attribute_labels(decode(u))
    return images, u, person_id, labels


def labels_frame(u: torch.Tensor, person_id: torch.Tensor, labels: torch.Tensor):
    """The labels table: person_id, the attributes, and the latent u_0..u_{D-1}."""
    import pandas as pd

    cols: dict[str, np.ndarray] = {"person_id": person_id.numpy().astype(np.int64)}
    for j, name in enumerate(ATTRIBUTES):
        cols[name] = labels[:, j].numpy().astype(np.float64)
    for j in range(u.shape[1]):
        cols[f"u_{j}"] = u[:, j].numpy().astype(np.float64)
    return pd.DataFrame(cols)


def write_png_folder(images: torch.Tensor, labels_df, folder: str | os.PathLike) -> Path:
    """Write ``images`` (uint8 [N, 3, H, W]) as PNGs plus ``labels.csv``, atomically.

    A ``file`` column (``000000.png`` ...) is added when ``labels_df`` lacks one. The folder is
    built beside the target and renamed into place, so a crash leaves the old folder or none.
    """
    from PIL import Image

    folder = Path(folder)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    if len(labels_df) != images.shape[0]:
        raise ValueError(f"labels_df has {len(labels_df)} rows for {images.shape[0]} images")
    df = labels_df.copy()
    if "file" not in df.columns:
        df.insert(0, "file", [f"{i:06d}.png" for i in range(len(df))])
    else:
        df = df[["file"] + [c for c in df.columns if c != "file"]]
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        arr = images.permute(0, 2, 3, 1).contiguous().numpy()  # [N, H, W, 3]
        for name, im in zip(df["file"], arr):
            Image.fromarray(im).save(tmp / name, optimize=False, compress_level=1)
        df.to_csv(tmp / "labels.csv", index=False, float_format="%.8g")
    return folder


def read_png_folder(folder: str | os.PathLike):
    """Read a folder written by :func:`write_png_folder` -> ``(images uint8 [N, 3, H, W], df)``.

    Each file goes through :func:`clcae.images.decode_image`, the project's one decoder; a file
    that does not decode raises :class:`clcae.images.ImageDecodeError` (an ``OSError``) naming it.
    """
    import pandas as pd

    from clcae.images import decode_image

    folder = Path(folder)
    csv = folder / "labels.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: no labels.csv (not a ProcFaces PNG folder?)")
    df = pd.read_csv(csv)
    images = torch.stack([decode_image(folder / name)[0] for name in df["file"]])  # [N, 3, H, W]
    return images, df
