"""StyleGAN2-ADA snapshots read as data (clcae/nets/stylegan2_ada.py) against NVlabs' own outputs.

tests/data/stylegan2_ada/ holds two snapshot pickles written by NVlabs' stylegan2-ada-pytorch with
seeded weights and that code's images on fixed z / w (its README says how they were made)."""
import os
import pickle
import sys
import types

import pytest
import torch
from conftest import ROOT

from clcae.io import CheckpointError, UnsafeCheckpointError
from clcae.nets.stylegan2 import generator_from_state
from clcae.nets.stylegan2_ada import Persistent, ada_to_rosinality, read_snapshot

DATA = ROOT / "tests" / "data" / "stylegan2_ada"


def converted(name: str):
    snapshot = read_snapshot(DATA / f"{name}.pkl")
    ada = ada_to_rosinality(snapshot, name)
    return snapshot, ada, generator_from_state(ada.state, ada.latent_avg, name)


def expected(name: str) -> dict:
    return torch.load(DATA / f"{name}.expected.pt", weights_only=True)


def test_the_small_snapshot_renders_nvlabs_images():
    _, ada, G = converted("ada_small32")
    ref = expected("ada_small32")
    assert ada.info["mapping_layers"] == 8 and ada.conv_clamp is None
    assert torch.equal(G.latent_avg, ada.latent_avg)   # w_avg copied, not estimated
    with torch.no_grad():
        w = G.mapping(ref["z"])                                      # [4, D]
        torch.testing.assert_close(w, ref["w"][:, 0], atol=1e-5, rtol=0)
        n = G.n_latent
        torch.testing.assert_close(G.synthesis(w[:, None].expand(-1, n, -1)), ref["image_z"], atol=1e-4, rtol=0)
        torch.testing.assert_close(G.synthesis(ref["ws_mixed"]), ref["image_ws"], atol=1e-4, rtol=0)
        w_trunc = G.latent_avg + 0.7 * (w - G.latent_avg)
        torch.testing.assert_close(w_trunc, ref["w_trunc"][:, 0], atol=1e-5, rtol=0)


def test_g_ema_is_taken_not_g():
    snapshot, ada, _ = converted("ada_small32")
    g_weight = snapshot["G"].child("mapping").params()["fc0.weight"]
    ema_weight = snapshot["G_ema"].child("mapping").params()["fc0.weight"]
    assert not torch.equal(g_weight, ema_weight)
    torch.testing.assert_close(ada.state["style.1.weight"], ema_weight * (ada.info["lr_multiplier"] / 0.01))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_calls_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(UnsafeCheckpointError, match=r"system") as err:
        read_snapshot(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def _fake_persistence(monkeypatch):
    """A stand-in torch_utils.persistence, so a test can write snapshots of any structure."""
    module = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called by the reader
        raise AssertionError("the reader ran the snapshot's reconstruct function")

    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package = types.ModuleType("torch_utils")
    package.persistence = module
    monkeypatch.setitem(sys.modules, "torch_utils", package)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    return module


class _Obj:
    def __init__(self, fn, class_name, state):
        self.fn, self.meta = fn, {"type": "class", "version": 6, "module_src": "import os; os.system('x')",
                                  "class_name": class_name, "state": state}

    def __reduce__(self):
        return self.fn, (self.meta,)


def test_stylegan3_and_conditional_generators_are_refused(tmp_path, monkeypatch):
    fn = _fake_persistence(monkeypatch)._reconstruct_persistent_obj
    fn.__module__, fn.__qualname__ = "torch_utils.persistence", "_reconstruct_persistent_obj"
    sg3 = _Obj(fn, "Generator", {"z_dim": 8, "w_dim": 8, "img_resolution": 16, "img_channels": 3,
                                 "_init_kwargs": {"c_dim": 0}, "_modules": {
                                     "mapping": _Obj(fn, "MappingNetwork", {"_modules": {}}),
                                     "synthesis": _Obj(fn, "SynthesisNetwork", {"_modules": {
                                         "input": None, "L0_36_512": None}})}})
    path = tmp_path / "sg3.pkl"
    path.write_bytes(pickle.dumps({"G_ema": sg3}))
    snapshot = read_snapshot(path)
    assert isinstance(snapshot["G_ema"], Persistent) and "os.system" in snapshot["G_ema"].module_src
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        ada_to_rosinality(snapshot, str(path))
    cond = _Obj(fn, "Generator", {"z_dim": 8, "w_dim": 8, "img_resolution": 16, "img_channels": 3,
                                  "_init_kwargs": {"c_dim": 10}, "_modules": {
                                      "mapping": _Obj(fn, "MappingNetwork", {"_modules": {}}),
                                      "synthesis": _Obj(fn, "SynthesisNetwork", {"_modules": {"b4": None}})}})
    path.write_bytes(pickle.dumps({"G_ema": cond}))
    with pytest.raises(CheckpointError, match="conditional generator"):
        ada_to_rosinality(read_snapshot(path), str(path))


def test_tensorflow_pickles_and_other_files_are_named(tmp_path, monkeypatch):
    module = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __reduce__(self):
            return Network, ()

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    module.Network = Network
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        monkeypatch.setitem(sys.modules, name, module)
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    path.write_bytes(pickle.dumps((Network(), Network(), Network())))
    with pytest.raises(UnsafeCheckpointError, match="TensorFlow-era"):
        read_snapshot(path)
    torch.save({"g_ema": {}}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match=r"not a pickle|persistent id"):
        read_snapshot(tmp_path / "g.pt")
    (tmp_path / "t.pkl").write_bytes(pickle.dumps({"G_ema": 1})[:-5])
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_snapshot(tmp_path / "t.pkl")


def ada_256_views(image: torch.Tensor) -> dict[str, torch.Tensor]:
    """The parts of a 256 px render that ada_256.expected.pt stores (its config's ``image_storage``)."""
    return {"stride8": image[..., ::8, ::8], "crop_c": image[..., 120:136, 120:136],
            "crop_tl": image[..., :16, :16], "crop_br": image[..., -16:, -16:],
            "pool8": torch.nn.functional.avg_pool2d(image, 8)}


def test_the_256_snapshot_with_conv_clamp_renders_nvlabs_images_through_load_generator(tmp_path):
    """ada_256: 2-layer mapping, conv_clamp 256 biting in b256.conv1 (about half of channel 0's pixels).
    ``load_generator`` reads the .pkl itself; the converted .pt keeps the clamp."""
    from clcae.nets.stylegan2 import load_generator, save_generator

    ref = expected("ada_256")
    G = load_generator(DATA / "ada_256.pkl")
    assert G.conv_clamp == 256.0 and G.n_mlp == 2 and G.n_latent == 14
    save_generator(G, tmp_path / "g.pt")
    G_pt = load_generator(tmp_path / "g.pt")
    assert G_pt.conv_clamp == 256.0
    with torch.no_grad():
        w = G.mapping(ref["z"])
        torch.testing.assert_close(w, ref["w"][:, 0], atol=1e-5, rtol=0)
        renders = {"z": G.synthesis(w[:, None].expand(-1, G.n_latent, -1)),
                   "trunc": G.synthesis(G.mapped(ref["z"], 0.7)[:, None].expand(-1, G.n_latent, -1)),
                   "ws": G.synthesis(ref["ws_mixed"])}
        for name, image in renders.items():
            for view, value in ada_256_views(image).items():
                key = f"image_{name}_{view}"
                if key in ref:
                    torch.testing.assert_close(value, ref[key], atol=1e-4, rtol=0, msg=key)
        torch.testing.assert_close(G_pt.synthesis(ref["ws_mixed"]), renders["ws"], atol=0, rtol=0)
        for module in G.modules():          # the clamp is what makes the match: without it, off by ~0.14
            if hasattr(module, "conv_clamp"):
                module.conv_clamp = None
        unclamped = ada_256_views(G.synthesis(ref["ws_mixed"]))["stride8"]
    assert (unclamped - ref["image_ws_stride8"]).abs().max() > 0.05


def test_convert_generator_command_writes_a_rosinality_checkpoint_and_refuses_code(tmp_path, capsys):
    """``clcae convert-generator``: the .pt it writes renders NVlabs' images; with
    ``CLCAE_TRUST_CHECKPOINTS=1`` set, a snapshot whose reduce calls os.system is still refused
    and the command never runs (a .pkl is never unpickled beyond tensors and data)."""
    from clcae.cli import main
    from clcae.nets.stylegan2 import load_generator

    out = tmp_path / "G.pt"
    assert main(["convert-generator", str(DATA / "ada_small32.pkl"), str(out)]) == 0
    assert "read back identical" in capsys.readouterr().out
    ckpt = torch.load(out, weights_only=True)
    assert sorted(ckpt) == ["g_ema", "latent_avg"]        # no conv_clamp key: this snapshot has none
    G, ref = load_generator(out), expected("ada_small32")
    with torch.no_grad():
        torch.testing.assert_close(G.synthesis(ref["ws_mixed"]), ref["image_ws"], atol=1e-4, rtol=0)
    marker = tmp_path / "ran"
    evil = tmp_path / "network-snapshot-000001.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    os.environ["CLCAE_TRUST_CHECKPOINTS"] = "1"
    try:
        assert main(["convert-generator", str(evil), str(tmp_path / "evil.pt")]) == 1
        with pytest.raises(UnsafeCheckpointError):
            load_generator(evil, trust=True)
    finally:
        del os.environ["CLCAE_TRUST_CHECKPOINTS"]
    assert f"error: {evil}: refused" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "evil.pt").exists()
