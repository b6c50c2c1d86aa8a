"""Loading a checkpoint never runs code from it, unless the user opts in for a file they trust."""
import argparse
import os
import pathlib
import shutil
import warnings

import numpy as np
import pytest
import tiny
import torch

from clcae.io import (
    TRUST_ENV,
    CheckpointError,
    TrustedCheckpointWarning,
    UnsafeCheckpointError,
    read_checkpoint,
    read_state_dict,
    read_tensors,
    save_torch,
    trust_from_env,
)
from clcae.nets.aligner import Aligner, AlignerConfig, load_aligner, load_official_aligner, save_aligner
from clcae.nets.encoder import CLCAEEncoder, EncoderConfig, load_encoder, load_official_encoder, save_encoder
from clcae.nets.irse import Backbone, load_arcface
from clcae.nets.stylegan2 import load_generator, save_generator
from clcae.pipeline import stage_main
from clcae.shards import load_pairs
from clcae.worlds.procfaces.world_cnn import WorldCNN, load_world_cnn, save_world_cnn


class Payload:
    """Unpickling it creates ``marker``: the stand-in for a malicious checkpoint's code."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


class TrainingLog:
    """A harmless custom class: a full-pickle checkpoint that weights-only loading must refuse."""

    def __init__(self, steps):
        self.steps = steps


@pytest.fixture(autouse=True)
def _no_trust_in_env(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


def tiny_generator():
    return tiny.tiny_generator(style_dim=16, seed=None).train()


def tiny_aligner():
    cfg = AlignerConfig(image_size=32, num_layers=18, width=4, style_dim=16, embed_dim=8, heads=2, ff_dim=32)
    return Aligner(cfg).eval()


def official_states(model: Aligner) -> tuple[dict, dict]:
    """The official best_model_image / best_model_latent state dicts of ``model`` (no buffers)."""
    image, latent = {}, {}
    for key, value in model.state_dict().items():
        if key in ("image_avg", "w_avg"):
            continue
        if key.startswith("image_encoder.map2style."):
            image["encoder.styles.0." + key[len("image_encoder.map2style."):]] = value
        elif key.startswith("image_encoder."):
            image[key[len("image_encoder."):]] = value
        elif key.startswith("latent_encoder."):
            latent[key[len("latent_encoder."):]] = value
        else:  # logit_scale
            image[key] = value
    return image, latent


def write_checkpoints(folder: pathlib.Path) -> dict:
    """A valid checkpoint per loader, as {kind: blob}; also writes aligner_ok.pt and latent_ok.pt."""
    G, net, aligner = tiny_generator(), Backbone(input_size=64, num_layers=18, mode="ir_se", width=8,
                                                  embed_dim=32), tiny_aligner()
    image, latent = official_states(aligner)
    save_aligner(aligner, folder / "aligner_ok.pt")
    encoder = CLCAEEncoder(EncoderConfig(image_size=32, style_dim=16, n_latent=8, f_channels=8, f_size=8,
                                         feature_layer=3, num_layers=18, width=2, heads=2))
    save_encoder(encoder, folder / "encoder_ok.pt")
    torch.save({"state_dict": latent, "opts": argparse.Namespace(lr=1e-4), "iter": 5}, folder / "latent_ok.pt")
    return {"generator": {"g_ema": G.state_dict(), "latent_avg": torch.zeros(16)},
            "arcface": net.state_dict(),
            "aligner": torch.load(folder / "aligner_ok.pt"),
            "encoder": torch.load(folder / "encoder_ok.pt"),
            "official_image": {"state_dict": image, "opts": argparse.Namespace(lr=1e-4), "iter": 5},
            "world_cnn": {"config": {"widths": [8, 8, 16, 16, 32], "emb_dim": 16},
                          "state_dict": WorldCNN(widths=(8, 8, 16, 16, 32), emb_dim=16).state_dict()}}


LOADERS = {
    "read_checkpoint": ("generator", read_checkpoint),
    "read_state_dict": ("arcface", read_state_dict),
    "load_generator": ("generator", load_generator),
    "load_arcface": ("arcface", load_arcface),
    "load_aligner": ("aligner", load_aligner),
    "load_official_aligner": ("official_image", lambda p: load_official_aligner(p, p.parent / "latent_ok.pt",
                                                                                heads=2)),
    "load_official_aligner_latent": ("official_image", lambda p: load_official_aligner(
        p.parent / "image_ok.pt", p, heads=2)),
    "load_world_cnn": ("world_cnn", load_world_cnn),
    "load_encoder": ("encoder", lambda p: load_encoder(p)),
    "load_official_encoder": ("official_image", lambda p: load_official_encoder(p)),
}


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    return folder, write_checkpoints(folder)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_every_loader_refuses_a_payload_and_names_file_and_global(loader, legacy, blobs, tmp_path):
    kind, load = LOADERS[loader]
    _, valid = blobs
    marker = tmp_path / "marker"
    path = tmp_path / f"{loader}.pt"
    # a checkpoint every loader would otherwise accept, with the payload riding along
    blob = valid[kind]
    blob = {**blob, "payload": Payload(marker)} if kind != "arcface" else {**blob, "zz": Payload(marker)}
    if loader == "load_official_aligner_latent":
        torch.save(valid["official_image"], tmp_path / "image_ok.pt")
        _, latent = official_states(tiny_aligner())
        blob = {"state_dict": latent, "opts": argparse.Namespace(), "payload": Payload(marker)}
    elif loader == "load_official_aligner":
        shutil.copy(blobs[0] / "latent_ok.pt", tmp_path / "latent_ok.pt")
    torch.save(blob, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError) as err:
        load(path)
    message = str(err.value)
    assert str(path) in message and "builtins.getattr" in message and "pathlib" in message, message
    assert TRUST_ENV in message and "shared.trust_checkpoints" in message
    assert err.value.path == str(path) and "builtins.getattr" in err.value.globals
    assert not marker.exists()


def test_payload_with_os_system_names_that_global(tmp_path):
    class System:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'marker'}",)

    torch.save({"g_ema": {}, "x": System()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt: refused to load: .*global\(s\) posix\.system"):
        load_generator(tmp_path / "evil.pt")
    assert not (tmp_path / "marker").exists()


def test_valid_files_load_through_every_loader(blobs):
    folder, valid = blobs
    for name, blob in valid.items():
        torch.save(blob, folder / f"{name}.pt")
    G = load_generator(folder / "generator.pt")
    torch.testing.assert_close(G.state_dict()["style.1.weight"], valid["generator"]["g_ema"]["style.1.weight"])
    load_arcface(folder / "arcface.pt")
    load_aligner(folder / "aligner_ok.pt")
    load_world_cnn(folder / "world_cnn.pt")


def test_official_clcae_layout_loads_with_namespace_opts(tmp_path):
    """``{'state_dict', 'opts': Namespace, 'iter'}``, with the odd numpy number and device in opts."""
    model = tiny_aligner()
    image, latent = official_states(model)
    opts = argparse.Namespace(exp_dir="exp", learning_rate=1e-4, device=torch.device("cpu"), batch_size=8,
                              best=np.float64(0.25), stylegan_size=1024, use_ddp=False, lpips_type=None)
    torch.save({"state_dict": image, "opts": opts, "iter": 5}, tmp_path / "best_model_image.pt")
    torch.save({"state_dict": latent, "opts": vars(opts), "iter": 5}, tmp_path / "best_model_latent.pt")

    ckpt = read_checkpoint(tmp_path / "best_model_image.pt")
    assert ckpt["iter"] == 5 and isinstance(ckpt["opts"], argparse.Namespace)
    assert ckpt["opts"].learning_rate == 1e-4 and ckpt["opts"].device == torch.device("cpu")
    assert ckpt["opts"].best == 0.25 and isinstance(ckpt["opts"].best, np.float64)
    loaded = load_official_aligner(tmp_path / "best_model_image.pt", tmp_path / "best_model_latent.pt", heads=2)
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in image_keys(ours))
    x, w = torch.randn(2, 3, 32, 32), torch.randn(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, w)[0], model(x, w)[0])


def image_keys(state):
    return [k for k in state if k not in ("image_avg", "w_avg")]


def test_allow_list_is_by_name_only(tmp_path):
    # numpy numbers and numeric arrays are data; an object array is not on the list
    torch.save({"a": np.arange(3, dtype=np.int64), "b": np.float32(1.5)}, tmp_path / "numbers.pt")
    got = read_checkpoint(tmp_path / "numbers.pt")
    assert got["a"].tolist() == [0, 1, 2] and got["b"] == np.float32(1.5)
    torch.save({"a": np.array([TrainingLog(3)], dtype=object)}, tmp_path / "objects.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"objects\.pt.*TrainingLog"):
        read_checkpoint(tmp_path / "objects.pt")
    torch.save({"log": TrainingLog(3)}, tmp_path / "custom.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"custom\.pt.*test_safe_loading\.TrainingLog"):
        read_checkpoint(tmp_path / "custom.pt")


def trusted_generator(path):
    """A full-pickle generator checkpoint (a custom object beside the weights) the user trusts."""
    G = tiny_generator()
    torch.save({"g_ema": G.state_dict(), "latent_avg": torch.full((16,), 0.5), "log": TrainingLog(7)}, path)


def test_opt_in_by_argument_loads_fully_with_a_warning(tmp_path, monkeypatch):
    trusted_generator(tmp_path / "trusted.pt")
    with pytest.raises(UnsafeCheckpointError):
        load_generator(tmp_path / "trusted.pt")
    with pytest.warns(TrustedCheckpointWarning, match=r"trusted\.pt: trusted checkpoint loaded with full"):
        ckpt = read_checkpoint(tmp_path / "trusted.pt", trust=True)
    assert isinstance(ckpt["log"], TrainingLog) and ckpt["log"].steps == 7
    with pytest.warns(TrustedCheckpointWarning, match=r"trusted\.pt"):
        G = load_generator(tmp_path / "trusted.pt", trust=True)
    assert torch.equal(G.latent_avg, torch.full((16,), 0.5))
    # trust=False wins over the environment
    monkeypatch.setenv(TRUST_ENV, "1")
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(tmp_path / "trusted.pt", trust=False)


def test_opt_in_by_env_and_by_params_through_stage_main(tmp_path, monkeypatch):
    trusted_generator(tmp_path / "trusted.pt")
    monkeypatch.setenv(TRUST_ENV, "1")
    with pytest.warns(TrustedCheckpointWarning, match=r"trusted\.pt"):
        load_generator(tmp_path / "trusted.pt")
    monkeypatch.setenv(TRUST_ENV, "maybe")
    with pytest.raises(ValueError, match=f"{TRUST_ENV}='maybe'"):
        trust_from_env()

    monkeypatch.delenv(TRUST_ENV)
    seen = []
    (tmp_path / "off.yaml").write_text("shared:\n  trust_checkpoints: false\n")
    stage_main(lambda params: seen.append(trust_from_env()), ["--params", str(tmp_path / "off.yaml")])
    (tmp_path / "on.yaml").write_text("shared:\n  trust_checkpoints: true\n")

    def run(params):
        seen.append(trust_from_env())
        with pytest.warns(TrustedCheckpointWarning, match=r"trusted\.pt"):
            load_generator(tmp_path / "trusted.pt")

    stage_main(run, ["--params", str(tmp_path / "on.yaml")])
    assert seen == [False, True]


def test_opt_in_runs_the_payload_only_when_asked(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"payload": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.warns(TrustedCheckpointWarning, match=r"evil\.pt.*builtins\.getattr"):
        read_checkpoint(tmp_path / "evil.pt", trust=True)
    assert marker.exists()  # what trusting a file means


def test_data_files_never_take_the_opt_in(tmp_path, monkeypatch):
    monkeypatch.setenv(TRUST_ENV, "1")
    marker = tmp_path / "marker"
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    save_torch({"images": torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "w": torch.zeros(2, 16)},
               pairs / "shard_00000.pt")
    torch.save({"w_avg": torch.zeros(16), "image_avg": torch.zeros(1, 3, 4, 4), "x": Payload(marker)},
               pairs / "stats.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"stats\.pt: refused .*builtins\.getattr"):
        load_pairs(pairs)
    with pytest.raises(UnsafeCheckpointError, match=r"stats\.pt"):
        read_tensors(pairs / "stats.pt")
    assert not marker.exists()
    save_torch({"w_avg": torch.ones(16), "image_avg": torch.zeros(1, 3, 4, 4)}, pairs / "stats.pt")
    images, w, stats = load_pairs(pairs)
    assert images.shape == (2, 3, 4, 4) and torch.equal(stats["w_avg"], torch.ones(16))


def test_own_outputs_load_weights_only(tmp_path):
    """What clcae writes needs no global beyond torch's own: it loads with no allow-list at all."""
    save_generator(tiny_generator(), tmp_path / "g.pt", step=3)
    aligner = tiny_aligner()
    opt = torch.optim.Adam(aligner.parameters())
    aligner(torch.randn(2, 3, 32, 32), torch.randn(2, 16))[0].sum().backward()
    opt.step()
    save_aligner(aligner, tmp_path / "a.pt", step=7)
    save_torch({"model": aligner.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state(),
                "data_rng": torch.Generator().manual_seed(1).get_state(), "step": 1, "config": {"lr": 1e-3}},
               tmp_path / "state.pt")
    save_world_cnn(WorldCNN(widths=(8, 8, 16, 16, 32), emb_dim=16), tmp_path / "w.pt", metrics={"acc": 0.5},
                   history=[{"step": 0, "loss_id": 1.0}])
    for name in ("g.pt", "a.pt", "state.pt", "w.pt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / name) == []
        read_tensors(tmp_path / name)


def test_clear_errors_for_files_that_are_no_checkpoint(tmp_path):
    G = tiny_generator()
    save_generator(G, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    cases = {"truncated.pt": (data[: len(data) // 2], "truncated or not a checkpoint"),
             "page.pt": (b"\n<!DOCTYPE html><html><title>Google Drive</title>", "an HTML page"),
             "empty.pt": (b"", "empty file"),
             "notes.pt": (b"not a checkpoint", "not a torch checkpoint")}
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        for load in (read_checkpoint, load_generator, load_arcface, load_aligner, load_world_cnn):
            with pytest.raises(CheckpointError) as err:
                load(tmp_path / name)
            assert not isinstance(err.value, UnsafeCheckpointError)
            assert f"{tmp_path / name}: " in str(err.value) and expected in str(err.value), str(err.value)
    with pytest.raises(CheckpointError, match="absent.pt: no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain checkpoint loads without any warning
        read_checkpoint(tmp_path / "good.pt")


def test_stage_reports_a_refused_checkpoint_in_one_line(tmp_path, capsys):
    marker = tmp_path / "marker"
    torch.save({"g_ema": {}, "payload": Payload(marker)}, tmp_path / "generator.pt")
    (tmp_path / "params.yaml").write_text(f"shared:\n  generator: {tmp_path / 'generator.pt'}\n")
    with pytest.raises(SystemExit) as exit_:
        stage_main(lambda params: load_generator(params.shared.generator), ["--params", str(tmp_path / "params.yaml")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"error: {tmp_path / 'generator.pt'}: refused to load") and "builtins.getattr" in err
    assert not marker.exists()


def test_a_resume_point_with_a_payload_is_ignored_not_run(tmp_path, capsys, monkeypatch):
    """Resume points are the project's own files: read weights-only even when checkpoints are trusted."""
    from clcae.training import ResumePoint

    monkeypatch.setenv(TRUST_ENV, "1")
    marker = tmp_path / "marker"
    path = tmp_path / ".resume" / "state.pt"
    path.parent.mkdir()
    torch.save({"signature": {"a": 1}, "step": 3, "payload": Payload(marker)}, path)
    assert ResumePoint(path, {"a": 1}).load() is None
    assert not marker.exists() and str(path) in capsys.readouterr().out



def test_refusal_names_only_globals_off_the_allow_list(tmp_path):
    """torch's own static scan names the globals, with clcae's allow-list (Namespace, numpy) left out."""
    marker = tmp_path / "marker"
    blob = {"opts": argparse.Namespace(lr=1e-4), "best": np.float64(0.5), "losses": np.zeros(3),
            "w": torch.zeros(2), "payload": Payload(marker)}
    torch.save(blob, tmp_path / "zip.pt")
    torch.save(blob, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        with pytest.raises(UnsafeCheckpointError) as err:
            read_checkpoint(tmp_path / name)
        assert sorted(err.value.globals) == ["builtins.getattr", "pathlib.Path", "pathlib.PosixPath"], name
        assert str(tmp_path / name) in str(err.value) and "pathlib.PosixPath" in str(err.value)
    assert not marker.exists()


def test_refusal_of_a_protocol_4_pickle_still_names_the_globals(tmp_path):
    """torch's scan stops at protocol-4 opcodes (FRAME, STACK_GLOBAL); clcae's own scan names them."""
    class System:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'marker'}",)

    torch.save({"w": torch.zeros(2), "x": System()}, tmp_path / "p4.pt", pickle_protocol=4)
    with pytest.raises(UnsafeCheckpointError, match=r"p4\.pt: refused to load: .*global\(s\) posix\.system"):
        read_checkpoint(tmp_path / "p4.pt")
    assert not (tmp_path / "marker").exists()


def test_numpy_globals_is_public_and_keeps_its_old_name():
    from clcae import io

    names = {name for _, name in io.numpy_globals()}
    assert {"numpy.ndarray", "numpy.dtype", "numpy.dtypes.Float64DType"} <= names
    assert not any("Object" in name for name in names)  # object arrays and scalars stay refused
    assert io._numpy_globals is io.numpy_globals
