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
    from clcae.web import build_app

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
    assert np.array_equal(np.asarray(first), to_uint8(inv.image_f[0]).permute(1, 2, 0).numpy())
    assert np.array_equal(np.asarray(shown), to_uint8(expected).permute(1, 2, 0).numpy())
    assert (artifacts / "web_page.png").stat().st_size > 10_000
