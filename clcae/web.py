"""``clcae serve``: a local web page to invert a photo and edit it with sliders.

Upload a photo: its faces are found and FFHQ-aligned where the encoder expects it (the ffhq world;
``clcae.photos.encoder_inputs``, as ``clcae invert`` does), inverted once (W, W+ and F side by
side, scaled up nearest-neighbour to a readable size), and the inversion is kept on the server for
the session. Moving a slider (one per direction) re-renders only the edit, all sliders at once
(``Editor.combined_delta``), never re-inverting: while it moves, a preview from the generator's
skip output at the encoder's side (:class:`PreviewGenerator`: the layers above it are not run);
when it is released, the full-resolution edit, pasted back into the whole photo when the faces
were aligned, which is also the download. Gradio; ``GRADIO_ANALYTICS_ENABLED=False`` is set so the
page works offline.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from clcae.spaces import LABELS, RENDERS, SPACES

SPACE_LABELS = {s: f"{LABELS[s]}: {RENDERS[s]}" for s in reversed(SPACES)}   # F first: the default edit space
DISPLAY = 320   # px the reconstructions are drawn at (nearest-neighbour upscale; downloads keep their size)


class PreviewGenerator:
    """The generator stopped at side ``size`` (its skip image there): what a slider preview renders.

    Stands in for ``G`` in an :class:`~clcae.editing.Editor`, which calls ``synthesis`` and
    ``layer_features`` and reads ``n_latent`` / ``style_dim``; everything else (``layer_features``
    included: an F edit's G_k(w+) never renders an image) is the wrapped generator's."""

    def __init__(self, G, size: int):
        self.G, self.size = G, int(size)

    def __getattr__(self, name):
        return getattr(self.G, name)

    def synthesis(self, wplus, **kwargs):
        return self.G.synthesis(wplus, max_size=self.size, **kwargs)


def shown(image: torch.Tensor, display: int | None = None):
    """[-1, 1] ``[3, H, W]`` -> PIL RGB; ``display``: scaled up nearest-neighbour to at least that side."""
    from clcae.images import to_uint8
    from clcae.photos import to_pil

    pil = to_pil(to_uint8(image))
    if display and pil.width < display:
        k = -(-display // pil.width)
        pil = pil.resize((pil.width * k, pil.height * k), resample=0)   # 0: PIL's NEAREST
    return pil


def slider_editors(encoder, G) -> tuple[dict, dict]:
    """Per space, the page's two Editors: the full render (a slider released, the download) and the
    preview (a slider moving: the generator stopped at the encoder's side). Pass the inversion's
    ``base_features`` as ``g_base`` to compute G_k(w+) once per photo."""
    from clcae.editing import Editor

    def editors(side: int) -> dict:
        return {s: Editor.for_encoder(encoder, PreviewGenerator(G, side)) for s in SPACES}

    return editors(G.size), editors(min(encoder.cfg.image_size, G.size))


def build_app(models, align: bool = False, face: int | None = None, max_strength: float = 6.0):
    """The Gradio Blocks of the page for one encoder, generator and set of directions; ``align``:
    detect and FFHQ-align the faces of an uploaded photo (``face``: only that one) and show the
    edit pasted back into the whole photo."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from clcae.images import to_uint8
    from clcae.inversion import invert
    from clcae.photos import encoder_inputs, paste_into_photo, to_pil

    encoder, G = models.encoder, models.G
    directions = models.directions()
    size = encoder.cfg.image_size
    full_editors, preview_editors = slider_editors(encoder, G)
    detector = None
    if align:
        from clcae.faces import FaceDetector

        detector = FaceDetector()
    spaces = [s for s in SPACE_LABELS if s != "f" or encoder.cfg.use_f]
    downloads = Path(tempfile.mkdtemp(prefix="clcae-serve-"))

    def on_upload(path, space, *strengths):
        if not path:
            return None, None, None, None, None, None, ""
        inputs, failures = encoder_inputs([path], size, align, face, detector)
        if not inputs:
            raise gr.Error(failures[0])
        with torch.inference_mode():
            inversion = invert(encoder, G, torch.stack([i.image for i in inputs]), keep_codes=True)
            base = full_editors["f"].base_features(inversion) if inversion.f is not None else None   # G_k(w+): once
        recs = [shown(inversion.images()[s][0], DISPLAY) if s in inversion.images() else None for s in SPACES]
        session = {"inversion": inversion, "inputs": inputs, "base": base}
        edited, file = on_full(session, space, *strengths)
        notes = "; ".join(dict.fromkeys(n for i in inputs for n in i.notes)) or "used as is"
        return (*recs, session, edited, file, notes)

    def render(session, space, strengths, editors):
        moves = [(d, s) for d, s in zip(directions.values(), strengths) if s]
        with_editor = editors[space]
        with torch.inference_mode():
            edited = with_editor.apply(session["inversion"], with_editor.combined_delta(moves), spaces=(space,),
                                       g_base=session["base"])
        return edited.images[space], moves

    def as_photo(session, images: torch.Tensor):
        """The edit as the page shows it: pasted back into the photo (aligned faces), else the crop."""
        inputs = session["inputs"]
        if inputs[0].alignment is None:
            return shown(images[0], DISPLAY), to_pil(to_uint8(images[0]))
        pasted = to_pil(paste_into_photo(inputs, images))
        return pasted, pasted

    def on_preview(session, space, *strengths):
        if session is None:
            return None
        images, _ = render(session, space, strengths, preview_editors)
        return as_photo(session, images)[0]

    def on_full(session, space, *strengths):
        if session is None:
            return None, None
        images, moves = render(session, space, strengths, full_editors)
        display, full = as_photo(session, images)
        file = downloads / ("edited_" + "_".join(f"{d.name}{s:+g}" for d, s in moves)[:120] + f"_{space}.png")
        full.save(file)
        return display, str(file)

    with gr.Blocks(title="clcae: invert and edit") as app:
        gr.Markdown(f"## clcae: invert and edit a photo\nEncoder `{models.encoder_path}`, generator "
                    f"`{models.generator_path}`: upload a photo, then move the sliders "
                    f"({'faces found and FFHQ-aligned, the edit pasted back' if align else 'centre crop'}).")
        with gr.Row():
            photo = gr.Image(type="filepath", label="photo", elem_id="photo", sources=["upload"], height=DISPLAY)
            rec_w = gr.Image(label=SPACE_LABELS["w"], elem_id="rec-w", format="png", height=DISPLAY, interactive=False)
            rec_wplus = gr.Image(label=SPACE_LABELS["wplus"], elem_id="rec-wplus", format="png", height=DISPLAY,
                                 interactive=False)
            rec_f = gr.Image(label=SPACE_LABELS["f"], elem_id="rec-f", format="png", height=DISPLAY, interactive=False)
        notes = gr.Markdown(elem_id="notes")
        with gr.Row():
            with gr.Column():
                space = gr.Radio([(SPACE_LABELS[s], s) for s in spaces], value=spaces[0], label="edit in",
                                 elem_id="space")
                sliders = [gr.Slider(-max_strength, max_strength, value=0.0, step=0.5, label=name,
                                     elem_id=f"slider-{name}") for name in directions]
            with gr.Column():
                edited = gr.Image(label="edited (preview while sliding, full resolution when released)",
                                  elem_id="edited", format="png", height=2 * DISPLAY, interactive=False)
                download = gr.File(label="download PNG (full resolution)", elem_id="download")
        state = gr.State(None)
        photo.upload(on_upload, [photo, space, *sliders], [rec_w, rec_wplus, rec_f, state, edited, download, notes])
        # one queue for every render, in the order asked: a preview never lands after the full image
        render_queue = {"concurrency_id": "render", "concurrency_limit": 1}
        space.change(on_full, [state, space, *sliders], [edited, download], **render_queue)
        for slider in sliders:   # release: the mouse let go, or the number box left (Enter + Tab)
            slider.change(on_preview, [state, space, *sliders], [edited], trigger_mode="always_last", **render_queue)
            slider.release(on_full, [state, space, *sliders], [edited, download], **render_queue)
    return app


def serve(models, host: str = "127.0.0.1", port: int = 7860, align: bool = False, face: int | None = None) -> None:
    """Build the page and serve it until interrupted."""
    build_app(models, align, face).launch(server_name=host, server_port=port, show_error=True)
