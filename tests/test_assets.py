"""The ffhq world's assets: every missing or damaged file gives a message naming what to fetch and where."""
import hashlib

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from clcae.config import Params, build, read_yaml
from clcae.worlds.ffhq import assets as A


def stand_in(tmp_path, name="model.pt"):
    """A small torch.save file and an Asset whose size and sha256 are that file's."""
    path = tmp_path / name
    torch.save({"w": torch.arange(10.0)}, path)
    data = path.read_bytes()
    asset = A.Asset("arcface", "ArcFace IR-SE50 (model_ir_se50.pth)", "ffhq.arcface", "file://" + str(path),
                    size=len(data), sha256=hashlib.sha256(data).hexdigest())
    return asset, path


def test_intact_file_and_each_kind_of_damage_named(tmp_path):
    asset, good = stand_in(tmp_path)
    assert A.check(asset, good).state == "ok"
    missing = A.check(asset, tmp_path / "assets" / "model_ir_se50.pth")
    assert missing.state == "missing"
    msg = missing.message()
    assert "model_ir_se50.pth: arcface missing" in msg and "fetch it from file://" in msg
    assert "put it at " + str(tmp_path / "assets" / "model_ir_se50.pth") in msg and "(or set ffhq.arcface)" in msg

    html = tmp_path / "html.pt"
    html.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>")
    assert A.check(asset, html).state == "corrupt" and "an HTML page" in A.check(asset, html).message()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:100])
    assert "100 bytes, the file has" in A.check(asset, cut).detail
    flipped = bytearray(good.read_bytes())
    flipped[-30] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    assert A.check(asset, tmp_path / "flipped.pt").detail.startswith("sha256 ")

    unknown = A.Asset("clcae_encoder", "the released model", "", "https://drive.google.com/file/d/x/view")
    assert A.check(unknown, good).state == "unverified" and A.check(unknown, good).ok
    (tmp_path / "text.pt").write_text("not a checkpoint")
    assert "not a PyTorch file" in A.check(unknown, tmp_path / "text.pt").detail
    assert not unknown.direct and asset.direct


def test_image_folders_by_count(tmp_path):
    folder = A.Asset("celebahq_test", "CelebA-HQ test", "ffhq.test_dir", "https://example.org", folder=True, images=3)
    assert A.check(folder, tmp_path / "none").state == "missing"
    (tmp_path / "f").mkdir()
    assert A.check(folder, tmp_path / "f").state == "corrupt"
    for i in range(2):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "f" / f"{i}.png")
    assert A.check(folder, tmp_path / "f").state == "unverified"
    assert "2 images, the paper's set has 3" in A.check(folder, tmp_path / "f").detail
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "f" / "2.jpg")
    assert A.check(folder, tmp_path / "f").state == "ok"


def test_fetch_checks_before_moving_in(tmp_path):
    asset, good = stand_in(tmp_path)
    target = tmp_path / "assets" / "model_ir_se50.pth"
    assert A.fetch(asset, target).state == "ok" and target.read_bytes() == good.read_bytes()
    bad = A.Asset(asset.name, asset.what, asset.param, asset.url, size=asset.size, sha256="0" * 64)
    target.unlink()
    with pytest.raises(OSError, match="failed its check: sha256"):
        A.fetch(bad, target)
    assert not target.exists() and not list(target.parent.glob(".*tmp*"))   # nothing half-written left
    with pytest.raises(ValueError, match="no direct download"):
        A.fetch(A.Asset("x", "x", "", "https://drive.google.com/file/d/x/view"), target)


def test_the_paper_config_names_every_asset_and_the_command_reports_them(tmp_path, capsys):
    params = build(Params, read_yaml(ROOT / "configs" / "ffhq.yaml"))
    located = {a.name: A.locate(a, params) for a in A.MANIFEST}
    assert located["generator"] == A.Path("assets/ffhq/stylegan2-ffhq-config-f.pt")
    assert located["arcface"] == A.Path("assets/ffhq/model_ir_se50.pth")
    assert located["clcae_encoder"] == A.Path("assets/ffhq/FFHQ_Inversion.pt")
    assert located["lpips_alexnet"].name == "alexnet-owt-7be5be79.pth"   # null: torchvision's cache
    assert located["ganspace_pca"] == A.Path("assets/ffhq/editing/ganspace_pca/ffhq_pca.pt")
    assert all(path is not None for path in located.values())
    assert A.main(["check", "--params", str(ROOT / "configs" / "ffhq.yaml")]) == 1   # nothing fetched here
    out = capsys.readouterr().out
    assert "MISSING assets/ffhq/model_ir_se50.pth: arcface missing" in out
    assert f"of {len(A.MANIFEST)} assets in place" in out
    assert "absent  " + str(located["inception"]) in out or "ok      " + str(located["inception"]) in out  # optional


def test_the_released_contrastive_models_are_needed_once_the_params_name_them():
    """Listed as optional at their default place (also when train_encoder.common.aligner names one
    clcae aligner.pt); required (missing = an error) at the pair of paths it names."""
    raw = read_yaml(ROOT / "configs" / "ffhq.yaml")
    plain = {s.asset.name: s for s in A.check_all(build(Params, raw), hash_files=False)}
    assert plain["clcae_aligner_image"].state == "optional" and plain["clcae_aligner_image"].ok
    assert plain["clcae_aligner_image"].path == A.Path("assets/ffhq/best_model_image.pt")
    raw["train_encoder"]["common"]["aligner"] = ["data/ffhq/aligner/aligner.pt"]   # one file: a clcae aligner.pt
    one = {s.asset.name: s for s in A.check_all(build(Params, raw), hash_files=False)}
    assert one["clcae_aligner_image"].state == "optional" and one["clcae_aligner_image"].path == plain["clcae_aligner_image"].path
    raw["train_encoder"]["common"]["aligner"] = ["elsewhere/image.pt", "elsewhere/latent.pt"]
    named = {s.asset.name: s for s in A.check_all(build(Params, raw), hash_files=False)}
    assert named["clcae_aligner_image"].path == A.Path("elsewhere/image.pt")
    assert named["clcae_aligner_latent"].path == A.Path("elsewhere/latent.pt")
    assert named["clcae_aligner_latent"].state == "missing" and not named["clcae_aligner_latent"].ok
    assert "train_encoder.common.aligner" in named["clcae_aligner_latent"].message()
