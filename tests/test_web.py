"""The `clcae serve` page in a real headless browser: upload a photo, move a slider, read the image.

Chromium comes from the system (Debian's `chromium` package; `.ci/run` installs it when it can);
Playwright drives it (its own browser download is not used). Skipped, with the reason, when
gradio, playwright or a Chromium binary is missing. A screenshot is kept in `test-artifacts/`.
"""
import io
import os
import shutil
import socket
from argparse import Namespace

import numpy as np
import pytest
import torch
from conftest import ROOT

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio", reason="the web page needs gradio (pip install 'clcae[web]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright")
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def page_models(tmp_path):
    from test_cli import tiny_pipeline_files

    from clcae.cli import Models

    generator, encoder, directions = tiny_pipeline_files(tmp_path)
    return Models(Namespace(params=str(tmp_path / "none.yaml"), generator=str(generator), encoder=str(encoder),
                            directions=str(directions), variant="clcae", device="cpu", command="serve"))


WAIT_MS = 180_000  # generous: the page answers in seconds alone, far slower with the rest of the suite running


def image_at(page, elem_id: str):
    """The PIL image a Gradio image component shows, fetched as the browser does, and its src."""
    from PIL import Image

    img = page.locator(f"#{elem_id} img").first
    img.wait_for(state="visible", timeout=WAIT_MS)
    src = img.get_attribute("src")
    return Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"), src


def test_upload_slide_and_read_the_edit(page_models, tmp_path):
    from PIL import Image

    from clcae.editing import Editor
    from clcae.images import to_uint8
    from clcae.inversion import invert
    from clcae.photos import load_photo
    from clcae.web import DISPLAY, build_app

    photo = tmp_path / "me.png"
    y, x = np.mgrid[0:80, 0:100]
    Image.fromarray(np.stack([x * 2, y * 3, (x + y)], -1).astype(np.uint8)).save(photo)
    app = build_app(page_models)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", timeout=WAIT_MS)
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            first, first_src = image_at(page, "edited")          # strength 0: the F inversion
            page.locator("#rec-f img").wait_for(state="visible", timeout=WAIT_MS)
            number = page.locator("#slider-smile input[type=number]")
            number.fill("4")
            number.press("Enter")
            number.press("Tab")                                  # leaving the box releases the slider
            # the src read before the edit was asked for: a fast answer cannot slip in between
            page.wait_for_function("(old) => { const i = document.querySelector('#edited img');"
                                   " return i && i.getAttribute('src') !== old; }", arg=first_src, timeout=WAIT_MS)
            shown, _ = image_at(page, "edited")
            page.screenshot(path=str(artifacts / "web_page.png"), full_page=True)
            browser.close()
    finally:
        app.close()
    # what the page shows is the editor's own result, pixel for pixel
    models = page_models
    image, _ = load_photo(photo, models.encoder.cfg.image_size)
    with torch.inference_mode():
        inv = invert(models.encoder, models.G, image[None], keep_codes=True)
        editor = Editor.for_encoder(models.encoder, models.G)
        expected = editor.edit(inv, models.directions()["smile"], 4.0, spaces=("f",)).images["f"][0]
    def nearest(image, k):   # what the page draws: each pixel a k x k block
        return to_uint8(image).permute(1, 2, 0).numpy().repeat(k, 0).repeat(k, 1)

    k = DISPLAY // 64 + (DISPLAY % 64 > 0)
    assert np.array_equal(np.asarray(first), nearest(inv.image_f[0], k))
    assert np.array_equal(np.asarray(shown), nearest(expected, k))
    assert (artifacts / "web_page.png").stat().st_size > 10_000


def test_a_real_photo_is_aligned_edited_and_pasted_back_on_the_page(page_models, tmp_path):
    """The astronaut (a real photo) through the page with alignment: the edited image it shows is the
    whole photo (its size), changed in the face region and equal to the photo far from it."""
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    from clcae.web import build_app

    original = skimage.data.astronaut()                                  # uint8 [512, 512, 3]
    Image.fromarray(original).save(tmp_path / "astronaut.png")
    app = build_app(page_models, align=True)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", timeout=WAIT_MS)
            page.locator("#photo input[type=file]").set_input_files(str(tmp_path / "astronaut.png"))
            _, first_src = image_at(page, "edited")
            number = page.locator("#slider-smile input[type=number]")
            number.fill("5")
            number.press("Enter")
            number.press("Tab")
            page.wait_for_function("(old) => { const i = document.querySelector('#edited img');"
                                   " return i && i.getAttribute('src') !== old; }", arg=first_src, timeout=WAIT_MS)
            page.wait_for_timeout(1000)                                   # the full render after the preview
            shown, _ = image_at(page, "edited")
            notes = page.locator("#notes").inner_text()
            browser.close()
    finally:
        app.close()
    from clcae.faces.align import Alignment, pixel_centres
    from clcae.photos import encoder_inputs

    shown = np.asarray(shown).astype(int)
    assert shown.shape == original.shape and "FFHQ-aligned crop" in notes
    changed = np.abs(shown - original.astype(int)).max(-1) > 0
    (face,), _ = encoder_inputs([tmp_path / "astronaut.png"], 64, True)   # where the page's crop lies
    uv = (Alignment(face.alignment.quad, 64).to_crop(pixel_centres(512, 512)) / 64).numpy()   # crop sides
    inner = ((uv > 0.2) & (uv < 0.8)).all(-1)
    outside = ((uv < 0) | (uv > 1)).any(-1)
    assert inner.sum() > 5000 and changed[inner].mean() > 0.9           # the face region: the edit
    assert outside.sum() > 100_000 and not changed[outside].any()      # outside the crop: the photo itself
