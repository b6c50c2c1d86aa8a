"""Editing: per-image latency of ``Editor.edit`` in W, W+ and F, and of invert + edit.

* ``world``: the default world's generator (``shared.generator``) and encoder
  (``data/encoder/clcae/encoder.pt`` when trained, else a fresh one: speed does not depend on
  the weights), 64 px, at batch 32 (one image at a time too: the web page's case);
* ``paper``: a randomly initialised 1024 px config-f generator and the IR-SE50 encoder at
  256 px, batch 1, on the CPU (and batch 8 on CUDA when there is one).

Each space is timed alone (``spaces=('f',)`` renders G5(w+), G5(w+') and G(w+', f')), then all
three, then ``invert`` followed by an F edit (what ``clcae edit`` does for a new photo), then the
web page's slider: a move's preview (the generator stopped at the encoder's side,
``clcae.web.PreviewGenerator``) and the full-resolution render on release, each an F edit of the
kept inversion with the sliders' combined move, and the paste-back of the full edit into a photo
of twice the generator's side (``clcae.photos.paste_faces``).
Medians over the timed repeats after a warm-up; ms per image and images/s.

Run: ``python benchmarks/editing.py [--device cuda] [--repeats 5] [--only world|paper]``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from encoder import PAPER_G, PAPER_SIZE, paper_config, paper_generator, peak_rss_mib, sync  # noqa: E402  (benchmarks/encoder.py)


def median_seconds(fn, device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def world_parts(device, notes):
    from clcae.config import load_params
    from clcae.inversion import load_encoder
    from clcae.nets.stylegan2 import load_generator
    from clcae.pipeline.train_encoder import build_encoder

    params = load_params(ROOT / "params.yaml")
    G = load_generator(ROOT / params.shared.generator, device=device).eval()
    path = ROOT / params.train_encoder.out_dir / "clcae" / "encoder.pt"
    if path.is_file():
        encoder = load_encoder(path, device=device)
        notes.append(f"world: the trained encoder {path.relative_to(ROOT)}")
    else:
        encoder = build_encoder(params.train_encoder.variant("clcae"), G, G.size).to(device).eval()
        notes.append("world: a freshly initialised encoder (no data/encoder/clcae/encoder.pt)")
    return G, encoder


def paper_parts(device, notes):
    from clcae.nets.encoder import CLCAEEncoder, EncoderConfig

    G = paper_generator(device)
    cfg = paper_config(notes)
    encoder = CLCAEEncoder(EncoderConfig.from_generator(G, PAPER_SIZE, num_layers=cfg.num_layers, width=cfg.width,
                                                        heads=cfg.heads)).to(device).eval()
    notes.append("paper: random weights (1024 px config-f generator, IR-SE50 encoder at 256 px)")
    return G, encoder


def cases(G, encoder, batch: int, device, warmup: int, repeats: int) -> list[dict]:
    from clcae.editing import Direction, Editor
    from clcae.faces import Alignment
    from clcae.images import to_uint8
    from clcae.inversion import invert
    from clcae.photos import paste_faces
    from clcae.web import slider_editors

    size = encoder.cfg.image_size
    with torch.inference_mode():
        z = torch.randn(batch, G.style_dim, generator=torch.Generator().manual_seed(1)).to(device)
        x = torch.nn.functional.interpolate(G(z), size=size, mode="bilinear", antialias=True).clamp(-1, 1)
    direction = Direction("bench", torch.nn.functional.normalize(torch.randn(G.style_dim), dim=0))
    editor = Editor.for_encoder(encoder, G, batch_size=batch)
    inv = invert(encoder, G, x, batch_size=batch, keep_codes=True)
    full_editors, preview_editors = slider_editors(encoder, G)
    base = full_editors["f"].base_features(inv)                   # the page renders it once per photo
    move = editor.combined_delta([(direction, 2.0)])
    photo = torch.zeros(3, 2 * G.size, 2 * G.size, dtype=torch.uint8)
    face = Alignment(torch.tensor([[0.5, 0.5], [0.5, 1.5], [1.5, 1.5], [1.5, 0.5]], dtype=torch.float64) * G.size, G.size)
    full = to_uint8(editor.apply(inv, move, spaces=("f",)).images["f"][:1]).cpu()
    rows = []
    for label, fn in (("edit W", lambda: editor.edit(inv, direction, 2.0, spaces=("w",))),
                      ("edit W+", lambda: editor.edit(inv, direction, 2.0, spaces=("wplus",))),
                      ("edit F", lambda: editor.edit(inv, direction, 2.0, spaces=("f",))),
                      ("edit W, W+, F", lambda: editor.edit(inv, direction, 2.0)),
                      ("invert + edit F", lambda: editor.edit(invert(encoder, G, x, batch_size=batch, keep_codes=True), direction,
                                                              2.0, spaces=("f",))),
                      ("slider preview F", lambda: preview_editors["f"].apply(inv, move, ("f",), g_base=base)),
                      ("slider full F", lambda: full_editors["f"].apply(inv, move, ("f",), g_base=base)),
                      ("paste back 1 face", lambda: paste_faces(photo, [(full[0], face)]))):
        s = median_seconds(fn, device, warmup, repeats)
        rows.append({"case": label, "batch": batch, "ms_per_image": 1000 * s / batch, "img_per_s": batch / s})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--only", choices=("world", "paper"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    notes: list[str] = []
    print(f"# editing benchmark: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    rows = []
    if args.only in (None, "world"):
        G, encoder = world_parts(device, notes)
        for batch in (32, 1):
            rows += [{"setting": f"world {G.size} px", **r} for r in cases(G, encoder, batch, device, args.warmup,
                                                                            args.repeats)]
    if args.only in (None, "paper"):
        G, encoder = paper_parts(device, notes)
        batch = 8 if device.type == "cuda" else 1
        rows += [{"setting": f"paper {PAPER_G} px", **r} for r in cases(G, encoder, batch, device, 0 if device.type
                                                                          == "cpu" else 1, 1 if device.type == "cpu"
                                                                          else args.repeats)]
    print(f"{'setting':<16} {'case':<18} {'batch':>5} {'ms/image':>10} {'img/s':>8}")
    for r in rows:
        print(f"{r['setting']:<16} {r['case']:<18} {r['batch']:>5} {r['ms_per_image']:>10.1f} {r['img_per_s']:>8.2f}")
    print(f"peak RSS {peak_rss_mib() / 1024:.2f} GiB")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
