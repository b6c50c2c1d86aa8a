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
