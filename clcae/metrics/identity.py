"""Identity similarity: cosine between identity embeddings of two images (pSp's ID metric).

The embeddings come from the world's identity judge (ArcFace in the ffhq world, the world CNN
in procfaces), computed by the caller: this module knows no network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.inference_mode()
def identity_similarity(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``[B]`` of paired embeddings ``[B, D]`` (normalised here, so unit or not)."""
    if emb_a.shape != emb_b.shape or emb_a.ndim != 2:
        raise ValueError(f"identity_similarity: expected two [B, D] embeddings of the same shape, "
                         f"got {tuple(emb_a.shape)} and {tuple(emb_b.shape)}")
    return (F.normalize(emb_a, dim=1) * F.normalize(emb_b, dim=1)).sum(dim=1)  # [B]
