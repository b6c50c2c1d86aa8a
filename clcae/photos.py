"""People's photos as the encoder takes them: any size, aspect, mode and orientation -> a square
uint8 ``[3, S, S]``, with a note of what was done to it.

The pipeline's own image folders are clean PNGs (``clcae.data.read_image``); a photo from a phone
or the web is not: EXIF orientation, grayscale, palette, RGBA, CMYK and 16-bit files all occur.
Each is converted the way an image viewer shows it (alpha composited on white), centre-cropped
to a square and resized with antialiasing. A file that is empty, not an image or truncated raises
:class:`PhotoError`, one line naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from clcae.config import InputError
from clcae.data import centre_crop, resize_u8


class PhotoError(InputError):
    """A photo that cannot be read; the message names the file and why."""


def _to_rgb(im) -> tuple[object, list[str]]:
    """A PIL image in any mode -> 8-bit RGB, and notes of the conversions."""
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


def load_photo(path: str | os.PathLike, size: int) -> tuple[torch.Tensor, list[str]]:
    """uint8 ``[3, size, size]`` and the notes (orientation, conversions, crop, resize)."""
    image, notes = decode_photo(path)
    h, w = image.shape[-2:]
    if h != w:
        image = centre_crop(image)
        notes.append(f"centre-cropped {w}x{h} to {min(h, w)}x{min(h, w)}")
    if image.shape[-1] != size:
        notes.append(f"resized {image.shape[-1]} to {size} (antialiased)")
        image = resize_u8(image[None], size)[0]
    return image, notes


def decode_photo(path: str | os.PathLike) -> tuple[torch.Tensor, list[str]]:
    """The whole photo, uint8 ``[3, H, W]`` upright RGB, and the notes (orientation, conversions)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise PhotoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PhotoError(f"{path}: empty file")
    try:
        with Image.open(path) as im:
            im.load()                                   # decodes now: a truncated file fails here
            oriented = ImageOps.exif_transpose(im)
            notes = ["EXIF orientation applied"] if oriented is not im and im.getexif().get(0x0112, 1) != 1 else []
            rgb, conversions = _to_rgb(oriented)
            arr = np.asarray(rgb)
    except UnidentifiedImageError:
        raise PhotoError(f"{path}: not an image PIL can read") from None
    except (OSError, ValueError, SyntaxError) as e:     # truncated or corrupt data
        raise PhotoError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1), notes + conversions   # [3, H, W]


def to_pil(image_u8: torch.Tensor):
    """uint8 ``[3, H, W]`` -> a PIL RGB image (to save or show)."""
    from PIL import Image

    return Image.fromarray(image_u8.permute(1, 2, 0).cpu().numpy())
