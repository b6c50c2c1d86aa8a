"""Image tensor conventions: uint8 [0, 255] on disk, float [-1, 1] in the networks."""
import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 [0, 255] (clamped, rounded)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> [-1, 1] floats; float input passes through."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
