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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from clcae.data import centre_crop, resize_u8
from clcae.errors import ClcaeError
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


@dataclass
class EncoderInput:
    """One square image as the encoder takes it, with where it came from: a whole photo centre-cropped,
    or one face's FFHQ crop (``face``, ``alignment``) and the photo it can be pasted back into."""
    path: Path
    stem: str                                   # the photo's output stem (unique among the photos)
    name: str                                   # this input's output stem: "<stem>" or "<stem>_face<K>"
    image: torch.Tensor                         # uint8 [3, S, S]
    notes: list[str] = field(default_factory=list)
    photo: torch.Tensor | None = None           # aligned: the whole upright photo uint8 [3, H, W]
    face: int | None = None
    alignment: object | None = None             # aligned: clcae.faces.Alignment (crop <-> photo)
    detection: object | None = None             # aligned: the clcae.faces.Face it came from (box, landmarks)


def encoder_inputs(paths: list[str | os.PathLike], size: int, align: bool, face: int | None = None,
                   detector=None) -> tuple[list[EncoderInput], list[str]]:
    """Photos -> the encoder's inputs, and one message per photo that gave none (unreadable, or no
    face when aligning): those are named and skipped, the others still complete.

    ``align``: each face found (MTCNN, :class:`clcae.faces.FaceDetector`; faces numbered left to
    right, ``face`` picks one) becomes its FFHQ crop at ``size`` (``<stem>_face<K>``); else the photo
    is centre-cropped and resized (``<stem>``)."""
    if align and detector is None:
        from clcae.faces import FaceDetector

        detector = FaceDetector()
    paths = [Path(p) for p in paths]
    inputs, failures = [], []
    for path, stem in zip(paths, unique_stems(paths)):
        try:
            if not align:
                image, notes = load_photo(path, size)
                inputs.append(EncoderInput(path, stem, stem, image, notes))
                continue
            photo, notes = decode_photo(path)
        except ClcaeError as e:
            failures.append(str(e))
            continue
        inputs_of_photo = align_faces(path, stem, photo, notes, size, face, detector)
        if not inputs_of_photo:
            which = f"no face {face}" if face is not None else "no face found"
            failures.append(f"{path}: {which} (MTCNN, probability >= {detector.min_prob}); skipped")
        inputs.extend(inputs_of_photo)
    return inputs, failures


def align_faces(path: Path, stem: str, photo: torch.Tensor, notes: list[str], size: int, face: int | None,
                detector) -> list[EncoderInput]:
    """Every face of one decoded photo (or face ``face``) as its FFHQ crop at ``size``."""
    from clcae.faces import align_face

    found = detector(photo)
    picked = list(enumerate(found))[face:face + 1] if face is not None else list(enumerate(found))
    out = []
    for k, f in picked:
        crop, geo = align_face(photo, f.landmarks, size)
        note = f"face {k} of {len(found)}: FFHQ-aligned crop (MTCNN p={f.prob:.3f})"
        out.append(EncoderInput(path, stem, f"{stem}_face{k}", crop, notes + [note], photo, k, geo, f))
    return out


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, suffixed where two photos share one (``a.png``, ``a.jpg`` -> ``a``, ``a-2``)."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        seen[p.stem] = seen.get(p.stem, 0) + 1
        out.append(p.stem if seen[p.stem] == 1 else f"{p.stem}-{seen[p.stem]}")
    return out


def by_photo(inputs: list[EncoderInput]) -> dict[str, list[int]]:
    """The indices of ``inputs`` per photo (its stem), in order: a photo's faces together."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(inputs):
        groups.setdefault(item.stem, []).append(i)
    return groups


def paste_faces(photo: torch.Tensor, crops: list[tuple[torch.Tensor, object]]) -> torch.Tensor:
    """Edited (or reconstructed) face crops ``[(uint8 [3, S, S], Alignment)]`` pasted back into the
    photo, each through its inverse transform with a feathered mask; the photo's resolution."""
    from clcae.faces import paste_back

    for crop, geo in crops:
        photo = paste_back(photo, crop, geo)
    return photo


def paste_into_photo(faces: list[EncoderInput], images: torch.Tensor) -> torch.Tensor:
    """The results ``images`` ([-1, 1] [n, 3, S, S], one per aligned input of ``faces``, all of one
    photo) pasted back into that photo: uint8 [3, H, W]."""
    from clcae.images import to_uint8

    return paste_faces(faces[0].photo, [(to_uint8(image).cpu(), item.alignment) for image, item in zip(images, faces)])


def decode_photo(path: str | os.PathLike) -> tuple[torch.Tensor, list[str]]:
    """The whole photo, uint8 ``[3, H, W]`` upright RGB, and the notes (orientation, conversions):
    :func:`clcae.images.decode_image`, the decoder image folders use too."""
    return decode_image(path)


def to_pil(image_u8: torch.Tensor):
    """uint8 ``[3, H, W]`` -> a PIL RGB image (to save or show)."""
    from PIL import Image

    return Image.fromarray(image_u8.permute(1, 2, 0).cpu().numpy())
