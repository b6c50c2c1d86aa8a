"""Losses and retrieval scores of the contrastive aligner.

InfoNCE (CLIP's loss with CLCAE's per-direction weight): for a batch of pairs (I_i, w_i),
logits_ij = exp(logit_scale) * cos(h_I(I_i), h_w(w_j)) (logit_scale = log 1/t), and
    loss = lambda * CE_rows(logits, i) + (1 - lambda) * CE_rows(logits.T, i)
the first term classifying each image's latent among all latents (I -> w), the second each
latent's image (w -> I).

Under DDP with ``gather=True`` every rank scores its own rows against the features of the
global batch (gathered with gradients), and its loss is scaled so that DDP's gradient
average equals the gradient of one process on the whole batch; the mean of the ranks'
losses equals that process's loss. ``gather=False`` is the official code's choice: each rank
uses only its local batch as negatives.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clcae.distributed import all_gather_with_grad, gather_sizes, get_rank, get_world_size, is_distributed


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE over cosine logits scaled by exp(logit_scale)."""

    def __init__(self, lambda_: float = 0.5, gather: bool = True, max_logit_scale: float | None = math.log(100)):
        super().__init__()
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"InfoNCELoss.lambda_ must lie in [0, 1], got {lambda_}")
        self.lambda_ = lambda_
        self.gather = gather
        self.max_logit_scale = max_logit_scale  # CLIP's cap: temperature >= 0.01

    def forward(self, h_image: torch.Tensor, h_latent: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
        if h_image.shape != h_latent.shape or h_image.dim() != 2:
            raise ValueError(f"InfoNCELoss expects two [B, E] feature batches, got {list(h_image.shape)} "
                             f"and {list(h_latent.shape)}")
        h_image = F.normalize(h_image, dim=-1)  # [n, E]
        h_latent = F.normalize(h_latent, dim=-1)
        n = h_image.shape[0]
        world, offset, total = 1, 0, n
        all_image, all_latent = h_image, h_latent
        if self.gather and is_distributed() and get_world_size() > 1:
            sizes = gather_sizes(n, h_image.device)
            world, offset, total = len(sizes), sum(sizes[: get_rank()]), sum(sizes)
            all_image = all_gather_with_grad(h_image, sizes)  # [N, E]
            all_latent = all_gather_with_grad(h_latent, sizes)
        scale = (logit_scale.to(h_image) if torch.is_tensor(logit_scale)
                 else torch.tensor(float(logit_scale), dtype=h_image.dtype, device=h_image.device))
        if self.max_logit_scale is not None:
            scale = scale.clamp(max=self.max_logit_scale)
        scale = scale.exp()
        labels = torch.arange(n, device=h_image.device) + offset  # our rows' positives in the global batch
        image_to_latent = F.cross_entropy(scale * h_image @ all_latent.T, labels, reduction="sum")  # [n, N]
        latent_to_image = F.cross_entropy(scale * h_latent @ all_image.T, labels, reduction="sum")
        loss = self.lambda_ * image_to_latent + (1 - self.lambda_) * latent_to_image
        # sum over our rows / global count, times world: DDP's mean over ranks is the global mean
        return loss * (world / total)


ClipLoss = InfoNCELoss


@torch.no_grad()
def retrieval_topk(h_image: torch.Tensor, h_latent: torch.Tensor, ks: tuple[int, ...] = (1, 5),
                   chunk: int = 4096) -> dict[str, float]:
    """Top-k retrieval accuracy of the true partner, both directions, over N pairs.

    Returns ``{'i2w_top1': ..., 'w2i_top1': ..., ...}``: the fraction of images whose own
    latent is among the k most similar latents (and vice versa). Ties count against the
    pair, so constant features score 0, not 1. Rows are processed ``chunk`` at a time.
    """
    if h_image.shape != h_latent.shape or h_image.dim() != 2:
        raise ValueError(f"retrieval_topk expects two [N, E] batches, got {list(h_image.shape)} "
                         f"and {list(h_latent.shape)}")
    h_image = F.normalize(h_image.float(), dim=-1)
    h_latent = F.normalize(h_latent.float(), dim=-1)
    out = {}
    for name, queries, keys in (("i2w", h_image, h_latent), ("w2i", h_latent, h_image)):
        ranks = torch.cat([_ranks(queries[i:i + chunk], keys, i) for i in range(0, len(queries), chunk)])
        for k in ks:
            out[f"{name}_top{k}"] = (ranks < k).float().mean().item()
    return out


def _ranks(queries: torch.Tensor, keys: torch.Tensor, start: int) -> torch.Tensor:
    """0-based rank of each query's partner (key start + row): other keys scoring >= it."""
    sim = queries @ keys.T  # [c, N]
    rows = torch.arange(len(queries), device=sim.device)
    own = sim[rows, rows + start]  # [c]
    beats = sim >= own[:, None]
    beats[rows, rows + start] = False
    return beats.sum(1)  # [c]


class AlignLoss(nn.Module):
    """L_align(I, w): how well latents w fit images I under the frozen aligner.

    ``mode="infonce"`` (default, as the official encoder training uses the contrastive
    loss) scores each pair against the other pairs of the batch with the aligner's learned
    temperature; ``mode="cosine"`` is 1 - cos(h_I, h_w) per pair, batch-size independent.
    The aligner is frozen and stays in eval mode even when the owner calls ``.train()``.
    """

    def __init__(self, aligner: nn.Module, mode: str = "infonce"):
        super().__init__()
        if mode not in ("infonce", "cosine"):
            raise ValueError(f"AlignLoss.mode must be 'infonce' or 'cosine', got {mode!r}")
        self.aligner = aligner.eval().requires_grad_(False)
        self.mode = mode
        self.infonce = InfoNCELoss(lambda_=0.5, gather=True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.aligner.eval()
        return self

    @classmethod
    def from_checkpoint(cls, path, device="cpu", mode: str = "infonce") -> "AlignLoss":
        from clcae.nets.aligner import load_aligner

        return cls(load_aligner(path, device), mode)

    def forward(self, image: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h_image = self.aligner.embed_image(image)  # [B, E]
        h_latent = self.aligner.embed_latent(w)  # [B, E]
        if self.mode == "cosine":
            return (1 - F.cosine_similarity(h_image, h_latent, dim=-1)).mean()
        return self.infonce(h_image, h_latent, self.aligner.logit_scale)
