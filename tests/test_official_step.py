"""One CLCAE step equals the official code's: forward, G(w+, f), every loss term, the gradient, the
Ranger step, and the official edit.

``tests/data/official_clcae256/expected.json`` holds numbers the official repository
(KumapowerLIU/CLCAE, commit in the file) produced on the CPU with seeded stand-in weights in its
own layout: a 256 px generator, batch 2, the official README's FFHQ loss weights. Its
``protocol`` says how the weights and inputs were built; this test builds the same ones
(``manifest.json`` is the official model's key/shape list; the seeded values come from
``../shared/fixtures/seeded_state.py``), loads them through the project's own converters and
compares. No official code is part of the project; only these numbers are.
"""
import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import fixture_path
from conftest import fixture_seeded_state as seeded_state

from clcae.editing import Direction, Editor
from clcae.inversion import invert, render
from clcae.losses import AlignLoss, InversionLoss, InversionLossConfig
from clcae.metrics.lpips import load_lpips_alex
from clcae.nets.aligner import load_official_aligner
from clcae.nets.encoder import CrossAttention, load_official_encoder, official_key
from clcae.nets.irse import load_arcface
from clcae.nets.stylegan2 import Generator
from clcae.optim import make_optimizer
from clcae.worlds.ffhq.world import FFHQWorld

DATA = Path(__file__).parent / "data" / "official_clcae256"
RTOL = 1e-5     # renders and loss terms: relative, as the issue asks
# ...except the terms read through the seeded stand-in ArcFace and contrastive image encoder: random
# 50-layer nets amplify float noise (measured: a 1e-7 relative change of a render moves the ArcFace
# cosine by 2e-5; our renders differ from the official ones by 2.5e-7), so these match to ~1e-4 abs
JUDGED_ATOL = {"identity": 1e-3, "align": 1e-4}


@pytest.fixture(scope="module")
def expected():
    return json.loads((DATA / "expected.json").read_text())


def official_state() -> dict:
    """The protocol's weights: seeded_state of the official manifest; every decoder weight and noise
    buffer scaled to unit std (as rosinality's equalised-lr storage); the FIR kernels as built."""
    manifest = json.loads((DATA / "manifest.json").read_text())
    state = seeded_state({k: v for k, v in manifest.items() if not k.endswith(".kernel")})
    for key, value in state.items():
        if key.startswith("decoder.") and value.is_floating_point() and value.ndim >= 2:
            state[key] = value / value.std()
    built = Generator(256, 512, 8).state_dict()   # rosinality's FIR buffers, as its Generator builds them
    state.update({k: built[k[len("decoder."):]] for k in manifest if k.endswith(".kernel")})
    return state


def protocol_inputs():
    x = F.interpolate(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(11)) * 2 - 1, size=256,
                      mode="bilinear", align_corners=False)
    x_avg = 0.2 * torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(12))
    latent_avg = 0.1 * torch.randn(512, generator=torch.Generator().manual_seed(7))
    return x, x_avg, latent_avg


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(encoder, G, world judges, aligner) loaded as a user would: the official trainer's own save
    (no latent_avg in it: given separately), model_ir_se50.pth, LPIPS's AlexNet, the contrastive pair."""
    tmp = tmp_path_factory.mktemp("official")
    x, x_avg, latent_avg = protocol_inputs()
    # the layout of the official trainer's own save (__get_save_dict): no latent_avg, opts with a torch.device
    opts = {"output_size": 256, "idx_k": None, "device": torch.device("cuda", 0)}
    ckpt = {"state_dict": official_state(), "opts": opts, "iter": 0.5}
    torch.save(ckpt, tmp / "iteration_1.pt")
    encoder, G = load_official_encoder(tmp / "iteration_1.pt", latent_avg=latent_avg)
    encoder.set_averages(x_avg, latent_avg)

    arcface = json.loads(fixture_path("irse50_manifest.json").read_text())["keys"]
    torch.save(seeded_state(arcface), tmp / "model_ir_se50.pth")
    alex = {k: [list(v.shape), "float32"] for k, v in torchvision.models.alexnet().state_dict().items()}
    torch.save(seeded_state(alex), tmp / "alexnet.pth")
    world = FFHQWorld(load_arcface(tmp / "model_ir_se50.pth"), load_lpips_alex(tmp / "alexnet.pth"))

    pair = json.loads(fixture_path("clcae_ffhq_aligner_manifest.json").read_text())
    image_state = seeded_state(pair["image_encoder_keys"])
    image_state["logit_scale"] = torch.full_like(image_state["logit_scale"], 2.6593)
    aligner = load_official_aligner({"state_dict": image_state, "opts": {}}, seeded_state(pair["latent_encoder_keys"]),
                                    image_avg=x_avg, w_avg=latent_avg)
    return encoder, G, world, aligner


def close(ours: torch.Tensor, ref: dict, what: str, rtol: float = RTOL) -> None:
    """``ours`` against the official digest (shape, norm, strided sample, 8x8-pooled image)."""
    ours = ours.detach().float()
    assert list(ours.shape) == ref["shape"], what
    assert ours.norm().item() == pytest.approx(ref["norm"], rel=rtol), f"{what}: norm"
    flat = ours.flatten()
    stride = max(1, flat.numel() // 512)
    sample, theirs = flat[::stride][:len(ref["sample"])], torch.tensor(ref["sample"])
    assert ((sample - theirs).norm() / theirs.norm()).item() < rtol, f"{what}: sample"
    if "pooled" in ref:
        pooled, theirs = F.adaptive_avg_pool2d(ours, 8).flatten(), torch.tensor(ref["pooled"])
        assert ((pooled - theirs).norm() / theirs.norm()).item() < rtol, f"{what}: pooled"


def official_outputs(G, out, blend: float):
    """The official forward's outputs, from ours: renders at 256 and G5(w+)."""
    images, f_gen = render(G, out, 256, 5, blend, return_features=True)
    return {"images": images["f"], "images_ww": images["wplus"], "images_w": images["w"], "feature_refine": f_gen,
            "latent_refine": out.wplus, "latent_base": out.w[:, None].expand(-1, G.n_latent, -1),
            "feature_offset": out.f}


@torch.no_grad()
def test_inference_matches_the_official_forward(models, expected):
    encoder, G, _, _ = models
    x, _, _ = protocol_inputs()
    ours = official_outputs(G, encoder.eval()(x), 1.0)
    for name, value in ours.items():
        close(value, expected["inference"][name], f"inference {name}")


def test_the_official_edit_goes_through_the_encoder(models, expected):
    encoder, G, _, _ = models
    x, _, _ = protocol_inputs()
    ref = expected["edit"]
    d = torch.randn(512, generator=torch.Generator().manual_seed(13))
    inv = invert(encoder.eval(), G, x, keep_codes=True)
    edited = Editor.for_encoder(encoder, G).edit(inv, Direction("d", d / d.norm()), ref["edit_offset"]["factor"])
    close(edited.wplus, ref["latent_refine"], "edit w+")
    close(edited.w, ref["latent_base"], "edit w")
    close(edited.f, ref["inserted_feature"], "edit f' = f(w') + G5(w+') - G5(w+)")
    close(edited.images["f"], ref["images"], "edit G(w+', f')")
    close(edited.images["wplus"], ref["images_ww"], "edit G(w+')")
    close(edited.images["w"], ref["images_w"], "edit G(w')")
    # the other setting (w+ + d, the original f shifted) is another image
    latent = Editor.for_encoder(encoder, G, mode="latent").edit(inv, Direction("d", d / d.norm()),
                                                                ref["edit_offset"]["factor"])
    assert (latent.images["f"] - edited.images["f"]).norm() > 1e-3 * edited.images["f"].norm()


def grad_norms_by_official_key(encoder) -> dict[str, float]:
    """Each parameter's gradient norm under its official name (q/k/v together: in_proj_*)."""
    sq: dict[str, float] = {}
    for name, p in encoder.named_parameters():
        if p.grad is not None:
            key = official_key(name)
            sq[key] = sq.get(key, 0.0) + p.grad.double().pow(2).sum().item()
    return {k: v ** 0.5 for k, v in sq.items()}


def train_mode_copy(encoder):
    """The encoder as the official step runs it: train mode (batch statistics), dropout off (the protocol
    sets p = 0 in the official model: masks cannot be matched across implementations)."""
    encoder = copy.deepcopy(encoder)
    for m in encoder.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(m, CrossAttention):
            m.dropout = 0.0
    return encoder.train().requires_grad_(True)


OFFICIAL_WEIGHTS = {"l2": 1.0, "perceptual": 0.2, "identity": 0.1, "freg": 0.01, "align": 0.1}  # README, FFHQ
TERM = {"l2": "l2_lambda", "perceptual": "lpips_lambda", "identity": "id_lambda", "freg": "feature_matching_lambda",
        "align": "contrastive_lambda"}


def step_loss(models, x, blend: float, weights: dict):
    """Our step's forward and loss with the official code's choices (freg 0.01, L_align on G(w), stored noise)."""
    encoder, G, world, aligner = models
    loss_fn = InversionLoss(InversionLossConfig(**weights, align_on="w_image"), world, AlignLoss(aligner))
    out = encoder(x)
    outputs = official_outputs(G, out, blend)
    images = {"w": outputs["images_w"], "wplus": outputs["images_ww"], "f": outputs["images"]}
    loss, terms = loss_fn(x, images, out.w, out.f, outputs["feature_refine"])
    return outputs, loss, terms


def test_one_training_step_matches_the_official_one(models, expected):
    """calc_loss's terms at blend s = 0.5 and the renders of the official training forward."""
    ref = expected["train_step"]
    x, _, _ = protocol_inputs()
    encoder = train_mode_copy(models[0])
    outputs, loss, terms = step_loss((encoder, *models[1:]), x, ref["blend_s"], OFFICIAL_WEIGHTS)
    for name in ("images", "images_ww", "images_w", "feature_refine", "latent_refine", "feature_offset"):
        close(outputs[name], ref[name], f"train {name}")
    official = ref["loss_dict"]
    for ours, theirs in (("l2/f", "loss_l2"), ("l2/wplus", "loss_l2_ww"), ("l2/w", "loss_l2_w"),
                         ("perceptual/f", "loss_lpips"), ("perceptual/wplus", "loss_lpips_ww"),
                         ("perceptual/w", "loss_lpips_w"), ("identity/f", "loss_id"),
                         ("identity/wplus", "loss_id_ww"), ("identity/w", "loss_id_w"),
                         ("freg", "loss_feature"), ("align", "loss_contras")):
        atol = JUDGED_ATOL.get(ours.split("/")[0], 0.0)
        assert terms[ours].item() == pytest.approx(official[theirs], rel=RTOL, abs=atol), ours
    assert loss.item() == pytest.approx(ref["loss"], rel=RTOL)   # 87.7: the L2 terms dominate
    running = {"mean": 0.0, "var": 0.0}   # BatchNorm statistics after the train-mode forward
    for name, buf in encoder.named_buffers():
        for kind in running:
            if name.endswith(f"running_{kind}"):
                running[kind] += buf.double().pow(2).sum().item()
    assert running["mean"] ** 0.5 == pytest.approx(ref["bn_running_mean_total_norm"], rel=1e-5)
    assert running["var"] ** 0.5 == pytest.approx(ref["bn_running_var_total_norm"], rel=1e-5)


# identity and align are left out: through the seeded stand-in IR-SE nets (ArcFace; the aligner's image
# encoder) their gradients are chaotic, so no two implementations, nor two machines, can agree on them.
# Measured on these renders: a 2.5e-7 relative change of G(w+) moves the identity gradient's norm by 16%,
# 1e-6 by 36%; a 1e-7 relative change of the input images moves the align gradient's norm from 47.8 to 76.6
# (the official run: 52.5; it matched to 2% on one machine and to 9% on another). Their forward values are
# checked above, and the nets themselves against ../shared/fixtures (tests/test_irse.py: bitwise equal to
# pSp's Backbone, gradients included; tests/test_aligner.py: the official contrastive models).
@pytest.mark.parametrize("term, rtol", [("l2", 1e-4), ("perceptual", 1e-4), ("freg", 1e-4)])
def test_each_terms_gradient_and_ranger_step_match_the_official_ones(models, expected, term, rtol):
    """One loss term at its official weight: the encoder gradient (each parameter's norm under its
    official name) and one official Ranger step (its first step: the centralised gradient times lr)."""
    ref = expected["train_step"]["term_grads"][TERM[term]]
    x, _, _ = protocol_inputs()
    encoder = train_mode_copy(models[0])
    weights = {k: (v if k == term else 0.0) for k, v in OFFICIAL_WEIGHTS.items()}
    _, loss, _ = step_loss((encoder, *models[1:]), x, expected["train_step"]["blend_s"], weights)
    assert loss.item() == pytest.approx(ref["loss"], rel=RTOL, abs=JUDGED_ATOL.get(term, 0.0) * weights[term])
    opt = make_optimizer("ranger", encoder.parameters(), lr=1e-4)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norms = grad_norms_by_official_key(encoder)
    theirs = {k: v for k, v in ref["per_param"].items() if v is not None}
    assert set(norms) <= set(theirs)   # the official norm1 of each attention block gets no gradient: absent here
    total = sum(v ** 2 for v in norms.values()) ** 0.5
    assert total == pytest.approx(ref["total"], rel=rtol)
    # each parameter's own norm: relative, except those below 0.1% of the total, which carry float noise
    each = 50 * rtol
    for key, value in theirs.items():
        assert norms.get(key, 0.0) == pytest.approx(value, rel=each, abs=1e-3 * ref["total"]), key
    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    opt.step()
    moved: dict[str, float] = {}
    for n, p in encoder.named_parameters():
        moved[official_key(n)] = moved.get(official_key(n), 0.0) + (p.detach() - before[n]).double().pow(2).sum().item()
    assert sum(moved.values()) ** 0.5 == pytest.approx(ref["delta_total"], rel=rtol)
    for key, value in ref["delta_per_param"].items():
        assert moved.get(key, 0.0) ** 0.5 == pytest.approx(value, rel=each, abs=1e-3 * ref["delta_total"]), key
