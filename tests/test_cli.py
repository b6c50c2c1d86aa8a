"""`clcae invert / edit / directions` on photos as people have them, with a tiny generator and encoder."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_encoder import tiny_encoder
from tiny import tiny_generator

from clcae.cli import main
from clcae.editing import Direction, save_direction
from clcae.nets.encoder import save_encoder
from clcae.nets.stylegan2 import save_generator
from clcae.photos import PhotoError, load_photo


def gradient(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8)


def test_photo_kinds(tmp_path):
    rgb = gradient()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    image, notes = load_photo(tmp_path / "rgb.png", 32)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert notes == ["centre-cropped 64x48 to 48x48", "resized 48 to 32 (antialiased)"]
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    gray, notes = load_photo(tmp_path / "gray.png", 48)
    assert "grayscale" in notes and torch.equal(gray[0], gray[1])
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    assert "palette converted" in load_photo(tmp_path / "palette.png", 48)[1]
    rgba = np.concatenate([rgb, np.zeros((48, 64, 1), np.uint8)], -1)            # fully transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    white, notes = load_photo(tmp_path / "rgba.png", 48)
    assert "alpha composited on white" in notes and (white == 255).all()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    cmyk, notes = load_photo(tmp_path / "cmyk.jpg", 48)
    assert "CMYK converted" in notes and (cmyk.float() - load_photo(tmp_path / "rgb.png", 48)[0].float()).abs().mean() < 8
    sixteen = (gray[0].numpy().astype(np.uint16) * 257)                        # 16-bit grayscale
    Image.fromarray(sixteen).save(tmp_path / "deep.png")   # uint16: mode I;16
    deep, notes = load_photo(tmp_path / "deep.png", 48)
    assert "16-bit scaled to 8-bit" in notes and (deep[0].int() - gray[0].int()).abs().max() <= 1
    # EXIF orientation 6 (rotate 90 clockwise to view): the photo comes out upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    upright, notes = load_photo(tmp_path / "rotated.jpg", 48)
    assert "EXIF orientation applied" in notes
    expected = torch.from_numpy(np.ascontiguousarray(np.rot90(rgb, k=-1)))[8:56].permute(2, 0, 1)  # [3, 48, 48]
    assert (upright.float() - expected.float()).abs().mean() < 6


@pytest.mark.parametrize("content, message", [(b"", "empty file"), (b"hello, not an image", "not an image"),
                                              (None, "unreadable image")])
def test_bad_photos_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content is None:                                  # a truncated PNG
        buf = io.BytesIO()
        Image.fromarray(gradient()).save(buf, format="PNG")
        content = buf.getvalue()[:200]
    path.write_bytes(content)
    with pytest.raises(PhotoError, match=rf"bad\.png: {message}"):
        load_photo(path, 32)


def tiny_pipeline_files(folder):
    """A tiny generator, encoder and directions folder on disk, as the pipeline writes them."""
    G = tiny_generator(size=32, style_dim=32)
    save_generator(G, folder / "g.pt")
    save_encoder(tiny_encoder(G, image_size=64), folder / "encoder.pt")
    directions = folder / "directions"
    torch.manual_seed(7)
    save_direction(Direction("smile", torch.nn.functional.normalize(torch.randn(32), dim=0)),
                   directions / "interfacegan" / "smile.pt")
    (directions / "directions.json").write_text(json.dumps({"directions": {
        "smile": {"kind": "interfacegan", "file": "interfacegan/smile.pt", "layers": None, "strength": 2.0,
                  "attribute": "smile", "attribute_sign": 1}}}))
    return folder / "g.pt", folder / "encoder.pt", directions


@pytest.fixture
def models(tmp_path):
    generator, encoder, directions = tiny_pipeline_files(tmp_path)
    return ["--params", str(tmp_path / "none.yaml"), "--generator", str(generator), "--encoder", str(encoder),
            "--directions", str(directions)]


def test_invert_a_folder_of_good_and_bad_files(tmp_path, models, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(gradient()).save(photos / "a.png")
    Image.fromarray(gradient(80, 60)).convert("L").save(photos / "a.jpg")     # same stem, other kind
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (photos / "empty.jpg").write_bytes(b"")
    files = sorted(str(p) for p in photos.iterdir())
    code = main(models + ["invert", *files, "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2 and "broken.png" in err and "empty.jpg: empty file" in err
    assert "2 inverted" in out and "2 failed" in out
    for stem in ("a", "a-2"):
        for space in ("w", "wplus", "f"):
            assert Image.open(tmp_path / "out" / f"{stem}_{space}.png").size == (64, 64)
        latents = torch.load(tmp_path / "out" / f"{stem}_latents.pt")
        assert latents["wplus"].shape == (8, 32) and latents["f"].ndim == 3


def test_edit_at_strength_zero_is_the_inversion_and_sweeps(tmp_path, models, capsys):
    Image.fromarray(gradient()).save(tmp_path / "me.png")
    out = tmp_path / "out"
    assert main(models + ["edit", str(tmp_path / "me.png"), "--direction", "smile", "--strength", "0",
                          "--out", str(out)]) == 0
    same = np.asarray(Image.open(out / "me_smile_+0_f.png"))
    assert np.array_equal(same, np.asarray(Image.open(out / "me_f_inversion.png")))
    assert main(models + ["edit", str(tmp_path / "me.png"), "--direction", "smile", "--out", str(out)]) == 0
    official = np.asarray(Image.open(out / "me_smile_+2_f.png"))
    assert not np.array_equal(official, same)   # the direction's own strength
    latent = tmp_path / "latent"   # the edit of the codes (w+ + d): another image than the official edit's
    assert main(models + ["edit", str(tmp_path / "me.png"), "--direction", "smile", "--edit-mode", "latent",
                          "--out", str(latent)]) == 0
    assert not np.array_equal(np.asarray(Image.open(latent / "me_smile_+2_f.png")), official)
    assert main(models + ["edit", str(tmp_path / "me.png"), "--direction", "smile", "--sweep", "-3", "3", "5",
                          "--space", "wplus", "--out", str(out)]) == 0
    assert Image.open(out / "me_smile_sweep_wplus.png").size == (5 * 64 + 6 * 2, 64 + 4)
    assert main(models + ["edit", str(tmp_path / "me.png"), "--direction", "frown", "--out", str(out)]) == 1
    assert "unknown direction(s) ['frown']; this world has: smile" in capsys.readouterr().err
    assert main(models + ["directions"]) == 0 and "+smile" in capsys.readouterr().out


def test_missing_pipeline_outputs_name_the_dvc_target(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f"shared: {{generator: {tmp_path / 'g.pt'}}}\ntrain_encoder: {{out_dir: {tmp_path / 'enc'}}}\n"
                      f"fit_directions: {{out_dir: {tmp_path / 'dirs'}}}\n")
    save_generator(tiny_generator(size=32, style_dim=32), tmp_path / "g.pt")
    Image.fromarray(gradient()).save(tmp_path / "me.png")
    assert main(["--params", str(params), "invert", str(tmp_path / "me.png"), "--out", str(tmp_path / "o")]) == 1
    assert "dvc repro train_encoder@clcae" in capsys.readouterr().err
    assert main(["--params", str(params), "directions"]) == 1
    assert "dvc repro fit_directions" in capsys.readouterr().err
