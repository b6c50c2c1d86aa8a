"""Image tensor conventions: uint8 [0, 255] on disk, float [-1, 1] in the networks."""
import torch


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
