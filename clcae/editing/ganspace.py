"""GANSpace (Harkonen et al., NeurIPS 2020): principal components of sampled w are edit directions.

scikit-learn's PCA on ``[N, D]`` mapped latents, saved in the published ``ffhq_pca.pt`` layout
(:class:`~clcae.editing.directions.PCABasis`), with the explained variance of each component.
"""
from __future__ import annotations

import torch

from clcae.editing.directions import PCABasis


def fit_pca(latents: torch.Tensor, n_components: int, seed: int = 0) -> tuple[PCABasis, torch.Tensor]:
    """``latents [N, D]`` -> (basis with unit components, explained-variance ratio ``[k]``).

    Components are sign-fixed (largest-magnitude entry positive) so refits agree."""
    from sklearn.decomposition import PCA

    x = latents.double().cpu().numpy()
    if x.ndim != 2 or not 1 <= n_components <= min(x.shape):
        raise ValueError(f"fit_pca: {n_components} components of latents {list(latents.shape)}")
    pca = PCA(n_components=n_components, svd_solver="full", random_state=seed).fit(x)
    comp = torch.from_numpy(pca.components_).float()                     # [k, D], unit rows
    sign = torch.sign(comp.gather(1, comp.abs().argmax(1, keepdim=True)))  # [k, 1]
    comp = comp * sign
    basis = PCABasis(mean=torch.from_numpy(pca.mean_).float()[None],
                     comp=comp[:, None, :],
                     std=torch.from_numpy(pca.explained_variance_).float().sqrt(), source="fit_pca")
    return basis, torch.from_numpy(pca.explained_variance_ratio_).float()
