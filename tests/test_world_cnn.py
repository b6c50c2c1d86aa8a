"""World CNN: shapes, perceptual distance, checkpoint round trip, a tiny training run."""

import copy

import pytest
import torch
import torch.nn.functional as F

from clcae.config import Params
from clcae.errors import ConfigError
from clcae.images import to_uint8
from clcae.schema import build
from clcae.worlds.procfaces import procfaces as pf
from clcae.worlds.procfaces import world_cnn as wc


@pytest.fixture(scope="module")
def faces():
    u = pf.sample_latents(6, torch.Generator().manual_seed(0))
    return pf.render(pf.decode(u))  # [6, 3, 64, 64] in [-1, 1]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return wc.WorldCNN().eval()


def test_shapes_and_unit_identity(model, faces):
    with torch.no_grad():
        emb = model.identity(faces)
        attrs = model.attributes(faces)
        feats = model.features(faces)
        pooled = model.pooled(faces)
    assert emb.shape == (6, 128)
    assert torch.allclose(emb.norm(dim=1), torch.ones(6), atol=1e-5)
    assert attrs.shape == (6, len(pf.ATTRIBUTES))
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 4]
    assert pooled.shape == (6, model.widths[-1])
    # uint8 input and other sizes are converted to 64 px floats
    with torch.no_grad():
        assert torch.allclose(model.identity(to_uint8(faces)), emb, atol=0.05)
        assert model.identity(F.interpolate(faces, size=32)).shape == (6, 128)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        model.identity(faces[:, :1])


def test_perceptual_distance_zero_on_self_and_grows_with_noise(model, faces):
    with torch.no_grad():
        assert torch.equal(wc.perceptual_distance(model, faces, faces), torch.zeros(6))
        g = torch.Generator().manual_seed(1)
        noise = torch.randn(faces.shape, generator=g)
        d = [wc.perceptual_distance(model, faces, (faces + s * noise).clamp(-1, 1)).mean()
             for s in (0.02, 0.1, 0.3)]
    assert 0 < d[0] < d[1] < d[2]
    # differentiable, so it can serve as a training loss
    x = faces.clone().requires_grad_(True)
    wc.perceptual_distance(model, x, faces.flip(0)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_save_load_round_trip(tmp_path, faces):
    torch.manual_seed(0)
    m = wc.WorldCNN(widths=(8, 8, 16, 16, 32), emb_dim=16)
    m.train()
    m(faces)  # move the BatchNorm running statistics away from their init
    m.eval()
    path = wc.save_world_cnn(m, tmp_path / "w.pt", metrics={"x": 1.0})
    back = wc.load_world_cnn(path)
    sd, sd2 = m.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    with torch.no_grad():
        assert torch.equal(m.identity(faces), back.identity(faces))
    assert back.checkpoint_metrics == {"x": 1.0}
    assert not any(p.requires_grad for p in back.parameters())
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]  # no temp files left


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"config": {"widths": [8, 8, 16, 16, 32], "emb_dim": 16}}, bad)
    with pytest.raises(KeyError, match=r"bad\.pt.*state_dict"):
        wc.load_world_cnn(bad)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        wc.load_world_cnn(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        wc.load_world_cnn(junk)
    m = wc.WorldCNN(widths=(8, 8, 16, 16, 32), emb_dim=16)
    blob = {"config": {"widths": [8, 8, 16, 16, 64], "emb_dim": 16}, "state_dict": m.state_dict()}
    torch.save(blob, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"wrong\.pt"):
        wc.load_world_cnn(tmp_path / "wrong.pt")


def test_verification_accuracy_on_clean_and_random_embeddings():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(40, 32, generator=g), dim=1)
    pid = torch.arange(40).repeat_interleave(4)
    clean = F.normalize(centres[pid] + 0.05 * torch.randn(160, 32, generator=g), dim=1)
    assert wc.verification_accuracy(clean, pid) > 0.99
    noise = F.normalize(torch.randn(160, 32, generator=g), dim=1)
    assert 0.35 < wc.verification_accuracy(noise, pid) < 0.65


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match="world_cnn.stepz: unknown key"):
        wc.WorldCNNConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="widths"):
        wc.WorldCNNConfig(widths=(8, 8))
    with pytest.raises(ConfigError, match="detail_prob: must be <= 1"):
        wc.WorldCNNConfig(detail_prob=2.0)
    with pytest.raises(ConfigError, match="world.world_cnn.lr: must be > 0"):
        build(Params, {"world": {"world_cnn": {"lr": 0}}})
    assert wc.with_seed(wc.WorldCNNConfig(), 5).seed == 5 and wc.with_seed(wc.WorldCNNConfig(seed=2), 5).seed == 2


def test_tiny_training_run_reduces_attribute_loss(tmp_path):
    cfg = wc.WorldCNNConfig(n_people=24, per_person=4, steps=40, batch_size=32, lr=2e-3,
                            widths=(8, 16, 16, 32, 32), emb_dim=16, eval_people=6,
                            eval_per_person=2, seed=1)
    metrics = wc.train_world_cnn(cfg, tmp_path / "w.pt", progress=False)
    assert metrics["final_loss_attr"] < 0.7 * metrics["first_loss_attr"]
    for split in ("heldout_train_split", "test_split"):
        m = metrics[split]
        assert set(m["attr_r2"]) == set(pf.ATTRIBUTES) | {"mean"}
        assert 0.0 <= m["verification_acc"] <= 1.0
    back = wc.load_world_cnn(tmp_path / "w.pt")
    assert back.checkpoint_config["n_people"] == 24
    assert back.checkpoint_metrics["test_split"]["verification_acc"] == m["verification_acc"]
    assert len(back.checkpoint_history) == 40 and "loss_attr" in back.checkpoint_history[0]


def test_blur_shift_is_the_mean_readout_change_in_label_stds(model, faces):
    model = copy.deepcopy(model)
    model.attr_std.fill_(0.5)
    with torch.no_grad():
        soft = wc.gaussian_blur(faces, torch.full((6,), wc.BLUR_CHECK_SIGMA))
        by_hand = ((model.attributes(soft) - model.attributes(faces)) / 0.5).mean(0)
    shift = wc.blur_shift(model, faces)
    assert list(shift) == list(pf.ATTRIBUTES)
    torch.testing.assert_close(torch.tensor(list(shift.values())), by_hand, atol=1e-5, rtol=0)
    flat = torch.zeros(2, 3, 64, 64)  # blurring a flat image changes nothing
    assert all(abs(v) < 1e-6 for v in wc.blur_shift(model, flat).values())


def test_world_cnn_losses_by_hand_and_under_bf16(model, faces):
    """The objective's terms against their definitions; bf16 autocast of the forward (shared.cpu_amp)
    moves them by bf16 rounding only, and the terms stay float32."""
    cfg = wc.WorldCNNConfig(n_people=5)
    torch.manual_seed(1)
    head = wc.CosFaceHead(model.emb_dim, 5, cfg.margin, cfg.scale)
    pid, attr_t, trait_t = torch.tensor([0, 1, 2, 3, 4, 0]), torch.randn(6, 7), torch.randn(6, 20)
    with torch.no_grad():
        terms = wc.world_cnn_losses(model, head, faces, pid, attr_t, trait_t, cfg)
        emb, attr, trait = model(faces)
        cos = F.normalize(emb, dim=1) @ F.normalize(head.weight, dim=1).t() - cfg.margin * F.one_hot(pid, 5)
        by_hand = {"id": F.cross_entropy(cfg.scale * cos, pid), "attr": (attr - attr_t).square().mean(),
                   "trait": (trait - trait_t).square().mean()}
        by_hand["total"] = by_hand["id"] + cfg.attr_weight * by_hand["attr"] + cfg.trait_weight * by_hand["trait"]
        for k, v in by_hand.items():
            torch.testing.assert_close(terms[k], v, rtol=1e-5, atol=1e-6)
        amp = wc.world_cnn_losses(model, head, faces, pid, attr_t, trait_t, cfg, amp=True)
    for k, v in terms.items():
        assert amp[k].dtype == torch.float32
        torch.testing.assert_close(amp[k], v, rtol=0.05, atol=0.02)
    assert not torch.equal(amp["total"], terms["total"])   # the forward did run in bf16


def test_tiny_training_run_under_bf16_autocast(tmp_path):
    cfg = wc.WorldCNNConfig(n_people=24, per_person=4, steps=40, batch_size=32, lr=2e-3,
                            widths=(8, 16, 16, 32, 32), emb_dim=16, eval_people=6,
                            eval_per_person=2, seed=1)
    metrics = wc.train_world_cnn(cfg, tmp_path / "w.pt", progress=False, cpu_amp=True)
    assert metrics["cpu_amp"] and metrics["final_loss_attr"] < 0.7 * metrics["first_loss_attr"]
    back = wc.load_world_cnn(tmp_path / "w.pt")
    assert all(p.dtype == torch.float32 for p in back.parameters())   # autocast: the weights stay float32
