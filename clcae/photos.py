"""People's photos as the encoder takes them: any size, aspect, mode and orientation -> a square
uint8 ``[3, S, S]``, with a note of what was done to it.

A photo from a phone or the web may have EXIF orientation, or be grayscale, palette, RGBA, CMYK
or 16-bit. It is decoded by :func:`clcae.images.decode_image`, the one decoder image folders
(``clcae.data.read_image``) use too, so it becomes the tensor it would be in a folder: converted
the way an image viewer shows it (alpha composited on white). Then it is centre-cropped to a
square and resized with antialiasing. A file that is empty, not an image or truncated raises
:class:`PhotoError` (``clcae.images.ImageDecodeError``), one line naming the file.
"""
from __future__ import annotations

import os

import torch

from clcae.data import centre_crop, resize_u8
from clcae.images import ImageDecodeError, decode_image

PhotoError = ImageDecodeError
"""A photo that cannot be read; the message names the file and why (the one decoder's error)."""


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
    """The whole photo, uint8 ``[3, H, W]`` upright RGB, and the notes (orientation, conversions):
    :func:`clcae.images.decode_image`, the decoder image folders use too."""
    return decode_image(path)


def to_pil(image_u8: torch.Tensor):
    """uint8 ``[3, H, W]`` -> a PIL RGB image (to save or show)."""
    from PIL import Image

    return Image.fromarray(image_u8.permute(1, 2, 0).cpu().numpy())
