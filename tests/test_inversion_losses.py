"""The encoder's loss term by term against hand-computed values, and the F blend schedules."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from clcae.data import resize_square
from clcae.losses import AlignLoss, InversionLoss, InversionLossConfig
from clcae.schedules import feature_blend
from clcae.worlds.base import CallableJudge


def flat(*colours):
    """Images of constant colour, one per colour: [B, 3, 2, 2]."""
    return torch.tensor(colours, dtype=torch.float64)[:, :, None, None].expand(-1, -1, 2, 2).clone()


# Targets and reconstructions of constant colour, so every term is a sum over three channels:
TARGET = flat((1, 0, 0), (0, 1, 0))
IMAGES = {
    "w": flat((0.6, 0.8, 0), (0, 0.8, 0.6)),  # cos with the target 0.6 and 0.8
    "wplus": flat((1, 0, 0), (0, 0, 1)),  # exact, then orthogonal
    "f": flat((0.5, 0, 0), (0, 0.5, 0)),  # half the target: cos 1
}
# mean squared error: w ((.16 + .64) / 3 + (.04 + .36) / 3) / 2 = 0.2; wplus (0 + 2/3) / 2; f (.25 / 3)
L2 = {"w": 0.2, "wplus": 1 / 3, "f": 1 / 12}
# mean absolute difference per image, then batch mean: w (1.2/3 + 0.8/3) / 2; wplus (0 + 2/3) / 2; f 0.5 / 3
PERCEPTUAL = {"w": 1 / 3, "wplus": 1 / 3, "f": 1 / 6}
IDENTITY = {"w": 1 - (0.6 + 0.8) / 2, "wplus": 1 - (1 + 0) / 2, "f": 0.0}
F_ENC = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).reshape(2, 1, 1, 2)
F_GEN = torch.tensor([[0.0, 2.0], [1.0, 1.0]], dtype=torch.float64).reshape(2, 1, 1, 2)
FREG = {"mean": (1 + 0 + 4 + 9) / 4, "sum": ((1 + 0) + (4 + 9)) / 2}
W = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
# 1 - cos(mean colour, w), batch mean: on the input (cos 1 and 1/sqrt 2) and on G(w) (cos 0.6 and 0.8/sqrt 2)
ALIGN = {"input": 1 - (1 + 1 / math.sqrt(2)) / 2, "w_image": 1 - (0.6 + 0.8 / math.sqrt(2)) / 2}


class Counted:
    """A stand-in judge that counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


def judges():
    perceptual = Counted(lambda x, y: (x - y).abs().flatten(1).mean(1))  # [B]
    identity = Counted(lambda x: x.mean((2, 3)) * 3)  # [B, 3], not unit: the loss normalises
    return perceptual, identity


class TinyAligner(nn.Module):
    """Embeds an image as its mean colour and w as itself; built for 1 px images like the real one
    is for its own size (so the loss must resize)."""

    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(image_size=1)
        self.logit_scale = nn.Parameter(torch.tensor(0.0))

    def embed_image(self, image):
        assert image.shape[-2:] == (1, 1), image.shape
        return image.flatten(1)  # [B, 3]

    def embed_latent(self, w):
        return w  # [B, 3]


def make_loss(**cfg):
    perceptual, identity = judges()
    loss = InversionLoss(InversionLossConfig(**cfg), CallableJudge(perceptual, identity),
                         AlignLoss(TinyAligner(), mode="cosine"))
    return loss, perceptual, identity


@pytest.mark.parametrize("align_on", ["input", "w_image"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_every_term_by_hand(align_on, reduction):
    loss, perceptual, identity = make_loss(align_on=align_on, freg_reduction=reduction)
    total, terms = loss(TARGET, IMAGES, W, F_ENC, F_GEN)
    expected = {}
    for key in ("w", "wplus", "f"):
        expected[f"l2/{key}"] = L2[key]
        expected[f"perceptual/{key}"] = PERCEPTUAL[key]
        expected[f"identity/{key}"] = IDENTITY[key]
    expected["freg"] = FREG[reduction]
    expected["align"] = ALIGN[align_on]
    weighted = (sum(L2.values()) + 0.2 * sum(PERCEPTUAL.values()) + 0.1 * sum(IDENTITY.values())
                + 1.0 * FREG[reduction] + 0.1 * ALIGN[align_on])  # the paper's weights
    expected["total"] = weighted
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value, abs=1e-9), name
        assert not terms[name].requires_grad
    assert total.item() == pytest.approx(weighted, abs=1e-9)
    # one batch of the three renders, the target judged once: a shared network would run twice
    assert perceptual.calls == 1 and identity.calls == 2


def test_weights_scale_their_terms():
    loss, *_ = make_loss(l2=2.0, perceptual=0.5, identity=0.3, freg=0.01, align=0.7)
    total, _ = loss(TARGET, IMAGES, W, F_ENC, F_GEN)
    expected = (2.0 * sum(L2.values()) + 0.5 * sum(PERCEPTUAL.values()) + 0.3 * sum(IDENTITY.values())
                + 0.01 * FREG["mean"] + 0.7 * ALIGN["input"])
    assert total.item() == pytest.approx(expected, abs=1e-9)


def test_zero_weights_skip_their_judges():
    perceptual, identity = judges()
    loss = InversionLoss(InversionLossConfig(perceptual=0, identity=0, align=0, freg=0),
                         CallableJudge(perceptual, identity))
    total, terms = loss(TARGET, IMAGES, W, F_ENC, F_GEN)
    assert perceptual.calls == 0 and identity.calls == 0
    assert set(terms) == {"l2/w", "l2/wplus", "l2/f", "total"}
    assert total.item() == pytest.approx(sum(L2.values()), abs=1e-9)
    # judges may be absent when their weights are 0
    InversionLoss(InversionLossConfig(perceptual=0, identity=0, align=0))


@pytest.mark.parametrize("weight", ["perceptual", "identity", "align"])
def test_a_weight_without_its_judge_fails(weight):
    perceptual, identity = judges()
    given = {"perceptual": perceptual, "identity": identity, "align": AlignLoss(TinyAligner(), mode="cosine")}
    given[weight] = None
    with pytest.raises(ValueError, match=rf"InversionLossConfig.{weight} = .* > 0 but no {weight} judge"):
        InversionLoss(InversionLossConfig(), CallableJudge(given["perceptual"], given["identity"]), given["align"])


def test_without_an_f_branch_there_is_no_i3_and_no_freg():
    loss, perceptual, _ = make_loss()
    images = {k: IMAGES[k] for k in ("w", "wplus")}
    total, terms = loss(TARGET, images, W)
    assert not any(name.endswith("/f") for name in terms) and "freg" not in terms
    expected = (L2["w"] + L2["wplus"] + 0.2 * (PERCEPTUAL["w"] + PERCEPTUAL["wplus"])
                + 0.1 * (IDENTITY["w"] + IDENTITY["wplus"]) + 0.1 * ALIGN["input"])
    assert total.item() == pytest.approx(expected, abs=1e-9)
    assert perceptual.calls == 1  # the two renders in one batch


def test_gradients_reach_f_and_w_but_not_the_generators_feature():
    loss, *_ = make_loss(align_on="w_image")
    images = {k: v.clone().requires_grad_() for k, v in IMAGES.items()}
    w, f, f_gen = W.clone().requires_grad_(), F_ENC.clone().requires_grad_(), F_GEN.clone().requires_grad_()
    total, _ = loss(TARGET, images, w, f, f_gen)
    total.backward()
    assert f_gen.grad is None  # G5(w+) is a detached target, as in the official code
    torch.testing.assert_close(f.grad, 2 * (F_ENC - F_GEN) / 4)  # d/df mean (f - g)^2
    assert w.grad.abs().sum() > 0 and all(img.grad.abs().sum() > 0 for img in images.values())
    # on the input image the align term reaches w only, not G(w)
    loss, *_ = make_loss(l2=0, perceptual=0, identity=0, freg=0, align_on="input")
    images = {"w": IMAGES["w"].clone().requires_grad_()}
    w = W.clone().requires_grad_()
    loss(TARGET, images, w)[0].backward()
    assert images["w"].grad is None and w.grad.abs().sum() > 0


def test_bad_inputs_name_the_problem():
    loss, *_ = make_loss()
    with pytest.raises(ValueError, match=r"images\['w'\] has shape \[2, 3, 4, 4\], target \[2, 3, 2, 2\]"):
        loss(TARGET, {"w": torch.zeros(2, 3, 4, 4, dtype=torch.float64)}, W)
    with pytest.raises(ValueError, match="unknown image keys"):
        loss(TARGET, {"wplus_f": TARGET}, W)
    with pytest.raises(ValueError, match="f was given without f_gen"):
        loss(TARGET, IMAGES, W, F_ENC)
    with pytest.raises(ValueError, match="needs w"):
        loss(TARGET, IMAGES, None, F_ENC, F_GEN)
    loss_w, *_ = make_loss(align_on="w_image")
    with pytest.raises(ValueError, match=r"needs images\['w'\]"):
        loss_w(TARGET, {"wplus": IMAGES["wplus"]}, W)
    bad_judge = InversionLoss(InversionLossConfig(identity=0, align=0),
                              CallableJudge(perceptual=lambda x, y: (x - y).mean()))
    with pytest.raises(ValueError, match="one distance per image"):
        bad_judge(TARGET, IMAGES)
    for cfg, match in (({"l2": -1.0}, "l2 must be a finite number >= 0"), ({"align_on": "G(w)"}, "align_on"),
                       ({"freg_reduction": "max"}, "freg_reduction"), ({"freg": float("nan")}, "freg")):
        with pytest.raises(ValueError, match=match):
            InversionLossConfig(**cfg)


def test_resize_square_by_hand():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert resize_square(image, 2).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]  # 2x2 box means
    assert resize_square(image, 4) is image
    up = resize_square(torch.tensor([[[[0.0, 1.0]]]]).expand(1, 1, 2, 2), 4)
    assert up[0, 0, 0].tolist() == [0.0, 0.25, 0.75, 1.0]  # bilinear, half-pixel centres


def test_align_with_a_real_aligner_at_its_own_size():
    from clcae.nets.aligner import Aligner, AlignerConfig

    aligner = Aligner(AlignerConfig(image_size=32, num_layers=18, width=4, style_dim=8, embed_dim=8, heads=2,
                                    ff_dim=16, dropout=0.0))
    align = AlignLoss(aligner, mode="cosine")
    loss = InversionLoss(InversionLossConfig(perceptual=0, identity=0), align=align)
    target = torch.rand(2, 3, 64, 64) * 2 - 1
    w = torch.randn(2, 8)
    _, terms = loss(target, {"w": target.clone()}, w)
    expected = align(torch.nn.functional.avg_pool2d(target, 2), w)  # 64 -> 32 by 2x2 means
    torch.testing.assert_close(terms["align"], expected)


# ----------------------------------------------------------------------------- F blend schedules


def test_epoch_ramp_goes_0_to_1_within_every_epoch():
    assert [feature_blend(s, "epoch_ramp", steps_per_epoch=5) for s in range(7)] == [0, .25, .5, .75, 1, 0, .25]
    assert feature_blend(12, "epoch_ramp", steps_per_epoch=5, total_steps=100) == 0.5
    assert feature_blend(3, "epoch_ramp", steps_per_epoch=1) == 1.0  # one batch an epoch


def test_single_ramp_and_constant():
    assert [feature_blend(s, "single_ramp") for s in (0, 2500, 10_000, 50_000)] == [0.0, 0.25, 1.0, 1.0]
    assert feature_blend(100, "single_ramp", rate=0.004) == pytest.approx(0.4)
    # rate=None: one ramp over the run, 1 on the last step
    assert [feature_blend(s, "single_ramp", total_steps=11, rate=None) for s in (0, 5, 10, 20)] == [0, .5, 1, 1]
    assert [feature_blend(s, "constant") for s in (0, 7)] == [1.0, 1.0]


def test_feature_blend_errors():
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        feature_blend(0, "cosine")
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        feature_blend(0, "epoch_ramp")
    with pytest.raises(ValueError, match="needs total_steps"):
        feature_blend(0, "single_ramp", rate=None)
    with pytest.raises(ValueError, match="step must be >= 0"):
        feature_blend(-1, "constant")
