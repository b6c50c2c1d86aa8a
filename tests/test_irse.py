"""ArcFace IR-SE: equivalence with pSp's model_ir_se50.pth layout, loading, small depths."""
import json

import pytest
import torch
from conftest import fixture_path
from conftest import fixture_seeded_state as seeded_state

from clcae.nets.irse import (
    UNITS,
    Backbone,
    IDEncoder,
    arcface_embed,
    get_blocks,
    infer_backbone_config,
    load_arcface,
    stage_ends,
)
from clcae.nets.stylegan2 import CheckpointError


@pytest.fixture(scope="module")
def irse50_state():
    manifest = json.loads(fixture_path("irse50_manifest.json").read_text())
    return seeded_state(manifest["keys"])


def test_unit_tables():
    for num_layers, units in UNITS.items():
        blocks = get_blocks(num_layers)
        assert [len(stage) for stage in blocks] == list(units)
        assert [stage[0].stride for stage in blocks] == [2, 2, 2, 2]
        assert [stage[-1].depth for stage in blocks] == [64, 128, 256, 512]
    assert stage_ends(50) == (2, 6, 20, 23)  # pSp's taps c1 = body[6], c2 = body[20], c3 = body[23]
    with pytest.raises(ValueError, match="num_layers"):
        get_blocks(42)


def test_key_layout_matches_model_ir_se50(irse50_state):
    own = Backbone(112, 50, "ir_se").state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in irse50_state.items()}


@torch.no_grad()
def test_matches_reference_features(irse50_state):
    expected = torch.load(fixture_path("irse50_expected.pt"))
    net = Backbone(112, 50, "ir_se")
    net.load_state_dict(irse50_state)
    features = arcface_embed(net.eval(), expected["input_256"])
    torch.testing.assert_close(features, expected["features"], atol=1e-5, rtol=0)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(3))


def test_load_arcface_infers_architecture_and_names_bad_keys(irse50_state, tmp_path):
    path = tmp_path / "model_ir_se50.pth"
    torch.save(irse50_state, path)
    net = load_arcface(path)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert infer_backbone_config(irse50_state) == dict(num_layers=50, mode="ir_se", width=64, input_size=112,
                                                       embed_dim=512, affine=True)

    broken = dict(irse50_state)
    del broken["body.5.res_layer.5.fc2.weight"]
    broken["body.5.res_layer.9.weight"] = torch.zeros(1)
    bad = tmp_path / "broken.pth"
    torch.save(broken, bad)
    with pytest.raises(CheckpointError) as err:
        load_arcface(bad)
    message = str(err.value)
    assert str(bad) in message and "body.5.res_layer.5.fc2.weight" in message and "body.5.res_layer.9.weight" in message

    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_arcface(tmp_path / "absent.pth")


@pytest.mark.parametrize("num_layers,mode", [(18, "ir_se"), (34, "ir")])
def test_small_depths_round_trip(num_layers, mode, tmp_path):
    net = Backbone(input_size=64, num_layers=num_layers, mode=mode, width=8, embed_dim=32).eval()
    path = tmp_path / "net.pth"
    torch.save(net.state_dict(), path)
    loaded = load_arcface(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    assert loaded(x).shape == (2, 32)
    assert (loaded.input_size, len(loaded.body)) == (64, sum(UNITS[num_layers]))


@pytest.mark.parametrize("num_layers", [100, 152])
def test_deep_tables_are_inferred(num_layers):
    state = Backbone(input_size=224, num_layers=num_layers, mode="ir", width=4, affine=False).state_dict()
    assert infer_backbone_config(state) == dict(num_layers=num_layers, mode="ir", width=4, input_size=224,
                                                embed_dim=512, affine=False)


def test_id_encoder_is_frozen_but_differentiable_in_its_input():
    encoder = IDEncoder(Backbone(input_size=112, num_layers=18, width=8, embed_dim=16))
    encoder.train()
    assert not encoder.net.training
    image = torch.randn(2, 3, 256, 256, requires_grad=True)
    embedding = encoder(image)
    embedding.sum().backward()
    assert embedding.shape == (2, 16) and image.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())
    # outside the face box the image does not matter
    assert image.grad[:, :, :35].abs().max() == 0 and image.grad[:, :, :, 220:].abs().max() == 0


DEFAULT_NETS_NHWC_STEP = """
import torch
from clcae.config import load_params
from clcae.nets.aligner import Aligner
from clcae.nets.stylegan2 import load_generator
from clcae.pipeline.train_aligner import aligner_config
from clcae.pipeline.train_encoder import build_encoder

params = load_params("params.yaml")
assert params.shared.channels_last
G = load_generator(params.shared.generator)
nets = [Aligner(aligner_config(params.train_aligner, G.size, G.style_dim)).image_encoder]
nets += [build_encoder(params.train_encoder.variant(v), G, G.size) for v in params.train_encoder.variants]
for amp in (False, True):
    for net in nets:
        net.train().to(memory_format=torch.channels_last)
        x = torch.randn(2, 3, G.size, G.size).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = net(x)
        parts = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, tuple) else list(vars(out).values())
        sum(o.float().sum() for o in parts if isinstance(o, torch.Tensor)).backward()
print("ok", len(nets))
"""


def test_default_nets_train_in_channels_last_on_the_cpu():
    """torch 2.14.1 crashes the process in the CPU backward of a strided 1x1 conv in channels_last with
    8 input channels at 48 px and up (docs/pipeline.md, "Memory layout"); IR-SE's shortcut is one. The
    default params.yaml's aligner and encoders (shared.channels_last: true) must not meet it: one
    forward and backward of each, float32 and bf16, in a subprocess so that a crash fails this test."""
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run([sys.executable, "-c", DEFAULT_NETS_NHWC_STEP], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), (proc.returncode, proc.stderr[-2000:])
