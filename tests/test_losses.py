"""InfoNCE by hand, its DDP equivalence with gathered negatives, and retrieval top-k."""
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from clcae.losses import InfoNCELoss, retrieval_topk


def test_infonce_3x3_by_hand():
    image = [[1.0, 0.0], [0.0, 1.0], [0.28, 0.96]]
    latent = [[2.0, 0.0], [0.8, 0.6], [0.0, 1.0]]  # first row not unit: the loss uses cosines
    scale, lam = 2.0, 0.3
    unit = [[x / math.hypot(*row) for x in row] for row in latent]
    cos = [[image[i][0] * unit[j][0] + image[i][1] * unit[j][1] for j in range(3)] for i in range(3)]
    # cos = [[1, .8, 0], [0, .6, 1], [.28, .8, .96]]: rows and columns differ
    i2w = -sum(scale * cos[i][i] - math.log(sum(math.exp(scale * cos[i][j]) for j in range(3))) for i in range(3)) / 3
    w2i = -sum(scale * cos[j][j] - math.log(sum(math.exp(scale * cos[i][j]) for i in range(3))) for j in range(3)) / 3
    expected = lam * i2w + (1 - lam) * w2i

    loss = InfoNCELoss(lambda_=lam)(torch.tensor(image), torch.tensor(latent), torch.tensor(math.log(scale)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert i2w != pytest.approx(w2i, abs=1e-3)  # so the test tells the directions apart
    assert loss.item() != pytest.approx((1 - lam) * i2w + lam * w2i, abs=1e-4)


def test_temperature_is_capped_at_one_hundredth():
    h_image, h_latent = torch.randn(6, 4), torch.randn(6, 4)
    loss = InfoNCELoss()
    capped = loss(h_image, h_latent, torch.tensor(10.0))
    torch.testing.assert_close(capped, loss(h_image, h_latent, torch.tensor(math.log(100))))
    uncapped = InfoNCELoss(max_logit_scale=None)(h_image, h_latent, torch.tensor(10.0))
    assert not torch.isclose(capped, uncapped)


def test_retrieval_topk_on_a_circle():
    # unit vectors at angles; the nearest partner is the smallest angular distance
    def circle(degrees):
        radians = torch.tensor(degrees, dtype=torch.float64).deg2rad()
        return torch.stack([radians.cos(), radians.sin()], 1)

    h_image = circle([0, 60, 120, 180])
    h_latent = circle([10, 100, 50, 185])
    # image ranks of own latent: 0, 1, 2, 0; latent ranks of own image: 0, 1, 2, 0
    scores = retrieval_topk(h_image, h_latent, ks=(1, 2, 3), chunk=3)
    assert scores == {"i2w_top1": 0.5, "i2w_top2": 0.75, "i2w_top3": 1.0,
                      "w2i_top1": 0.5, "w2i_top2": 0.75, "w2i_top3": 1.0}
    constant = torch.ones(4, 8)  # ties count against the pair
    assert retrieval_topk(constant, constant, ks=(1, 4)) == {"i2w_top1": 0.0, "i2w_top4": 1.0,
                                                             "w2i_top1": 0.0, "w2i_top4": 1.0}


# ----------------------------------------------------------------------------- DDP with gathered negatives


class TinyPair(nn.Module):
    """Linear image and latent encoders plus the learnable log inverse temperature."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(12, 8)
        self.latent = nn.Linear(6, 8)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x, w):
        return self.image(x), self.latent(w), self.logit_scale


def global_batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 12, generator=gen), torch.randn(8, 6, generator=gen)


def fresh_model():
    torch.manual_seed(0)
    return TinyPair()


def _ddp_worker(rank, world_size, init_file, out_dir, splits):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        x, w = global_batch()
        results = {}
        for name, sizes in splits.items():
            start, stop = sum(sizes[:rank]), sum(sizes[:rank + 1])
            model = nn.parallel.DistributedDataParallel(fresh_model())
            loss = InfoNCELoss(lambda_=0.3, gather=True)(*model(x[start:stop], w[start:stop]))
            loss.backward()  # DDP averages the gradients over ranks
            with torch.no_grad():
                local_only = InfoNCELoss(lambda_=0.3, gather=False)(*model(x[start:stop], w[start:stop]))
            results[name] = {"loss": loss.detach(), "local_only": local_only,
                             "grads": {k: p.grad.clone() for k, p in model.module.named_parameters()}}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_with_gathered_features_equals_one_process(tmp_path):
    splits = {"equal": [4, 4], "unequal": [3, 5]}
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path), splits), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    x, w = global_batch()
    model = fresh_model()
    loss = InfoNCELoss(lambda_=0.3)(*model(x, w))
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}

    for name in splits:
        mean_loss = (ranks[0][name]["loss"] + ranks[1][name]["loss"]) / 2
        torch.testing.assert_close(mean_loss, loss.detach(), atol=1e-6, rtol=1e-6)
        for r in range(2):
            for key, grad in grads.items():
                torch.testing.assert_close(ranks[r][name]["grads"][key], grad, atol=1e-6, rtol=1e-5,
                                           msg=f"{name} {key}")
        # per-rank negatives (the official code's choice) give a different, smaller-batch loss
        local = (ranks[0][name]["local_only"] + ranks[1][name]["local_only"]) / 2
        assert abs(local.item() - loss.item()) > 1e-3


def test_align_loss_is_frozen_and_scores_pairs():
    from clcae.losses import AlignLoss
    from clcae.nets.aligner import Aligner, AlignerConfig

    torch.manual_seed(0)
    aligner = Aligner(AlignerConfig(image_size=32, num_layers=18, width=4, style_dim=16, embed_dim=8,
                                    heads=2, ff_dim=16, dropout=0.0))
    loss = AlignLoss(aligner, mode="cosine").train()
    assert not aligner.training and not any(p.requires_grad for p in aligner.parameters())
    image = torch.randn(3, 3, 32, 32, requires_grad=True)
    w = torch.randn(3, 16, requires_grad=True)
    value = loss(image, w)
    with torch.no_grad():
        a = aligner.embed_image(image)
        b = aligner.embed_latent(w)
        by_hand = sum(1 - (a[i] @ b[i]) / (a[i].norm() * b[i].norm()) for i in range(3)) / 3
    torch.testing.assert_close(value, by_hand, atol=1e-6, rtol=0)
    value.backward()
    assert image.grad.abs().sum() > 0 and w.grad.abs().sum() > 0
    # the InfoNCE mode is the aligner's own training loss at its learned temperature
    nce = AlignLoss(aligner)(image, w)
    expected = InfoNCELoss(0.5)(aligner.embed_image(image), aligner.embed_latent(w), aligner.logit_scale)
    torch.testing.assert_close(nce, expected)
