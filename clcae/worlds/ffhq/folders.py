"""Users' image folders that may hold damaged files: find the ones that do not decode, skip them by name.

:class:`clcae.data.FolderImages` reads each file's header when it is built (and decodes it with
:func:`clcae.images.decode_image` when served); a truncated or damaged
file often has a valid header and fails only when decoded, which would stop training or evaluation
at image 2,000. Skipped files join ``images.skipped`` (name, reason), are named in one warning and
counted in the stages' metrics.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from clcae.data import FolderImages
from clcae.errors import InputError
from clcae.images import ImageDecodeError, decode_image


def undecodable(images: FolderImages, threads: int = 8) -> list[tuple[str, str]]:
    """``(name, reason)`` of the files that fail to decode (threads: PIL releases the GIL while decoding)."""
    def fails(name: str) -> str | None:
        try:
            decode_image(images.folder / name)
        except ImageDecodeError as e:                   # "<path>: <why>"
            return str(e).removeprefix(f"{images.folder / name}: ")
        return None

    with ThreadPoolExecutor(threads) as pool:
        reasons = list(tqdm(pool.map(fails, images.names), total=len(images), desc=f"decoding {images.folder}",
                            unit="image", disable=len(images) < 1000))
    return [(name, why) for name, why in zip(images.names, reasons) if why is not None]


def skip_files(images: FolderImages, bad: list[tuple[str, str]]) -> FolderImages:
    """``images`` without the files ``bad`` names (with their labels), named in one warning."""
    if not bad:
        return images
    names = {name for name, _ in bad}
    keep = [i for i, name in enumerate(images.names) if name not in names]
    if not keep:
        raise InputError(f"{images.folder}: none of its {len(images)} images decodes, e.g. {bad[0][0]} ({bad[0][1]})")
    images.names = [images.names[i] for i in keep]
    if images.labels is not None:
        images.labels = images.labels.iloc[keep].reset_index(drop=True)
    images.skipped = images.skipped + list(bad)
    shown = ", ".join(f"{n} ({why})" for n, why in bad[:10])
    warnings.warn(f"{images.folder}: skipped {len(bad)} image file(s) that do not decode: {shown}"
                  f"{' ...' if len(bad) > 10 else ''}", stacklevel=2)
    return images


def drop_undecodable(images: FolderImages, threads: int = 8) -> FolderImages:
    """Decode every file once and skip the ones that fail."""
    return skip_files(images, undecodable(images, threads))
