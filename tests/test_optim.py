"""Lookahead by hand, Ranger against its formulas (and torch-optimizer's when installed), exact resume."""
import io
import math
import warnings

import pytest
import torch
from torch import nn

from clcae.optim import Lookahead, Ranger, centralize_gradients, make_optimizer


def test_lookahead_by_hand_on_one_parameter():
    # loss p^2 / 2, SGD lr 0.1: each fast step multiplies p by 0.9; k = 3, alpha = 0.5
    p = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    opt = Lookahead(torch.optim.SGD([p], lr=0.1), k=3, alpha=0.5)
    seen = []
    for _ in range(6):
        opt.zero_grad()
        (p.square() / 2).backward()
        opt.step()
        seen.append(p.item())
    slow1 = 1 + 0.5 * (0.9 ** 3 - 1)  # 0.8645: after step 3 the slow weight moves half-way to 0.729
    slow2 = slow1 + 0.5 * (slow1 * 0.9 ** 3 - slow1)  # 0.74736025
    expected = [0.9, 0.81, slow1, slow1 * 0.9, slow1 * 0.81, slow2]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert opt.state[p]["slow"].item() == pytest.approx(slow2, abs=1e-12)


def test_centralize_gradients_by_hand():
    weight = nn.Parameter(torch.zeros(2, 2))
    bias = nn.Parameter(torch.zeros(2))
    weight.grad = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    bias.grad = torch.tensor([1.0, 3.0])
    centralize_gradients([weight, bias])
    assert weight.grad.tolist() == [[-0.5, 0.5], [-1.0, 1.0]]  # each row minus its mean
    assert bias.grad.tolist() == [1.0, 3.0]  # 1-d tensors are left alone


# ----------------------------------------------------------------------------- Ranger against its formulas


def problem(dtype=torch.float64):
    """A least-squares layer whose gradients change every step (so every part of the update matters)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=g, dtype=dtype)
    y = torch.randn(8, 3, generator=g, dtype=dtype)
    model = nn.Linear(4, 3).to(dtype)
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 4, generator=g, dtype=dtype))
        model.bias.copy_(torch.randn(3, generator=g, dtype=dtype))

    def loss_fn(m):
        return (m(x) - y).square().sum()

    return model, loss_fn


def reference_ranger(params, loss_fn_of, steps, lr, weight_decay, gc, betas=(0.95, 0.999), eps=1e-5, k=6, alpha=0.5):
    """lessw2020's Ranger written from its equations: GC, decoupled decay, RAdam, Lookahead."""
    b1, b2 = betas
    params = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    slow = [p.clone() for p in params]
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, steps + 1):
        leaves = [p.clone().requires_grad_() for p in params]
        grads = torch.autograd.grad(loss_fn_of(leaves), leaves)
        for i, g in enumerate(grads):
            if gc and g.dim() > 1:
                g = g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
            p = params[i] * (1 - lr * weight_decay)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
            if rho > 5:
                rect = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                p = p - lr * rect * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m[i] / (v[i].sqrt() + eps)
            else:
                p = p - lr * m[i] / (1 - b1 ** t)
            params[i] = p
        if t % k == 0:
            for i in range(len(params)):
                slow[i] = slow[i] + alpha * (params[i] - slow[i])
                params[i] = slow[i].clone()
    return params


def run(opt, model, loss_fn, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model).backward()
        opt.step()


@pytest.mark.parametrize("gc", [True, False])
def test_ranger_matches_its_formulas(gc):
    model, loss_fn = problem()
    start = [p.detach().clone() for p in model.parameters()]

    def loss_of(leaves):
        weight, bias = leaves
        return loss_fn(lambda x: x @ weight.T + bias)

    steps, lr, wd = 14, 0.05, 0.1  # 14 steps: unrectified then rectified updates, two lookahead syncs
    expected = reference_ranger(start, loss_of, steps, lr, wd, gc)
    run(Ranger(model.parameters(), lr=lr, weight_decay=wd, centralize=gc), model, loss_fn, steps)
    for got, want, first in zip(model.parameters(), expected, start):
        torch.testing.assert_close(got.detach(), want, rtol=1e-10, atol=1e-12)
        assert not torch.allclose(got, first)


def test_ranger_matches_torch_optimizer_ranger():
    torch_optimizer = pytest.importorskip("torch_optimizer")  # pytorch_ranger's Ranger: no gradient centralisation
    lr, wd, steps = 0.05, 0.1, 14
    ours, loss_fn = problem(torch.float32)  # it computes in float32 whatever the parameter's dtype
    theirs, _ = problem(torch.float32)
    run(Ranger(ours.parameters(), lr=lr, weight_decay=wd, centralize=False), ours, loss_fn, steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecated add_(scalar, tensor) overloads
        run(torch_optimizer.Ranger(theirs.parameters(), lr=lr, weight_decay=wd), theirs, loss_fn, steps)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ranger_reduces_a_quadratic():
    curvature = torch.tensor([1.0, 2.0, 3.0, 4.0])
    target = torch.tensor([1.0, -2.0, 0.5, 3.0])
    x = nn.Parameter(torch.zeros(4))
    opt = make_optimizer("ranger", [x], lr=0.05)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = (curvature * (x - target).square()).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-2 * losses[0]


# ----------------------------------------------------------------------------- resume, LR, API


def test_state_dict_roundtrip_continues_exactly():
    def fresh():
        model, loss_fn = problem(torch.float32)
        return model, Ranger(model.parameters(), lr=0.05, weight_decay=0.01), loss_fn

    model, opt, loss_fn = fresh()
    run(opt, model, loss_fn, 10)  # uninterrupted; the lookahead sync at step 6 uses slow weights from step 1

    first, opt1, _ = fresh()
    run(opt1, first, loss_fn, 5)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt1.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    resumed, opt2, _ = fresh()
    resumed.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    assert opt2.steps == 5 and opt2.param_groups is opt2.base.param_groups
    run(opt2, resumed, loss_fn, 5)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)

    restarted, opt3, _ = fresh()  # the same weights with a fresh optimizer: the test can tell
    restarted.load_state_dict(ckpt["model"])
    run(opt3, restarted, loss_fn, 5)
    assert not torch.equal(model.weight, restarted.weight)


def test_load_state_dict_rejects_a_plain_optimizer_state():
    model, _ = problem()
    opt = Ranger(model.parameters())
    plain = torch.optim.RAdam(model.parameters()).state_dict()
    with pytest.raises(ValueError, match="Lookahead state dict"):
        opt.load_state_dict(plain)
    bad = opt.state_dict()
    bad["lookahead"]["slow"] = {0: torch.zeros(2, 2)}
    with pytest.raises(ValueError, match=r"slow weight 0 has shape \[2, 2\], the parameter \[3, 4\]"):
        opt.load_state_dict(bad)


def test_learning_rate_is_the_base_optimizers():
    model, loss_fn = problem()
    opt = Ranger(model.parameters(), lr=1e-3)
    for group in opt.param_groups:
        group["lr"] = 2e-3
    assert opt.base.param_groups[0]["lr"] == 2e-3
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    run(opt, model, loss_fn, 1)
    sched.step()
    assert opt.base.param_groups[0]["lr"] == pytest.approx(1e-3)
    extra = nn.Parameter(torch.zeros(2))
    opt.add_param_group({"params": [extra], "lr": 0.1})
    assert len(opt.base.param_groups) == 2 and opt.param_groups[1]["betas"] == (0.95, 0.999)


def test_decoupled_weight_decay_and_closure():
    # a zero gradient leaves RAdam's update at 0: only the decay acts, p *= 1 - lr * wd
    p = nn.Parameter(torch.full((2, 2), 2.0, dtype=torch.float64))
    opt = make_optimizer("ranger", [p], lr=0.1, weight_decay=0.5)

    def closure():
        opt.zero_grad()
        loss = (p * 0).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 0.0
    torch.testing.assert_close(p.detach(), torch.full((2, 2), 2.0 * (1 - 0.1 * 0.5), dtype=torch.float64))


def test_make_optimizer_names():
    params = [nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer("adam", params, 1e-3), torch.optim.Adam)
    assert isinstance(make_optimizer("adamw", params, 1e-3, 0.01), torch.optim.AdamW)
    ranger = make_optimizer("ranger", params, 1e-4)
    assert isinstance(ranger, Ranger) and (ranger.k, ranger.alpha) == (6, 0.5) and ranger.centralize
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_optimizer("sgd", params, 1e-3)
    with pytest.raises(ValueError, match="k must be"):
        Lookahead(torch.optim.SGD(params, lr=0.1), k=0)
