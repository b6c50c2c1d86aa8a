"""StyleGAN2: rosinality equivalence, F-space injection, shapes, checkpoint handling."""
import pytest
import torch
from conftest import fixture_path

from clcae.nets.stylegan2 import (
    CheckpointError,
    Generator,
    infer_generator_config,
    load_generator,
    save_generator,
    upfirdn2d_reference,
)


@pytest.fixture(scope="module")
def tiny():
    G = load_generator(fixture_path("stylegan2_rosinality_tiny64.pt"))
    expected = torch.load(fixture_path("stylegan2_rosinality_tiny64.expected.pt"))
    return G, expected


def test_fixture_config_inferred(tiny):
    G, expected = tiny
    cfg = expected["config"]
    assert (G.size, G.style_dim, G.n_mlp, G.n_latent) == (cfg["size"], cfg["style_dim"], cfg["n_mlp"], 10)
    assert G.channels == cfg["channels"]
    assert not any(p.requires_grad for p in G.parameters()) and not G.training


@torch.no_grad()
def test_matches_rosinality_reference(tiny):
    G, e = tiny
    torch.testing.assert_close(G.mapping(e["z"]), e["w"], atol=1e-4, rtol=0)
    torch.testing.assert_close(G(e["z"], noise_mode="const"), e["image"], atol=1e-4, rtol=0)
    torch.testing.assert_close(G(e["z"], truncation=e["truncation"]), e["image_truncated"], atol=1e-4, rtol=0)
    torch.testing.assert_close(G.synthesis(e["wplus"], noise_mode="const"), e["image_wplus"], atol=1e-4, rtol=0)


@torch.no_grad()
def test_latent_avg_loaded_from_checkpoint(tiny):
    G, _ = tiny
    ckpt = torch.load(fixture_path("stylegan2_rosinality_tiny64.pt"))
    torch.testing.assert_close(G.latent_avg, ckpt["latent_avg"].reshape(-1))


@pytest.mark.parametrize("up", [1, 2])
def test_fast_fir_matches_reference_upfirdn(up):
    G = Generator(32, 16, 2, channels={4: 8, 8: 8, 16: 8, 32: 8})
    x = torch.randn(2, 5, 9, 9)
    module = G.to_rgbs[0].upsample if up == 2 else G.convs[0].conv.blur
    ref = upfirdn2d_reference(x, module.kernel, up=up, pad=module.pad)
    torch.testing.assert_close(module(x), ref, atol=1e-5, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("layer", [1, 3, 5, 6])
@pytest.mark.parametrize("insert", ["next_conv", "replace"])
def test_injecting_own_feature_reproduces_image(layer, insert):
    G = Generator(64, 32, 2, channels={4: 32, 8: 32, 16: 24, 32: 16, 64: 8}).eval()
    wplus = G.mapping(torch.randn(3, 32))[:, None].repeat(1, G.n_latent, 1) + 0.1 * torch.randn(3, G.n_latent, 32)
    image, feat = G.synthesis(wplus, feature_layer=layer, return_features=True)
    assert tuple(feat.shape[1:]) == G.feature_shape(layer)
    torch.testing.assert_close(G.synthesis(wplus, feature=feat, feature_layer=layer, feature_insert=insert), image,
                               atol=1e-5, rtol=0)
    # a different feature changes the image, and blending halfway lands in between
    other = feat + torch.randn_like(feat)
    changed = G.synthesis(wplus, feature=other, feature_layer=layer, feature_insert=insert)
    assert (changed - image).abs().mean() > 1e-3
    half = G.synthesis(wplus, feature=other, feature_layer=layer, feature_blend=0.5, feature_insert=insert)
    assert 0 < (half - image).abs().mean() < (changed - image).abs().mean()


@torch.no_grad()
@pytest.mark.parametrize("layer", [1, 2, 5, 9])
def test_layer_features_stop_at_the_layer(layer):
    """G_k(w+) alone equals the full pass's capture, and costs only the layers up to k: the
    layers above it never run (their modules are made to fail)."""
    G = Generator(64, 32, 2, channels={4: 32, 8: 32, 16: 24, 32: 16, 64: 8}).eval()
    wplus = G.mapping(torch.randn(3, 32))[:, None].repeat(1, G.n_latent, 1)
    _, feat = G.synthesis(wplus, feature_layer=layer, return_features=True)
    above = [c for i, c in enumerate(G.convs, start=2) if i > layer]
    for conv in above:
        conv.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(AssertionError("ran a layer above k")))
    assert torch.equal(G.layer_features(wplus, layer), feat)
    with pytest.raises(ValueError, match="features_only"):
        G.synthesis(wplus, feature=feat, feature_layer=layer, features_only=True)


def official_insert(G, wplus, layer, feature):
    """The official CLCAE generator's loop (``models/stylegan2/model.py``: ``insert_feature(x, i)``
    before each conv, toRGB on the conv's own output), written out over G's modules."""
    def insert(x, i):
        return feature if i == layer else x
    noise = [G._noise(k, "const", wplus) for k in range(G.num_layers)]
    out = G.conv1(G.input(wplus.shape[0]), wplus[:, 0], noise[0])
    skip = G.to_rgb1(out, wplus[:, 1])
    i = 1
    for up, conv, to_rgb in zip(G.convs[::2], G.convs[1::2], G.to_rgbs):
        out = up(insert(out, i), wplus[:, i], noise[i])
        out = conv(insert(out, i + 1), wplus[:, i + 1], noise[i + 1])
        skip = to_rgb(out, wplus[:, i + 2], skip)
        i += 2
    return skip


@torch.no_grad()
@pytest.mark.parametrize("layer", [1, 2, 4, 5])
def test_feature_enters_where_the_official_generator_puts_it(layer):
    G = Generator(64, 32, 2, channels={4: 32, 8: 32, 16: 24, 32: 16, 64: 8}).eval()
    wplus = G.mapping(torch.randn(2, 32))[:, None].repeat(1, G.n_latent, 1)
    feature = torch.randn(2, *G.feature_shape(layer))
    official = official_insert(G, wplus, layer, feature)
    ours = G.synthesis(wplus, feature=feature, feature_layer=layer)
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=0)
    replaced = G.synthesis(wplus, feature=feature, feature_layer=layer, feature_insert="replace")
    if layer % 2:   # layers 1, 3, 5, ... feed a toRGB skip: only the ablation lets f into it
        assert (replaced - official).abs().mean() > 1e-3
    else:
        torch.testing.assert_close(replaced, official, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no conv follows it"):
        G.synthesis(wplus, feature=torch.randn(2, *G.feature_shape(G.num_layers)), feature_layer=G.num_layers)


def test_layer5_is_second_conv_at_16():
    G = Generator(256, 16, 2, channels={4: 16, 8: 16, 16: 12, 32: 8, 64: 8, 128: 4, 256: 4})
    assert G.feature_shape(5) == (12, 16, 16)
    assert G.feature_shape(1) == (16, 4, 4)
    with pytest.raises(ValueError, match="feature_layer"):
        G.feature_shape(G.num_layers + 1)


@torch.no_grad()
@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_for_sizes(size):
    ch = {2 ** i: max(4, 64 >> max(0, i - 4)) for i in range(2, 9)}
    G = Generator(size, 24, 3, channels=ch).eval()
    assert G.n_latent == 2 * int(torch.log2(torch.tensor(size))) - 2
    img = G(torch.randn(2, 24), noise_mode="random")
    assert img.shape == (2, 3, size, size) and torch.isfinite(img).all()
    a, b = G(torch.zeros(1, 24), noise_mode="none"), G(torch.zeros(1, 24), noise_mode="none")
    torch.testing.assert_close(a, b)


@torch.no_grad()
@pytest.mark.parametrize("lr_mlp", [0.01, 1.0])
def test_save_load_roundtrip_infers_config(tmp_path, lr_mlp):
    G = Generator(64, 48, 3, channels={4: 40, 8: 40, 16: 32, 32: 24, 64: 16}, lr_mlp=lr_mlp).eval()
    G.latent_avg.copy_(torch.randn(48))
    path = tmp_path / "g.pt"
    save_generator(G, path)
    state = torch.load(path)["g_ema"]
    cfg = infer_generator_config(state)
    assert cfg["size"] == 64 and cfg["style_dim"] == 48 and cfg["n_mlp"] == 3
    assert cfg["channels"] == {4: 40, 8: 40, 16: 32, 32: 24, 64: 16}
    G2 = load_generator(path)
    z = torch.randn(2, 48)
    torch.testing.assert_close(G2(z), G(z), atol=1e-5, rtol=0)
    torch.testing.assert_close(G2.latent_avg, G.latent_avg)


@torch.no_grad()
def test_bare_and_training_checkpoints(tmp_path):
    G = Generator(32, 16, 2, channels={4: 16, 8: 16, 16: 8, 32: 8}).eval()
    state = {k: v for k, v in G.state_dict().items() if k != "latent_avg"}
    torch.save(state, tmp_path / "bare.pt")
    torch.save({"g": state, "g_ema": state, "d": {}, "g_optim": {}}, tmp_path / "train.pt")
    for name in ("bare.pt", "train.pt"):
        G2 = load_generator(tmp_path / name)
        # latent_avg estimated from 10K mapped samples
        expected = G.mapping(torch.randn(10_000, 16, generator=torch.Generator().manual_seed(0))).mean(0)
        torch.testing.assert_close(G2.latent_avg, expected, atol=1e-5, rtol=0)


def test_bad_checkpoints_name_the_file(tmp_path):
    G = Generator(32, 16, 2, channels={4: 16, 8: 16, 16: 8, 32: 8})
    good = tmp_path / "good.pt"
    save_generator(G, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_generator(truncated)
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "encoder.pt")
    with pytest.raises(CheckpointError, match=r"encoder.pt: not a StyleGAN2 generator"):
        load_generator(tmp_path / "encoder.pt")
    state = torch.load(good)["g_ema"]
    del state["conv1.conv.weight"]
    torch.save({"g_ema": state}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial.pt.*conv1.conv.weight"):
        load_generator(tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing.pt: no such"):
        load_generator(tmp_path / "missing.pt")


def test_synthesis_rejects_wrong_shapes():
    G = Generator(32, 16, 2, channels={4: 16, 8: 16, 16: 8, 32: 8})
    with pytest.raises(ValueError, match=r"wplus must be \[B, 8, 16\]"):
        G.synthesis(torch.zeros(1, 7, 16))
    with pytest.raises(ValueError, match="feature for layer 5"):
        G.synthesis(torch.zeros(1, 8, 16), feature=torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(torch.zeros(1, 8, 16), noise_mode="fixed")


def test_grad_flows_to_wplus_and_feature():
    G = Generator(32, 16, 2, channels={4: 16, 8: 16, 16: 8, 32: 8}).eval().requires_grad_(False)
    wplus = torch.randn(2, G.n_latent, 16, requires_grad=True)
    feat = torch.randn(2, *G.feature_shape(5), requires_grad=True)
    G.synthesis(wplus, feature=feat).square().mean().backward()
    assert wplus.grad.abs().sum() > 0 and feat.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- discriminator

def test_discriminator_rosinality_layout_and_logits():
    from clcae.nets.stylegan2 import Discriminator

    D = Discriminator(16, channels={4: 8, 8: 8, 16: 4})
    keys = set(D.state_dict())
    for key in ("convs.0.0.weight", "convs.0.1.bias",  # 1x1 fromRGB conv + activation bias
                "convs.1.conv1.0.weight", "convs.1.conv2.0.kernel", "convs.1.conv2.1.weight",
                "convs.1.conv2.2.bias", "convs.1.skip.0.kernel", "convs.1.skip.1.weight",
                "convs.2.conv1.0.weight", "final_conv.0.weight", "final_conv.1.bias",
                "final_linear.0.weight", "final_linear.1.bias"):
        assert key in keys, key
    assert "convs.1.skip.1.bias" not in keys  # the skip conv is linear and bias-free
    assert D(torch.randn(6, 3, 16, 16)).shape == (6, 1)
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(48)


def test_minibatch_stddev_matches_hand_computation():
    from clcae.nets.stylegan2 import MinibatchStdDev

    x = torch.randn(8, 3, 2, 2)
    out = MinibatchStdDev(group_size=4)(x)
    assert out.shape == (8, 4, 2, 2)
    torch.testing.assert_close(out[:, :3], x)
    groups = x.reshape(4, 2, 3, 2, 2)  # sample i is in group i % 2
    for i in range(8):
        members = groups[:, i % 2]  # [4, 3, 2, 2]
        expected = (members.var(0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 3], expected.expand(2, 2))
    same = MinibatchStdDev()(torch.ones(4, 2, 3, 3))[:, 2]  # a collapsed batch has ~zero spread
    assert same.abs().max() < 1e-3
    assert MinibatchStdDev(4)(torch.randn(6, 2, 3, 3)).shape == (6, 3, 3, 3)  # group 3 divides 6


@pytest.mark.parametrize("insert", ["next_conv", "replace"])
def test_channels_last_renders_the_same_images_contiguous(insert):
    """shared.channels_last: NHWC activations, the same renders up to float rounding (every output
    path: image, layer features, an inserted f, the preview), returned NCHW-contiguous."""
    torch.manual_seed(0)
    G = Generator(64, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16, 32: 16, 64: 8}).eval()
    wplus = G.mapped(torch.randn(3, 32))[:, None].expand(-1, G.n_latent, -1).contiguous()
    f = torch.randn(3, *G.feature_shape(5))

    def outputs():
        with torch.no_grad():
            image, own = G.synthesis(wplus, return_features=True)
            return [image, own, G.synthesis(wplus, feature=f, feature_insert=insert), G.layer_features(wplus, 5),
                    G.synthesis(wplus, max_size=16)]

    layouts = []
    G.convs[-1].register_forward_hook(lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last)))
    nchw = outputs()
    assert G.use_channels_last() is G and G.memory_format == torch.channels_last
    nhwc = outputs()
    assert layouts == [False] * 2 + [True] * 2   # the last conv (64 px) ran NCHW, then NHWC (f inserted too)
    for a, b in zip(nchw, nhwc):
        assert b.is_contiguous() and b.shape == a.shape
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    G.use_channels_last(False)
    assert all(torch.equal(a, b) for a, b in zip(nchw, outputs()))   # back to NCHW: the very same bits
