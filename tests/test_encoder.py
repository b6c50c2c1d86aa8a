"""CLCAE inversion encoder: the released checkpoint's numbers, single-key attention, switches, checkpoints."""
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_path
from conftest import fixture_seeded_state as seeded_state
from tiny import tiny_generator
from torch import nn

from clcae.io import CheckpointError
from clcae.nets.aligner import Aligner, AlignerConfig, save_aligner
from clcae.nets.encoder import (
    AttentionBlock,
    CLCAEEncoder,
    CrossAttention,
    EncoderConfig,
    check_compatible,
    convert_official_encoder,
    layer_levels,
    load_encoder,
    load_official_encoder,
    official_key,
    save_encoder,
)
from clcae.nets.stylegan2 import Generator, save_generator

# a 1024 px, 512-d generator with 8 channels above 16 px: the published decoder.* key layout and
# F layer (512 x 16 x 16), small enough for a test (the fixtures ship no 1024 px generator)
DECODER_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 8, 64: 8, 128: 8, 256: 8, 512: 8, 1024: 8}


@pytest.fixture(scope="module")
def official():
    """(checkpoint dict with seeded encoder.* + latent_avg and a decoder.*, expected outputs, manifest keys)."""
    manifest = json.loads(fixture_path("clcae_ffhq_encoder_manifest.json").read_text())["keys"]
    expected = torch.load(fixture_path("clcae_ffhq_encoder_expected.pt"))
    state = seeded_state(manifest)
    torch.manual_seed(1)
    G = Generator(1024, 512, 8, channels=DECODER_CHANNELS)
    state.update({"decoder." + k: v for k, v in G.state_dict().items() if k != "latent_avg"})
    return {"state_dict": state, "opts": {"idx_k": 5, "output_size": 1024}, "iter": 1.0}, expected, manifest


@torch.no_grad()
def test_load_any_encoder_reads_the_released_checkpoint_centred_as_the_official_code(official, tmp_path):
    """evaluate.released / train_encoder.init: the released file, converted, centred on G(w_avg) at
    256 px and on G's latent_avg; our own encoder.pt through the same call; a generator that does
    not fit is refused naming the file."""
    from clcae.inversion import average_image, load_any_encoder

    ckpt, e, _ = official
    torch.save(ckpt, tmp_path / "FFHQ_Inversion.pt")
    _, G = load_official_encoder(ckpt)
    encoder = load_any_encoder(tmp_path / "FFHQ_Inversion.pt", G)
    torch.testing.assert_close(encoder.image_avg, average_image(G, 256), atol=0, rtol=0)
    torch.testing.assert_close(encoder.w_avg, G.latent_avg, atol=0, rtol=0)
    out = encoder(e["input_256"] + encoder.image_avg)   # the official forward subtracts the average image
    torch.testing.assert_close(out.wplus, e["wplus"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.f, e["f"], atol=1e-4, rtol=0)
    small = Generator(32, 16, 2, channels={4: 16, 8: 16, 16: 8, 32: 8})
    ours = CLCAEEncoder(EncoderConfig.from_generator(small, 32, num_layers=18, width=4, heads=2, feature_layer=3))
    save_encoder(ours, tmp_path / "ours.pt")
    loaded = load_any_encoder(tmp_path / "ours.pt", small)
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(CheckpointError, match=r"FFHQ_Inversion\.pt: encoder and generator do not fit"):
        load_any_encoder(tmp_path / "FFHQ_Inversion.pt", small)
    with pytest.raises(FileNotFoundError, match=r"absent\.pt: encoder file not found"):
        load_any_encoder(tmp_path / "absent.pt", small)


@torch.no_grad()
def test_matches_official_encoder(official):
    ckpt, e, manifest = official
    encoder, G = load_official_encoder(ckpt)
    assert not encoder.training and not G.training
    assert encoder.cfg == EncoderConfig(image_size=256, style_dim=512, n_latent=18, f_channels=512, f_size=16)
    check_compatible(encoder, G)
    torch.testing.assert_close(encoder.w_avg, ckpt["state_dict"]["latent_avg"], atol=0, rtol=0)
    torch.testing.assert_close(G.latent_avg, ckpt["state_dict"]["latent_avg"], atol=0, rtol=0)
    out = encoder.encode(e["input_256"])
    torch.testing.assert_close(out.w, e["w"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.wplus, e["wplus"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.f, e["f"], atol=1e-4, rtol=0)
    # every manifest key is consumed: renamed or split into our keys, or one of the unused norm1's
    converted = convert_official_encoder({k: ckpt["state_dict"][k] for k in manifest})
    assert set(converted) == set(encoder.state_dict()) - {"image_avg"}
    assert {official_key(k) for k in converted} == set(manifest) - {k for k in manifest if ".norm1." in k}
    dropped = [k for k in manifest if ".norm1." in k]
    assert len(dropped) == 2 * 19  # 18 W+ blocks + the F block, weight and bias
    n_split = sum(1 for k in manifest if "in_proj_" in k)
    assert len(converted) == len(manifest) - len(dropped) + 2 * n_split


def test_official_checkpoint_errors(official, tmp_path):
    ckpt, _, _ = official
    state = ckpt["state_dict"]
    missing = {k: v for k, v in state.items() if k != "encoder.cross_attention.7.norm3.bias"}
    with pytest.raises(CheckpointError, match=r"misses 1 keys \['encoder\.cross_attention\.7\.norm3\.bias'\]"):
        load_official_encoder({"state_dict": missing})
    with pytest.raises(CheckpointError, match=r"unexpected keys .*encoder\.extra\.weight"):
        load_official_encoder({"state_dict": {**state, "encoder.extra.weight": torch.zeros(1)}})
    no_decoder = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    with pytest.raises(CheckpointError, match=r"without \['decoder\.'\]"):
        load_official_encoder({"state_dict": no_decoder})

    psp = {"encoder.input_layer.0.weight": torch.zeros(64, 3, 3, 3), "encoder.styles.0.linear.weight": torch.zeros(1),
           "encoder.styles.17.linear.weight": torch.zeros(1), "encoder.styles.1.convs.0.weight": torch.zeros(1),
           "decoder.style.1.weight": torch.zeros(1)}
    torch.save({"state_dict": psp, "opts": {}, "latent_avg": torch.zeros(18, 512)}, tmp_path / "psp.pt")
    with pytest.raises(CheckpointError, match=r"psp\.pt: not an official CLCAE .* a pSp/e4e encoder"):
        load_official_encoder(tmp_path / "psp.pt")
    save_generator(Generator(8, 8, 1, channels={4: 4, 8: 4}), tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match=r"g\.pt: .* StyleGAN2 generator checkpoint"):
        load_official_encoder(tmp_path / "g.pt")
    torch.save({k: v for k, v in list(state.items())[:4]}, tmp_path / "full.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:5000])  # an interrupted download
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        load_official_encoder(tmp_path / "cut.pt")


# ----------------------------------------------------------------------------- attention


def test_single_key_attention_is_the_value_projection():
    torch.manual_seed(0)
    attn = CrossAttention(d_model=16, heads=4, kv_dim=8).eval()
    x, context = torch.randn(3, 5, 16), torch.randn(3, 1, 8)
    with torch.no_grad():
        expected = attn.out_proj(attn.v_proj(context)).expand(-1, 5, -1)  # softmax over one key == 1
        torch.testing.assert_close(attn(x, context), expected)
        torch.testing.assert_close(attn(torch.randn(3, 5, 16) * 10, context), expected)  # query-independent


def test_cross_attention_matches_torch_multihead_attention():
    """Several keys: the same maths as nn.MultiheadAttention (kdim != embed_dim: separate projections)."""
    torch.manual_seed(0)
    ours = CrossAttention(d_model=16, heads=4, kv_dim=8).eval()
    ref = nn.MultiheadAttention(16, 4, kdim=8, vdim=8, batch_first=True).eval()
    with torch.no_grad():
        ref.q_proj_weight.copy_(ours.q_proj.weight)
        ref.k_proj_weight.copy_(ours.k_proj.weight)
        ref.v_proj_weight.copy_(ours.v_proj.weight)
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]) + 0.1)
        for lin, b in zip((ours.q_proj, ours.k_proj, ours.v_proj), ref.in_proj_bias.chunk(3)):
            lin.bias.copy_(b)
        ref.out_proj.load_state_dict(ours.out_proj.state_dict())
        x, context = torch.randn(2, 5, 16), torch.randn(2, 7, 8)
        torch.testing.assert_close(ours(x, context), ref(x, context, context, need_weights=False)[0])


def test_attention_block_by_hand():
    """Post-norm block with one key: LN(q + out(v(kv))), then LN(x + FFN(x)); q/k projections are inert."""
    torch.manual_seed(0)
    block = AttentionBlock(d_model=8, heads=2, kv_dim=8, ff_dim=16).eval()
    for p in block.parameters():  # non-trivial norms and biases
        nn.init.normal_(p, 0.5, 0.3)
    a = block.attn
    q, kv = torch.randn(4, 1, 8), torch.randn(4, 1, 8)
    with torch.no_grad():
        v = kv @ a.v_proj.weight.T + a.v_proj.bias
        x = q + v @ a.out_proj.weight.T + a.out_proj.bias
        x = F.layer_norm(x, (8,), block.norm_attn.weight, block.norm_attn.bias)
        h = torch.relu(x @ block.linear1.weight.T + block.linear1.bias) @ block.linear2.weight.T + block.linear2.bias
        expected = F.layer_norm(x + h, (8,), block.norm_ff.weight, block.norm_ff.bias)
        torch.testing.assert_close(block(q, kv), expected)
        a.q_proj.weight.mul_(-3.0)
        a.k_proj.bias.add_(2.0)
        torch.testing.assert_close(block(q, kv), expected)


# ----------------------------------------------------------------------------- switches

SWITCHES = {"clcae": {}, "no_w_attention": {"w_attention": False}, "no_f_attention": {"f_attention": False},
            "psp": {"w_attention": False, "use_f": False}}


def tiny_encoder(G, image_size=64, **kw) -> CLCAEEncoder:
    torch.manual_seed(0)
    cfg = EncoderConfig.from_generator(G, image_size, num_layers=18, width=4, **kw)
    encoder = CLCAEEncoder(cfg)
    encoder.set_averages(0.1 * torch.randn(1, 3, image_size, image_size), torch.randn(G.style_dim))
    return encoder


@pytest.mark.parametrize("name", list(SWITCHES))
def test_switch_shapes_values_and_gradients(name):
    G = tiny_generator()  # 8 W+ layers of 32, F layer 5: 16 x 16 x 16
    encoder = tiny_encoder(G, **SWITCHES[name])
    cfg = encoder.cfg
    names = {n.split(".")[0] for n, _ in encoder.named_parameters()}
    assert names == {"pyramid", "w_head", "offset_heads"} | ({"w_blocks"} if cfg.w_attention else set()) \
        | ({"f_head"} if cfg.use_f else set()) | ({"f_block"} if cfg.use_f and cfg.f_attention else set())
    x = torch.rand(2, 3, 64, 64) * 2 - 1

    # every parameter gets a gradient from w, w+ and f (DDP without find_unused_parameters)
    out = encoder.train()(x)
    loss = out.w.sum() + out.wplus.sum() + (out.f.sum() if out.f is not None else 0)
    loss.backward()
    assert [n for n, p in encoder.named_parameters() if p.grad is None] == []

    encoder.eval()
    with torch.no_grad():
        out = encoder(x)
        torch.testing.assert_close(encoder.encode(x - encoder.image_avg).wplus, out.wplus)
        t1, t2, t3 = encoder.pyramid(x - encoder.image_avg)
        w_off = encoder.w_head(t1)
        torch.testing.assert_close(out.w, w_off + encoder.w_avg)
        assert out.w.shape == (2, 32) and out.wplus.shape == (2, 8, 32)
        levels = (t1, t2, t3)
        dw = [w_off] + [head(levels[lvl]) for head, lvl in zip(encoder.offset_heads, layer_levels(8)[1:])]
        if cfg.w_attention:  # w+_i - w is the block of (w_off, dw_i); with one key, q/k weights are inert
            block5 = encoder.w_blocks[5](w_off[:, None], dw[5][:, None])[:, 0]  # [B, D]
            torch.testing.assert_close(out.wplus[:, 5] - out.w, block5, atol=1e-5, rtol=0)
            assert not torch.allclose(out.wplus[:, 0], out.w)
        else:  # pSp: w_avg + per-layer offsets; the first layer is w itself
            torch.testing.assert_close(out.wplus, encoder.w_avg + torch.stack(dw, 1))
            torch.testing.assert_close(out.wplus[:, 0], out.w)
        if not cfg.use_f:
            assert out.f is None
            return
        assert out.f.shape == (2, 16, 16, 16)
        if not cfg.f_attention:
            torch.testing.assert_close(out.f, encoder.f_head(t3))
        else:  # the F block's single key: the tokens' query only enters through the residual
            for p in (encoder.f_block.attn.q_proj.weight, encoder.f_block.attn.k_proj.weight):
                p.normal_()
            torch.testing.assert_close(encoder(x).f, out.f)
            assert not torch.allclose(encoder.f_head(t3), out.f)
        image, g5 = G.synthesis(out.wplus, feature=out.f, feature_layer=5, return_features=True)
        assert image.shape == (2, 3, 32, 32) and g5.shape == out.f.shape


def test_feature_head_strides_from_t3_to_the_f_layer():
    G = tiny_generator()
    assert tiny_encoder(G, 64).cfg.f_downsamples == 0  # T3 16 -> F 16: one stride-1 conv
    encoder = tiny_encoder(G, 128).eval()  # T3 32 -> F 16: one stride-2 conv
    convs = [m for m in encoder.f_head.convs if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] and encoder.cfg.f_downsamples == 1
    with torch.no_grad():
        assert encoder(torch.zeros(1, 3, 128, 128)).f.shape == (1, 16, 16, 16)
    assert layer_levels(18) == [0] * 3 + [1] * 4 + [2] * 11  # pSp's coarse / medium / fine


def test_config_errors_and_compatibility():
    G = tiny_generator()
    encoder = tiny_encoder(G)
    check_compatible(encoder, G)
    with pytest.raises(ValueError, match="style_dim: encoder 32, generator 64"):
        check_compatible(encoder, tiny_generator(style_dim=64))
    with pytest.raises(ValueError, match=r"n_latent\): encoder 8, generator 10"):
        check_compatible(encoder, tiny_generator(size=64))
    bigger_f = Generator(32, 32, 2, channels={4: 32, 8: 32, 16: 24, 32: 8})
    with pytest.raises(ValueError, match=r"F layer 5 .*: encoder \[16, 16, 16\], generator \[24, 16, 16\]"):
        check_compatible(encoder, bigger_f)
    check_compatible(tiny_encoder(G, use_f=False), bigger_f)  # F shape irrelevant without F

    base = dict(image_size=64, style_dim=32, n_latent=8, f_channels=16, f_size=16)
    with pytest.raises(ValueError, match="image_size"):
        EncoderConfig(**{**base, "image_size": 48})
    with pytest.raises(ValueError, match="F layer's size 32 must divide T3's size 16"):
        EncoderConfig(**{**base, "f_size": 32})
    with pytest.raises(ValueError, match=r"style_dim \(30\) must be divisible by heads"):
        EncoderConfig(**{**base, "style_dim": 30})
    with pytest.raises(ValueError, match="use_f=False needs n_latent > 7"):
        EncoderConfig(**{**base, "n_latent": 6, "use_f": False})
    with pytest.raises(ValueError, match="expects images"):
        encoder(torch.zeros(1, 3, 32, 32))


def test_save_load_round_trip_and_wrong_files(tmp_path):
    G = tiny_generator()
    encoder = tiny_encoder(G, w_attention=False).eval()
    save_encoder(encoder, tmp_path / "enc.pt", step=7, variant="psp")
    loaded = load_encoder(tmp_path / "enc.pt")
    assert loaded.cfg == encoder.cfg and not loaded.training
    assert torch.load(tmp_path / "enc.pt")["step"] == 7
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(encoder(x), loaded(x)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)

    save_generator(G, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match=r"g\.pt: not a CLCAE encoder .* StyleGAN2 generator checkpoint"):
        load_encoder(tmp_path / "g.pt")
    cfg = AlignerConfig(image_size=64, num_layers=18, width=4, style_dim=32, embed_dim=8, heads=2, ff_dim=16)
    save_aligner(Aligner(cfg), tmp_path / "aligner.pt")
    with pytest.raises(CheckpointError, match=r"aligner\.pt: .* an aligner checkpoint"):
        load_encoder(tmp_path / "aligner.pt")
    torch.save({"state_dict": {"encoder.styles_others.0.linear.weight": torch.zeros(1)}, "opts": {}},
               tmp_path / "official.pt")
    with pytest.raises(CheckpointError, match="use load_official_encoder"):
        load_encoder(tmp_path / "official.pt")
    ckpt = torch.load(tmp_path / "enc.pt")
    ckpt["config"]["heads"] = 3
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt: bad encoder config: .*divisible by heads"):
        load_encoder(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="reserved"):
        save_encoder(encoder, tmp_path / "x.pt", config={})


def test_init_from_aligner_and_official_init():
    G = tiny_generator()
    encoder = tiny_encoder(G)  # 8 * width == style_dim == 32, as the official 512 / 512
    aligner = Aligner(AlignerConfig(image_size=64, num_layers=18, width=4, style_dim=32, embed_dim=8, heads=2,
                                    ff_dim=16))
    encoder.init_from_aligner(aligner)
    torch.testing.assert_close(encoder.pyramid.body[3].res_layer[1].weight,
                               aligner.image_encoder.encoder.body[3].res_layer[1].weight)
    torch.testing.assert_close(encoder.w_head.linear.weight, aligner.image_encoder.map2style.linear.weight)
    wide = Aligner(AlignerConfig(image_size=64, num_layers=18, width=8, style_dim=32, embed_dim=8, heads=2, ff_dim=16))
    with pytest.raises(ValueError, match="aligner's pyramid does not fit"):
        encoder.init_from_aligner(wide)

    encoder.init_weights()
    convs = torch.cat([m.weight.flatten() for m in encoder.modules() if isinstance(m, nn.Conv2d)])
    assert abs(convs.std().item() - 0.02) < 0.002
    assert (encoder.w_blocks[0].norm_ff.weight - 1).abs().max() < 0.1
    assert abs(encoder.w_blocks[0].linear1.weight.std().item() - 0.02) < 0.003
