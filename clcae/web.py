"""``clcae serve``: a local web page to invert a photo and edit it with sliders.

Upload a photo: it is inverted once (W, W+ and F reconstructions side by side) and the inversion
is kept on the server for the session; moving a slider (one per direction) or changing the space
re-renders only the edit, all sliders at once (``Editor.combined_delta``), never re-inverting.
The edited image downloads as a PNG. Gradio; ``GRADIO_ANALYTICS_ENABLED=False`` is set so the
page works offline.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from clcae.spaces import LABELS, RENDERS, SPACES

SPACE_LABELS = {s: f"{LABELS[s]}: {RENDERS[s]}" for s in reversed(SPACES)}   # F first: the default edit space
DISPLAY = 256   # px the images are shown at (the downloaded PNG keeps the encoder's size)


def shown(image: torch.Tensor):
    """[-1, 1] ``[3, H, W]`` -> PIL RGB, as the page shows and downloads it."""
    from clcae.images import to_uint8
    from clcae.photos import to_pil

    return to_pil(to_uint8(image))


def build_app(models, max_strength: float = 6.0):
    """The Gradio Blocks of the page for one encoder, generator and set of directions."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from clcae.editing import Editor
    from clcae.inversion import invert
    from clcae.photos import load_photo

    encoder, G = models.encoder, models.G
    directions = models.directions()
    editor = Editor.for_encoder(encoder, G)
    spaces = [s for s in SPACE_LABELS if s != "f" or encoder.cfg.use_f]
    downloads = Path(tempfile.mkdtemp(prefix="clcae-serve-"))

    def on_upload(path, space, *strengths):
        if not path:
            return None, None, None, None, None, None, ""
        image, notes = load_photo(path, encoder.cfg.image_size)
        with torch.inference_mode():
            inversion = invert(encoder, G, image[None], keep_codes=True)
        recs = [shown(inversion.images()[s][0]) if s in inversion.images() else None for s in SPACES]
        edited, file = on_edit(inversion, space, *strengths)
        return (*recs, inversion, edited, file, "; ".join(notes) or "used as is")

    def on_edit(inversion, space, *strengths):
        if inversion is None:
            return None, None
        moves = [(d, s) for d, s in zip(directions.values(), strengths) if s]
        with torch.inference_mode():
            edited = editor.apply(inversion, editor.combined_delta(moves), spaces=(space,))
        image = shown(edited.images[space][0])
        file = downloads / ("edited_" + "_".join(f"{d.name}{s:+g}" for d, s in moves)[:120] + f"_{space}.png")
        image.save(file)
        return image, str(file)

    with gr.Blocks(title="clcae: invert and edit") as app:
        gr.Markdown(f"## clcae: invert and edit a photo\nEncoder `{models.encoder_path}`, generator "
                    f"`{models.generator_path}`: upload a photo, then move the sliders.")
        with gr.Row():
            photo = gr.Image(type="filepath", label="photo", elem_id="photo", sources=["upload"], height=DISPLAY)
            rec_w = gr.Image(label=SPACE_LABELS["w"], elem_id="rec-w", format="png", height=DISPLAY, interactive=False)
            rec_wplus = gr.Image(label=SPACE_LABELS["wplus"], elem_id="rec-wplus", format="png", height=DISPLAY, interactive=False)
            rec_f = gr.Image(label=SPACE_LABELS["f"], elem_id="rec-f", format="png", height=DISPLAY, interactive=False)
        notes = gr.Markdown(elem_id="notes")
        with gr.Row():
            with gr.Column():
                space = gr.Radio([(SPACE_LABELS[s], s) for s in spaces], value=spaces[0], label="edit in",
                                 elem_id="space")
                sliders = [gr.Slider(-max_strength, max_strength, value=0.0, step=0.5, label=name,
                                     elem_id=f"slider-{name}") for name in directions]
            with gr.Column():
                edited = gr.Image(label="edited", elem_id="edited", format="png", height=DISPLAY, interactive=False)
                download = gr.File(label="download PNG", elem_id="download")
        state = gr.State(None)
        photo.upload(on_upload, [photo, space, *sliders], [rec_w, rec_wplus, rec_f, state, edited, download, notes])
        for control in (space, *sliders):
            control.change(on_edit, [state, space, *sliders], [edited, download])
    return app


def serve(models, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Build the page and serve it until interrupted."""
    build_app(models).launch(server_name=host, server_port=port, show_error=True)
