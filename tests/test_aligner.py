"""Contrastive aligner: official-checkpoint equivalence, pyramid layout and shapes, overfitting."""
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_path
from conftest import fixture_seeded_state as seeded_state

from clcae.losses import InfoNCELoss, retrieval_topk
from clcae.nets.aligner import (
    Aligner,
    AlignerConfig,
    LatentEncoder,
    convert_official_aligner,
    load_aligner,
    load_official_aligner,
    save_aligner,
)
from clcae.nets.psp import FeaturePyramid, Map2Style
from clcae.nets.stylegan2 import CheckpointError


@pytest.fixture(scope="module")
def official():
    manifest = json.loads(fixture_path("clcae_ffhq_aligner_manifest.json").read_text())
    expected = torch.load(fixture_path("clcae_ffhq_aligner_expected.pt"))
    image_state = seeded_state(manifest["image_encoder_keys"])
    image_state["logit_scale"] = torch.tensor(2.6593)
    latent_state = seeded_state(manifest["latent_encoder_keys"])
    return image_state, latent_state, expected


@torch.no_grad()
def test_matches_official_aligner(official):
    image_state, latent_state, e = official
    model = load_official_aligner({"state_dict": image_state, "opts": {}}, latent_state, e["image_avg"], e["w_avg"])
    assert not model.training
    assert model.cfg == AlignerConfig()  # every published size inferred from the shapes
    h_image = model.embed_image(e["image"])  # [3, 512]
    h_latent = model.embed_latent(e["w"])  # w is [3, 1, 512]
    torch.testing.assert_close(h_image, e["h_image"], atol=1e-5, rtol=0)
    torch.testing.assert_close(h_latent, e["h_latent"], atol=1e-5, rtol=0)
    torch.testing.assert_close(h_image @ h_latent.T, e["similarity"], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.logit_scale.detach(), e["logit_scale"])
    # a [B, 512] w embeds like its [B, 1, 512] form
    torch.testing.assert_close(model.embed_latent(e["w"][:, 0]), h_latent)


def test_official_conversion_and_errors(official):
    image_state, latent_state, _ = official
    converted = convert_official_aligner(image_state, latent_state)
    assert not any("latlayer" in k for k in converted)  # unused in the official image mode
    assert "image_encoder.map2style.convs.6.weight" in converted
    assert "latent_encoder.coarse.self_attn.in_proj_weight" in converted

    broken = {k: v for k, v in latent_state.items() if k != "fine.norm2.bias"}
    with pytest.raises(CheckpointError, match="latent_encoder.fine.norm2.bias"):
        load_official_aligner(image_state, broken)
    with pytest.raises(CheckpointError, match="not an official CLCAE latent encoder"):
        load_official_aligner(image_state, {"weight": torch.zeros(1)})


def test_pyramid_key_layout_matches_official_encoder():
    manifest = json.loads(fixture_path("clcae_ffhq_encoder_manifest.json").read_text())["keys"]
    official = {k[len("encoder."):]: tuple(shape) for k, (shape, _) in manifest.items()
                if k.startswith(("encoder.input_layer.", "encoder.body.", "encoder.latlayer"))}
    ours = {k: tuple(v.shape) for k, v in FeaturePyramid(50, "ir_se").state_dict().items()}
    assert ours == official
    for name, spatial in (("styles.0", 16), ("styles_others.2", 32), ("styles_others.7", 64)):
        head = {k[len(f"encoder.{name}."):]: tuple(shape) for k, (shape, _) in manifest.items()
                if k.startswith(f"encoder.{name}.")}
        assert {k: tuple(v.shape) for k, v in Map2Style(512, 512, spatial).state_dict().items()} == head


@pytest.mark.parametrize("size", [64, 256])
def test_pyramid_levels_have_strides_16_8_4(size):
    pyramid = FeaturePyramid(num_layers=18, width=8).eval()
    with torch.no_grad():
        t1, t2, t3 = pyramid(torch.randn(1, 3, size, size))
    assert t1.shape == (1, 64, size // 16, size // 16)
    assert t2.shape == (1, 64, size // 8, size // 8)
    assert t3.shape == (1, 64, size // 4, size // 4)
    head = Map2Style(64, 32, size // 16)
    assert head(t1).shape == (1, 32)
    with pytest.raises(ValueError, match="Map2Style built for"):
        head(t2)


def test_save_load_round_trip_and_config_errors(tmp_path):
    cfg = AlignerConfig(image_size=32, num_layers=18, width=4, style_dim=16, embed_dim=8, heads=2, ff_dim=32)
    model = Aligner(cfg).eval()
    model.set_averages(torch.rand(1, 3, 32, 32), torch.randn(16))
    save_aligner(model, tmp_path / "aligner.pt", step=7)
    loaded = load_aligner(tmp_path / "aligner.pt")
    assert loaded.cfg == cfg and torch.load(tmp_path / "aligner.pt")["step"] == 7
    image, w = torch.randn(3, 3, 32, 32), torch.randn(3, 16)
    with torch.no_grad():
        for a, b in zip(model(image, w), loaded(image, w)):
            torch.testing.assert_close(a, b)
    torch.save({"state_dict": {"encoder.input_layer.0.weight": torch.zeros(1)}}, tmp_path / "official.pt")
    with pytest.raises(CheckpointError, match="load_official_aligner"):
        load_aligner(tmp_path / "official.pt")
    with pytest.raises(ValueError, match="image_size"):
        AlignerConfig(image_size=48)
    with pytest.raises(ValueError, match="divisible by heads"):
        AlignerConfig(style_dim=30, heads=4)


def test_single_token_attention_ignores_the_positional_embedding():
    encoder = LatentEncoder(style_dim=32, embed_dim=16, heads=2, ff_dim=64).eval()
    w = torch.randn(5, 32)
    with torch.no_grad():
        before = encoder(w)
        encoder.pos_embedding.add_(3.0)
        after = encoder(w)
    torch.testing.assert_close(before, after)
    torch.testing.assert_close(before.norm(dim=1), torch.ones(5))
    with pytest.raises(ValueError, match="LatentEncoder expects"):
        encoder(torch.randn(5, 2, 32))


def test_tiny_aligner_overfits_32_pairs():
    cfg = AlignerConfig(image_size=64, num_layers=18, width=8, style_dim=32, embed_dim=32, heads=2, ff_dim=64,
                        dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(32, cfg.style_dim, generator=gen)
    mixing = torch.randn(cfg.style_dim, 3 * 8 * 8, generator=gen) / cfg.style_dim ** 0.5
    images = F.interpolate(torch.tanh(w @ mixing).view(32, 3, 8, 8), size=64, mode="bilinear", align_corners=False)
    images = images + 0.05 * torch.randn(images.shape, generator=gen)  # image = G(w), a smooth 64 px map of w

    model = Aligner(cfg)
    model.set_averages(images.mean(0, keepdim=True), w.mean(0, keepdim=True))
    loss_fn = InfoNCELoss(lambda_=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread is fastest and immune to a busy second core
    try:
        for step in range(400):
            model.train()
            loss = loss_fn(*model(images, w))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 25 == 24:
                model.eval()
                with torch.no_grad():
                    scores = retrieval_topk(model.embed_image(images), model.embed_latent(w))
                if scores["i2w_top1"] == 1.0 and scores["w2i_top1"] == 1.0:
                    break
    finally:
        torch.set_num_threads(threads)
    assert scores["i2w_top1"] == 1.0 and scores["w2i_top1"] == 1.0, (step, scores, loss.item())
    assert loss.item() < 1.0
