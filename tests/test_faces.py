"""FFHQ alignment and paste-back (clcae/faces) on real photographs that registry packages ship.

The landmarks are MTCNN's (facenet-pytorch 2.5.3, its own code) on those photos, recorded in
tests/data/faces/mtcnn_reference.json; ffhq_quads_from_mtcnn.json holds the FFHQ quads an
independent implementation of the dataset's recipe computed from them."""
import json
import math

import pytest
import torch
from conftest import ROOT

from clcae.faces import align_face, ffhq_quad, paste_back
from clcae.faces.align import apply_affine, invert_affine, pixel_centres, sample_at

DATA = ROOT / "tests" / "data" / "faces"


def reference(name: str) -> torch.Tensor:
    return torch.tensor(json.loads((DATA / "mtcnn_reference.json").read_text())[name]["PIL"]["landmarks"],
                        dtype=torch.float64)   # [faces, 5, 2]


def astronaut() -> torch.Tensor:
    skimage = pytest.importorskip("skimage")
    return torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).contiguous()   # uint8 [3, 512, 512]


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper", "pair_astronaut_left_gracehopper_right"])
def test_ffhq_quads_match_an_independent_implementation(name):
    quads = json.loads((DATA / "ffhq_quads_from_mtcnn.json").read_text())
    for k, lm in enumerate(reference(name)):
        torch.testing.assert_close(ffhq_quad(lm), torch.tensor(quads[f"{name}[{k}]"]["quad"], dtype=torch.float64),
                                   atol=1e-3, rtol=0)


def test_quad_by_hand_for_an_upright_face():
    # eyes 40 px apart at y = 100, mouth 40 px below their middle: x = (40, 0) - rot90((0, 40)) = (80, 0),
    # scaled to max(2 * 40, 1.8 * 40) = 80; y = (0, 80); centre = (100, 100) + 0.1 * (0, 40)
    lm = torch.tensor([[80.0, 100], [120, 100], [100, 120], [85, 140], [115, 140]])
    expected = torch.tensor([[20.0, 24], [20, 184], [180, 184], [180, 24]], dtype=torch.float64)
    torch.testing.assert_close(ffhq_quad(lm), expected)


def test_landmarks_land_on_the_template_and_rotation_and_shift_give_the_same_crop():
    photo, lm = astronaut(), reference("astronaut")[0]
    crop, geo = align_face(photo, lm, 256)
    assert crop.shape == (3, 256, 256) and crop.dtype == torch.uint8
    template = geo.to_crop(lm)   # where the eyes and mouth corners land in the crop
    assert template[1, 0] - template[0, 0] > 60 and abs(float(template[1, 1] - template[0, 1])) < 1   # level eyes
    # the same photo turned by 15 degrees about a point and shifted: landmarks move exactly with it
    angle = math.radians(15)
    centre, shift = torch.tensor([256.0, 256.0], dtype=torch.float64), torch.tensor([17.0, -9.0], dtype=torch.float64)
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    to_turned = torch.cat([rot, (centre - rot @ centre + shift)[:, None]], 1)   # photo -> turned photo
    turned = turn(photo, to_turned)
    crop2, geo2 = align_face(turned, lm @ rot.T + to_turned[:, 2], 256)
    torch.testing.assert_close(geo2.to_crop(lm @ rot.T + to_turned[:, 2]), template, atol=1e-6, rtol=0)
    inner = (slice(None), slice(40, 216), slice(40, 216))   # the face, away from the turned photo's padding
    diff = (crop[inner].double() - crop2[inner].double()).abs()
    assert diff.mean() < 4.0, diff.mean()   # two bilinear resamplings of the same face


def turn(photo: torch.Tensor, photo_to_turned: torch.Tensor) -> torch.Tensor:
    """The photo resampled through an affine map (what a rotated, shifted shot of it would show)."""
    points = apply_affine(invert_affine(photo_to_turned), pixel_centres(*photo.shape[-2:]))
    out = sample_at(photo[None].double(), points, "zeros")[0]
    return out.round().clamp(0, 255).to(torch.uint8)


def test_paste_back_of_the_crop_itself_changes_only_the_face_region():
    photo, lm = astronaut(), reference("astronaut")[0]
    crop, geo = align_face(photo, lm, 256)
    pasted = paste_back(photo, crop, geo)
    assert pasted.shape == photo.shape
    uv = geo.to_crop(pixel_centres(512, 512)) / 256
    outside = ((uv < 0) | (uv > 1)).any(-1)
    assert torch.equal(pasted[:, outside], photo[:, outside])   # every pixel outside the quad unchanged
    inside = (uv > 0.2).all(-1) & (uv < 0.8).all(-1)
    assert (pasted[:, inside].double() - photo[:, inside].double()).abs().mean() < 3.0   # resampled twice


def test_paste_back_of_an_edit_moves_pixels_inside_only_and_bad_input_is_named():
    photo, lm = astronaut(), reference("astronaut")[0]
    crop, geo = align_face(photo, lm, 64)
    pasted = paste_back(photo, 255 - crop, geo)
    uv = geo.to_crop(pixel_centres(512, 512)) / 64
    centre = (uv > 0.3).all(-1) & (uv < 0.7).all(-1)
    assert (pasted[:, centre].double() - photo[:, centre].double()).abs().mean() > 40
    with pytest.raises(ValueError, match=r"landmarks must be \[5, 2\]"):
        align_face(photo, lm[:4], 64)
    with pytest.raises(ValueError, match=r"photo must be \[3, H, W\]"):
        align_face(photo[0], lm, 64)


# ----------------------------------------------------------------------------- detection (MTCNN)


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("facenet_pytorch")
    from clcae.faces import FaceDetector

    return FaceDetector()


def grace_hopper() -> torch.Tensor:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return torch.from_numpy(__import__("numpy").asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def test_detector_gives_the_reference_landmarks_and_numbers_faces_left_to_right(detector):
    faces = detector(astronaut())
    assert len(faces) == 1 and faces[0].prob > 0.99
    torch.testing.assert_close(faces[0].mtcnn_landmarks, reference("astronaut")[0], atol=1e-3, rtol=0)
    assert (faces[0].landmarks - faces[0].mtcnn_landmarks).norm(dim=-1).max() < 5.0   # refined: moved a little
    photo = torch.zeros(3, 600, 1024, dtype=torch.uint8)   # the astronaut left, Grace Hopper right
    photo[:, :512, :512], photo[:, :, 512:] = astronaut(), grace_hopper()
    pair = detector(photo)
    assert len(pair) == 2 and pair[0].box[0] < 512 < pair[1].box[0]
    torch.testing.assert_close(torch.stack([f.mtcnn_landmarks for f in pair]),
                               reference("pair_astronaut_left_gracehopper_right").flip(0), atol=1e-3, rtol=0)
    assert detector(torch.full((3, 200, 300), 128, dtype=torch.uint8)) == []


def turned(photo: torch.Tensor, degrees: float, shift: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(the photo turned by ``degrees`` about its centre and shifted, the photo -> turned map [2, 3])."""
    a = math.radians(degrees)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    centre = torch.tensor([photo.shape[-1] / 2, photo.shape[-2] / 2], dtype=torch.float64)
    to_turned = torch.cat([rot, (centre - rot @ centre + torch.tensor(shift, dtype=torch.float64))[:, None]], 1)
    return turn(photo, to_turned), to_turned


@pytest.mark.parametrize("photo_fn", [astronaut, grace_hopper])
def test_aligned_crops_put_the_landmarks_on_the_template_and_a_turned_photo_aligns_the_same(detector, photo_fn):
    """Issue 31's 2 px at 256 px. Detected again in the crop, the (refined) landmarks sit where the
    alignment put them (measured 0.37 px astronaut, 0.38 px Grace Hopper; MTCNN's own points: 2.41
    and 1.85); the photo turned by 15, -15 or 10 degrees and shifted puts them at the same places
    of the crop (0.48 and 0.53 px; unrefined 2.19 and 3.63) and gives the same crop: the quad's
    corners, which amplify the landmarks' error, agree to 0.52 and 1.27 px (unrefined 7.71, 6.84)."""
    photo = photo_fn()
    face = detector(photo)[0]
    crop, geo = align_face(photo, face.landmarks, 256)
    found = detector(crop)[0].landmarks   # detected again, in the crop
    assert (found - geo.to_crop(face.landmarks)).norm(dim=-1).max() < 2.0
    for degrees, shift in ((15, (12.0, -7.0)), (-15, (-9.0, 5.0)), (10, (3.0, 11.0))):
        photo2, to_turned = turned(photo, degrees, shift)
        lm2 = detector(photo2)[0].landmarks
        back = invert_affine(to_turned)   # the turned photo's landmarks, in the photo's coordinates
        assert (geo.to_crop(apply_affine(back, lm2)) - geo.to_crop(face.landmarks)).norm(dim=-1).max() < 2.0
        _, geo2 = align_face(photo2, lm2, 256)
        corners = (geo2.quad - apply_affine(to_turned, geo.quad)).norm(dim=-1).max() / geo.scale   # in crop px
        assert corners < 2.0, (degrees, corners)


def test_clcae_align_writes_crops_and_transforms_and_counts_photos_without_a_face(tmp_path, detector, capsys):
    from PIL import Image

    from clcae.cli import main

    Image.fromarray(astronaut().permute(1, 2, 0).numpy()).save(tmp_path / "astronaut.png")
    Image.new("RGB", (300, 200), (120, 130, 140)).save(tmp_path / "wall.png")
    code = main(["align", str(tmp_path / "astronaut.png"), str(tmp_path / "wall.png"), "--out", str(tmp_path / "out"),
                 "--size", "128"])
    assert code == 1
    assert "wall.png: no face found" in capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "astronaut_faces.json").read_text())
    assert [f["file"] for f in record["faces"]] == ["astronaut_face0.png"] and record["photo_size"] == [512, 512]
    with Image.open(tmp_path / "out" / "astronaut_face0.png") as im:
        assert im.size == (128, 128)
    matrix = torch.tensor(record["faces"][0]["crop_to_photo"], dtype=torch.float64)
    torch.testing.assert_close(matrix[:, 2], torch.tensor(record["faces"][0]["quad"][0], dtype=torch.float64))


def test_invert_and_edit_align_each_face_and_paste_back_into_the_photo(tmp_path, detector, capsys):
    """``clcae invert|edit --align --paste-back`` on a photo with two real faces: each face is inverted
    from its FFHQ crop (``<stem>_face<K>``); the pasted-back photo has the photo's size, differs from
    it only near the faces, and a photo without a face is named, skipped and counted."""
    import numpy as np
    from PIL import Image
    from test_cli import tiny_pipeline_files

    from clcae.cli import main

    photo = torch.full((3, 600, 1024), 90, dtype=torch.uint8)   # the astronaut left, Grace Hopper right
    photo[:, :512, :512], photo[:, :, 512:] = astronaut(), grace_hopper()
    Image.fromarray(photo.permute(1, 2, 0).numpy()).save(tmp_path / "pair.png")
    Image.new("RGB", (300, 200), (120, 130, 140)).save(tmp_path / "wall.png")
    generator, encoder, directions = tiny_pipeline_files(tmp_path)
    models = ["--params", str(tmp_path / "none.yaml"), "--generator", str(generator), "--encoder", str(encoder),
              "--directions", str(directions)]
    out = tmp_path / "out"
    code = main(models + ["invert", str(tmp_path / "pair.png"), str(tmp_path / "wall.png"), "--align",
                          "--paste-back", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "wall.png: no face found" in err and "aligning faces" in err
    for k in (0, 1):
        assert Image.open(out / f"pair_face{k}_f.png").size == (64, 64)
    pasted = np.asarray(Image.open(out / "pair_f_pasted.png")).astype(int)
    original = photo.permute(1, 2, 0).numpy().astype(int)
    assert pasted.shape == original.shape
    changed = np.abs(pasted - original).max(-1) > 0
    assert changed[:, :512].any() and changed[:, 512:].any()          # both faces pasted
    assert not changed[:, 470:560].any()                              # between the faces: the photo itself
    assert changed.mean() < 0.5
    assert main(models + ["edit", str(tmp_path / "pair.png"), "--align", "--face", "1", "--paste-back",
                          "--direction", "smile", "--strength", "3", "--out", str(out)]) == 0
    edited = np.asarray(Image.open(out / "pair_smile_+3_f_pasted.png")).astype(int)
    assert edited.shape == original.shape and (out / "pair_face1_smile_+3_f.png").is_file()
    assert not (out / "pair_face0_smile_+3_f.png").exists()
    moved = np.abs(edited - original).max(-1) > 0
    assert moved[:, 512:].any() and not moved[:, :512].any()          # only face 1 pasted
    assert main(models + ["invert", str(tmp_path / "pair.png"), "--out", str(tmp_path / "plain")]) == 0
    assert "not aligning (centre crop)" in capsys.readouterr().err and (tmp_path / "plain" / "pair_f.png").is_file()
