"""Image tensor conventions: uint8 [0, 255] on disk, float [-1, 1] in the networks; and the one
decoder, :func:`decode_image`, through which every image file enters the project.

:func:`decode_image` turns a file as an image viewer shows it into uint8 ``[3, H, W]`` upright RGB:
EXIF orientation applied; grayscale, palette, CMYK and 16-bit converted; alpha composited on
white. ``clcae.data.read_image`` (image folders: FFHQ, CelebA-HQ, the procfaces test split),
``clcae.photos`` (``clcae invert / edit / align``) and ``read_png_folder`` all call it, so a photo
becomes the same tensor whichever way it comes in. A plain 8-bit RGB file (all the pipeline
writes) decodes to exactly its pixels.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from clcae.errors import InputError


class ImageDecodeError(InputError):
    """An image file that cannot be decoded; the message names the file and why (``<path>: <why>``).

    An :class:`~clcae.errors.InputError` (the CLI prints it as one line) and so an ``OSError``
    (what image folders catch to skip a damaged file).
    """


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 [0, 255] (clamped, rounded)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> [-1, 1] floats; float input passes through."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (pixels; 0 leaves the image as is).

    ``images [N, C, H, W]``, ``sigma [N]``; reflect padding, as torchvision's ``gaussian_blur``
    (which takes one sigma per call, hence this batched version).
    """
    if images.ndim != 4 or sigma.shape != images.shape[:1]:
        raise ValueError(f"gaussian_blur: images [N, C, H, W] and sigma [N], got {tuple(images.shape)} "
                         f"and {tuple(sigma.shape)}")
    n, c, h, w = images.shape
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma.to(images).clamp_min(1e-3)[:, None]) ** 2)  # [N, 2r+1]
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # [N*C, 2r+1]
    out = torch.nn.functional.pad(images.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    out = torch.nn.functional.conv2d(out, kernel[:, None, None, :], groups=n * c)  # along W
    out = torch.nn.functional.conv2d(out, kernel[:, None, :, None], groups=n * c)  # along H
    return out.reshape(n, c, h, w)


def _to_rgb(im) -> tuple[object, list[str]]:
    """A PIL image in any mode -> 8-bit RGB, and notes of the conversions (none for RGB)."""
    from PIL import Image

    notes = []
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):      # 16-bit (or 32-bit int) grayscale
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray((arr / top * 255).round().clip(0, 255).astype(np.uint8), "L")
        notes.append("16-bit scaled to 8-bit")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        notes.append("palette converted")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
        notes.append("alpha composited on white")
    if im.mode == "CMYK":
        notes.append("CMYK converted")
    if im.mode in ("L", "1"):
        notes.append("grayscale")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im, notes


def decode_image(path: str | os.PathLike) -> tuple[torch.Tensor, list[str]]:
    """An image file -> uint8 ``[3, H, W]`` upright RGB, and notes of what was done (orientation,
    conversions; empty for a plain RGB file). Raises :class:`ImageDecodeError` naming the file
    when it is missing, empty, not an image or truncated."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageDecodeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageDecodeError(f"{path}: empty file")
    try:
        with Image.open(path) as im:
            im.load()                                   # decodes now: a truncated file fails here
            oriented = ImageOps.exif_transpose(im)
            turned = oriented is not im and im.getexif().get(0x0112, 1) != 1
            rgb, conversions = _to_rgb(oriented)
            arr = np.asarray(rgb)                       # [H, W, 3]
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{path}: not an image PIL can read") from None
    except (OSError, ValueError, SyntaxError) as e:     # truncated or corrupt data
        raise ImageDecodeError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    notes = (["EXIF orientation applied"] if turned else []) + conversions
    return torch.from_numpy(arr.copy()).permute(2, 0, 1), notes    # [3, H, W]
