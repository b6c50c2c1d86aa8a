"""One decoder for every image file: `clcae.images.decode_image`. A photo given to `clcae invert`
(`clcae.photos`) and the same file in an image folder (`clcae.data.read_image`, `FolderImages`,
`read_png_folder`) become the same tensor: EXIF orientation applied, alpha composited on white."""
import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clcae.data import FolderImages, centre_crop, read_image, resize_u8
from clcae.errors import ClcaeError, InputError
from clcae.images import ImageDecodeError, decode_image
from clcae.photos import PhotoError, decode_photo, load_photo
from clcae.worlds.ffhq.folders import undecodable
from clcae.worlds.procfaces import procfaces as pf


def gradient(h=24, w=32):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8)


def chw(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)


@pytest.fixture
def awkward(tmp_path):
    """An RGBA PNG (half-transparent left half) and two EXIF-rotated JPEGs (orientation 6 and 8)."""
    rgb = gradient()
    alpha = np.full((24, 32, 1), 255, np.uint8)
    alpha[:, :16] = 0                                    # left half fully transparent
    alpha[:, 16:24] = 128                                # then half transparent
    Image.fromarray(np.concatenate([rgb, alpha], -1), mode="RGBA").save(tmp_path / "rgba.png")
    for tag in (6, 8):
        exif = Image.Exif()
        exif[0x0112] = tag
        Image.fromarray(rgb).save(tmp_path / f"rot{tag}.jpg", exif=exif.tobytes(), quality=95)
    return tmp_path, rgb


def test_rgba_is_composited_on_white_the_same_way_everywhere(awkward):
    folder, rgb = awkward
    image, notes = decode_image(folder / "rgba.png")
    assert notes == ["alpha composited on white"] and image.shape == (3, 24, 32) and image.dtype == torch.uint8
    assert (image[:, :, :16] == 255).all()                       # transparent -> white, not black
    assert torch.equal(image[:, :, 24:], chw(rgb)[:, :, 24:])     # opaque -> its own pixels
    half = (rgb[:, 16:24].astype(np.float64) * 128 + 255 * 127) / 255
    assert (image[:, :, 16:24].double() - chw(half)).abs().max() <= 1
    assert torch.equal(read_image(folder / "rgba.png"), image)
    assert torch.equal(decode_photo(folder / "rgba.png")[0], image)


@pytest.mark.parametrize("tag, turns", [(6, -1), (8, 1)])
def test_exif_rotated_jpeg_comes_out_upright_the_same_way_everywhere(awkward, tag, turns):
    folder, rgb = awkward
    path = folder / f"rot{tag}.jpg"
    image, notes = decode_image(path)
    assert notes == ["EXIF orientation applied"] and image.shape == (3, 32, 24)   # portrait now
    upright = chw(np.rot90(rgb, k=turns))
    assert (image.float() - upright.float()).abs().mean() < 4                      # JPEG is lossy
    assert torch.equal(read_image(path), image)
    assert torch.equal(decode_photo(path)[0], image)


def test_photo_and_folder_give_the_same_tensors(awkward):
    folder, _ = awkward
    names = ["rgba.png", "rot6.jpg", "rot8.jpg"]
    images = FolderImages(folder, 20)
    assert images.names == names
    for i, name in enumerate(names):
        photo, _ = load_photo(folder / name, 20)
        assert torch.equal(images[i], photo), name
        assert torch.equal(images[i], resize_u8(centre_crop(decode_image(folder / name)[0])[None], 20)[0])
    assert undecodable(images, threads=2) == []


def test_plain_rgb_png_decodes_to_exactly_its_pixels(tmp_path):
    """What the pipeline writes (8-bit RGB PNGs, no EXIF, no alpha) is unchanged, bit for bit."""
    images, u, pid, labels = pf.render_split("test", 2, 2, seed=3)
    out = pf.write_png_folder(images, pf.labels_frame(u, pid, labels), tmp_path / "faces")
    back, df = pf.read_png_folder(out)
    assert torch.equal(back, images)
    for k, name in enumerate(df["file"]):
        image, notes = decode_image(out / name)
        assert notes == [] and torch.equal(image, images[k]) and torch.equal(read_image(out / name), images[k])


def test_errors_name_the_file_and_satisfy_every_caller(tmp_path):
    truncated = io.BytesIO()
    Image.fromarray(gradient()).save(truncated, format="PNG")
    cases = {"empty.png": (b"", "empty file"), "text.jpg": (b"<html>404</html>", "not an image PIL can read"),
             "cut.png": (truncated.getvalue()[:120], "unreadable image")}
    for name, (content, why) in cases.items():
        (tmp_path / name).write_bytes(content)
        for decode in (decode_image, read_image, decode_photo):
            with pytest.raises(ImageDecodeError, match=rf"{name}: {why}") as caught:
                decode(tmp_path / name)
            # the CLI catches ClcaeError (PhotoError), image folders catch OSError
            assert all(isinstance(caught.value, kind) for kind in (OSError, ClcaeError, InputError, PhotoError))
    with pytest.raises(PhotoError, match=r"absent\.png: no such file"):
        load_photo(tmp_path / "absent.png", 8)
    # read_png_folder names the file too
    pd.DataFrame({"file": ["cut.png"]}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(OSError, match=r"cut\.png: unreadable image"):
        pf.read_png_folder(tmp_path)
