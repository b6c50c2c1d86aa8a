"""``clcae``: invert and edit your own photos with a trained encoder, from the command line.

    clcae invert photo.jpg more/*.png --out out/       W, W+ and F reconstructions + latents per photo
    clcae edit photo.jpg --direction smile --strength 3 --out out/
    clcae edit photo.jpg --direction smile --direction yaw --sweep -3 3 7 --out out/
    clcae directions                                   the directions this world has
    clcae align photo.jpg more/*.png --out aligned/    each face's FFHQ crop and its transform
    clcae serve                                        a local web page (http://127.0.0.1:7860)
    clcae convert-generator network-snapshot.pkl G.pt  a StyleGAN2-ADA snapshot -> rosinality layout

Defaults come from ``params.yaml`` (``--params``) and the pipeline's outputs: the generator
``shared.generator``, the encoder ``<train_encoder.out_dir>/<variant>/encoder.pt``, the directions
``fit_directions.out_dir``; a missing output names the ``dvc repro`` target that makes it. Photos
of any size, mode and orientation are accepted (``clcae.photos``); a photo that cannot be read is
reported on one line and the others still complete; the exit code is the number that failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from clcae.config import load_params
from clcae.errors import ClcaeError, InputError
from clcae.io import atomic_path, save_image_grid, save_torch
from clcae.spaces import LABELS as SPACE


def save_png(image_u8: torch.Tensor, path: Path) -> None:
    """uint8 ``[3, H, W]`` -> PNG (atomic)."""
    from clcae.photos import to_pil

    with atomic_path(path) as tmp:
        to_pil(image_u8).save(tmp, format="PNG")


class Models:
    """The generator, encoder and directions the commands use, found from params or flags."""

    def __init__(self, args):
        params = load_params(args.params) if Path(args.params).is_file() else None
        if params is None and not (args.generator and (args.encoder or args.command == "directions")):
            raise InputError(f"{args.params}: params file not found (or pass --generator and --encoder)")
        self.device = torch.device(args.device)
        self.generator_path = Path(args.generator or params.shared.generator)
        self.encoder_path = Path(args.encoder) if args.encoder else \
            Path(params.train_encoder.out_dir) / args.variant / "encoder.pt"
        self.directions_path = Path(args.directions) if args.directions else Path(params.fit_directions.out_dir)
        self.variant = args.variant
        self.world = params.shared.world if params is not None else None
        self._G = self._encoder = None

    def aligns(self, args) -> tuple[bool, str]:
        """Whether photos are FFHQ-aligned before the encoder, and why (printed): on in the ffhq
        world (its encoders learnt FFHQ-aligned faces), off in procfaces (its faces are centred);
        without a params file, on for encoders of 256 px and more. ``--align`` / ``--no-align`` decide."""
        if args.align is not None:
            return args.align, "--align" if args.align else "--no-align"
        if self.world is not None:
            on = self.world == "ffhq"
            return on, (f"the {self.world} world's encoder expects FFHQ-aligned faces" if on else
                        f"the {self.world} world's faces are centred already; --align to detect and align")
        on = self.encoder.cfg.image_size >= 256
        return on, f"no params file: the encoder takes {self.encoder.cfg.image_size} px ({'>=' if on else '<'} 256)"

    @property
    def G(self):
        from clcae.nets.stylegan2 import load_generator

        if self._G is None:
            if not self.generator_path.is_file():
                raise InputError(f"{self.generator_path}: generator not found (shared.generator)")
            self._G = load_generator(self.generator_path, device=self.device).eval()
        return self._G

    @property
    def encoder(self):
        """Our ``encoder.pt`` or the released CLCAE checkpoint (``--encoder FFHQ_Inversion.pt``), converted."""
        from clcae.inversion import load_any_encoder

        if self._encoder is None:
            if not self.encoder_path.is_file():
                raise InputError(f"{self.encoder_path}: encoder not found; make it with "
                                 f"`dvc repro train_encoder@{self.variant}`")
            self._encoder = load_any_encoder(self.encoder_path, self.G, device=self.device)
        return self._encoder

    def directions(self) -> dict:
        from clcae.editing import read_directions

        if not (self.directions_path / "directions.json").is_file():
            raise InputError(f"{self.directions_path}: no directions.json; make it with `dvc repro fit_directions`")
        return read_directions(self.directions_path, self.G.style_dim, self.G.n_latent)


def read_inputs(args, models: Models, paths: list[str]):
    """The encoder's inputs from photos (aligned or centre-cropped, :func:`clcae.photos.encoder_inputs`)
    and the count of photos that gave none (each named on one line)."""
    from clcae.photos import encoder_inputs

    align, why = models.aligns(args)
    print(f"{'aligning faces (MTCNN, FFHQ crop)' if align else 'not aligning (centre crop)'}: {why}", file=sys.stderr)
    inputs, failures = encoder_inputs(paths, models.encoder.cfg.image_size, align, args.face)
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    if args.paste_back and not align:
        print("note: --paste-back needs aligned faces (--align); nothing pasted", file=sys.stderr)
    return inputs, len(failures)


def cmd_invert(args, models: Models) -> int:
    from clcae.images import to_float, to_uint8
    from clcae.inversion import invert
    from clcae.metrics.mse import mse01
    from clcae.photos import by_photo, paste_into_photo

    encoder, G = models.encoder, models.G
    photos, failed = read_inputs(args, models, args.images)
    out = Path(args.out)
    rows = []
    if photos:
        batch = torch.stack([p.image for p in photos])
        inv = invert(encoder, G, batch, batch_size=args.batch_size)
        for i, item in enumerate(photos):
            stem, written = item.name, []
            for space, images in inv.images().items():
                save_png(to_uint8(images[i]), out / f"{stem}_{space}.png")
                written.append(f"{stem}_{space}.png")
            latents = {"w": inv.w[i].cpu(), "wplus": inv.wplus[i].cpu()}
            if inv.f is not None:
                latents["f"] = inv.f[i].cpu()
            save_torch(latents, out / f"{stem}_latents.pt")
            target = to_float(batch[i:i + 1]).to(inv.image_w)
            mse = {s: float(mse01(img[i:i + 1].clamp(-1, 1), target)) for s, img in inv.images().items()}
            rows.append((stem, " ".join(f"{SPACE[s]} {v:.4f}" for s, v in mse.items()),
                         "; ".join(item.notes) or "-", len(written) + 1))
        if args.paste_back:   # each photo once, with all its faces' reconstructions pasted in
            for stem, rows_of_photo in by_photo(photos).items():
                if photos[rows_of_photo[0]].alignment is None:
                    continue
                for space, images in inv.images().items():
                    pasted = paste_into_photo([photos[i] for i in rows_of_photo], images[rows_of_photo])
                    save_png(pasted, out / f"{stem}_{space}_pasted.png")
    if rows:
        print(f"{'photo':<28} {'MSE [0, 1] by space':<36} {'files':>5}  notes")
        for name, mse, notes, n in rows:
            print(f"{name:<28} {mse:<36} {n:>5}  {notes}")
    print(f"{len(photos)} inverted into {out}, {failed} failed")
    return failed


def cmd_edit(args, models: Models) -> int:
    from clcae.editing import Editor
    from clcae.images import to_uint8
    from clcae.inversion import invert
    from clcae.photos import paste_into_photo

    directions = models.directions()
    unknown = [d for d in args.direction if d not in directions]
    if unknown:
        raise InputError(f"unknown direction(s) {unknown}; this world has: {', '.join(directions)} (`clcae directions`)")
    if args.strength and len(args.strength) != len(args.direction):
        raise InputError(f"{len(args.direction)} --direction but {len(args.strength)} --strength: give one strength "
                         f"per direction, or none for each direction's own")
    encoder, G = models.encoder, models.G
    photos, failed = read_inputs(args, models, [args.image])
    if not photos:
        return failed
    inv = invert(encoder, G, torch.stack([p.image for p in photos]), keep_codes=True)
    space = args.space if args.space != "f" or inv.f is not None else "wplus"
    if space != args.space:
        print(f"note: {models.encoder_path} has no F branch; editing in W+", file=sys.stderr)
    editor = Editor.for_encoder(encoder, G, mode=args.edit_mode)
    out, written = Path(args.out), []
    aligned = [i for i, p in enumerate(photos) if p.alignment is not None]
    paste = args.paste_back and bool(aligned)
    if paste and args.sweep:
        print("note: --paste-back writes single edits, not sweeps; nothing pasted", file=sys.stderr)
        paste = False
    photo_stem = photos[0].stem

    def save_pasted(images: torch.Tensor, file: str) -> None:   # every face's crop into the one photo
        save_png(paste_into_photo([photos[i] for i in aligned], images[aligned]), out / file)
        written.append(file)

    for i, item in enumerate(photos):
        save_png(to_uint8(inv.images()[space][i]), out / f"{item.name}_{space}_inversion.png")
        written.append(f"{item.name}_{space}_inversion.png")
    if paste:
        save_pasted(inv.images()[space], f"{photo_stem}_{space}_inversion_pasted.png")
    for k, name in enumerate(args.direction):
        d = directions[name]
        if args.sweep:
            start, stop, n = args.sweep
            strengths = torch.linspace(start, stop, int(n)).tolist()
            for i, item in enumerate(photos):
                edited = editor.edit(first_n(inv.select(torch.tensor([i])), 1, len(strengths)), d,
                                     torch.tensor(strengths), spaces=(space,))
                file = f"{item.name}_{name}_sweep_{space}.png"
                save_image_grid(to_uint8(edited.images[space]), out / file, nrow=len(strengths))
                written.append(file)
        else:
            strength = args.strength[k] if args.strength else d.strength
            edited = editor.edit(inv, d, strength, spaces=(space,))
            for i, item in enumerate(photos):
                file = f"{item.name}_{name}_{strength:+g}_{space}.png"
                save_png(to_uint8(edited.images[space][i]), out / file)
                written.append(file)
            if paste:
                save_pasted(edited.images[space], f"{photo_stem}_{name}_{strength:+g}_{space}_pasted.png")
    for item in photos:
        print(f"{item.name}: {'; '.join(item.notes) or 'used as is'}")
    for file in written:
        print(f"wrote {out / file}")
    return failed


def first_n(inversion, i: int, repeat: int):
    """The first ``i`` images of an Inversion, each repeated ``repeat`` times (one row of a sweep)."""
    return inversion.select(torch.arange(i).repeat_interleave(repeat))


def cmd_align(args) -> int:
    """Every face of every photo: ``<stem>_face<K>.png`` (the FFHQ crop, faces numbered left to right)
    and ``<stem>_faces.json`` (per face: box, probability, landmarks, quad, crop -> photo matrix).
    A photo without a face is named and counted in the exit code, like an unreadable one."""
    import json

    from clcae.faces import FaceDetector
    from clcae.io import save_text
    from clcae.photos import by_photo, encoder_inputs

    out = Path(args.out)
    inputs, failures = encoder_inputs(args.images, args.size, True, args.face, FaceDetector(args.min_prob))
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    groups = by_photo(inputs)
    for rows_of_photo in groups.values():
        items = [inputs[i] for i in rows_of_photo]
        path = items[0].path
        records = []
        for item in items:
            save_png(item.image, out / f"{item.name}.png")
            geo, found = item.alignment, item.detection
            records.append({"face": item.face, "file": f"{item.name}.png", "prob": found.prob,
                            "box": found.box.tolist(), "landmarks": found.landmarks.tolist(),
                            "mtcnn_landmarks": found.mtcnn_landmarks.tolist(),
                            "quad": geo.quad.tolist(), "size": args.size, "crop_to_photo": geo.crop_to_photo.tolist()})
        stem, notes = items[0].stem, items[0].notes[:-1]   # the photo's notes, not the face's
        save_text(json.dumps({"photo": str(path), "photo_size": list(items[0].photo.shape[-2:]), "notes": notes,
                              "faces": records}, indent=1), out / f"{stem}_faces.json")
        print(f"{path.name:<28} {len(records)} face{'s' if len(records) != 1 else ''} -> "
              f"{', '.join(r['file'] for r in records)}" + (f"  ({'; '.join(notes)})" if notes else ""))
    print(f"{len(inputs)} faces from {len(groups)} photos aligned into {out}, {len(failures)} failed")
    return len(failures)


def cmd_convert_generator(args) -> int:
    """A StyleGAN2-ADA ``network-snapshot-*.pkl`` -> a rosinality-layout ``.pt`` that every tool reads.

    The snapshot is read as data (``clcae.nets.stylegan2_ada``: nothing in the pickle runs); its
    ``G_ema`` is converted with ``w_avg`` as ``latent_avg`` and its ``conv_clamp`` kept. The converted
    generator's render of a few seeded z is compared with the file's own ``G_ema`` weights read back."""
    from clcae.nets.stylegan2 import load_generator, save_generator

    src, out = Path(args.snapshot), Path(args.out)
    if src.suffix != ".pkl":
        raise InputError(f"{src}: expected a StyleGAN2-ADA snapshot (.pkl); a .pt generator needs no conversion")
    G = load_generator(src)
    save_generator(G, out)
    back = load_generator(out)
    z = torch.randn(2, G.style_dim, generator=torch.Generator().manual_seed(0))
    same = torch.equal(G(z), back(z))
    clamp = f", conv_clamp {G.conv_clamp:g}" if G.conv_clamp is not None else ""
    print(f"{src} -> {out}: {G.size} px, style_dim {G.style_dim}, {G.n_mlp}-layer mapping, "
          f"{G.n_latent} w+ layers{clamp}; w_avg copied as latent_avg; read back {'identical' if same else 'DIFFERENT'}")
    if not same:
        raise InputError(f"{out}: the written generator renders differently from {src}")
    return 0


def cmd_directions(args, models: Models) -> int:
    directions = models.directions()
    print(f"{'direction':<20} {'layers':<8} {'strength':>8}  {'edits':<12} source")
    for name, d in directions.items():
        layers = "all" if d.layers is None else f"{d.layers.first}-{d.layers.last}"
        target = "-" if d.attribute is None else f"{'+' if d.attribute_sign > 0 else '-'}{d.attribute}"
        print(f"{name:<20} {layers:<8} {d.strength:>8g}  {target:<12} {d.source}")
    return 0


def faces_options(sub: argparse.ArgumentParser, paste_back: bool = True) -> None:
    """--align / --no-align, --face, --paste-back: how photos become the encoder's input and go back."""
    group = sub.add_mutually_exclusive_group()
    group.add_argument("--align", dest="align", action="store_true", default=None,
                       help="detect faces (MTCNN) and take each one's FFHQ crop (default in the ffhq world)")
    group.add_argument("--no-align", dest="align", action="store_false",
                       help="centre-crop the photo as it is (default in the procfaces world; for aligned crops)")
    sub.add_argument("--face", type=int, help="only face K of each photo (numbered left to right from 0)")
    if paste_back:   # the page always shows aligned edits pasted back
        sub.add_argument("--paste-back", action="store_true",
                         help="also write each result pasted back into the whole photo (<stem>_..._pasted.png)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="clcae", description="Invert and edit photos with a trained CLCAE encoder.")
    ap.add_argument("--params", default="params.yaml", help="where defaults come from (default: params.yaml)")
    ap.add_argument("--variant", default="clcae", help="a train_encoder variant (default: clcae)")
    ap.add_argument("--encoder", help="an encoder.pt, or the released CLCAE FFHQ_Inversion.pt "
                    "(default: <train_encoder.out_dir>/<variant>/encoder.pt)")
    ap.add_argument("--generator", help="a generator checkpoint (default: shared.generator)")
    ap.add_argument("--directions", help="a fit_directions output folder (default: fit_directions.out_dir)")
    ap.add_argument("--device", default="cpu")
    sub = ap.add_subparsers(dest="command", required=True)
    inv = sub.add_parser("invert", help="W, W+ and F reconstructions and latents of photos")
    inv.add_argument("images", nargs="+")
    inv.add_argument("--out", required=True)
    inv.add_argument("--batch-size", type=int, default=16)
    faces_options(inv)
    ed = sub.add_parser("edit", help="edit a photo along directions")
    ed.add_argument("image")
    ed.add_argument("--direction", action="append", required=True, help="repeat for several (one file each)")
    ed.add_argument("--strength", action="append", type=float, help="one per --direction (default: its own)")
    ed.add_argument("--space", choices=("f", "wplus", "w"), default="f")
    ed.add_argument("--edit-mode", choices=("encoder", "latent"), default="encoder",
                    help="encoder: the official CLCAE edit (w moved inside the encoder, w+ and f computed again); "
                         "latent: w+ + d with f shifted by G5 (e4e / HFGI style)")
    ed.add_argument("--sweep", nargs=3, type=float, metavar=("FROM", "TO", "N"), help="a strip of N strengths")
    ed.add_argument("--out", required=True)
    faces_options(ed)
    sub.add_parser("directions", help="list the directions of the current world")
    al = sub.add_parser("align", help="find each face (MTCNN) and write its FFHQ-aligned crop and transform")
    al.add_argument("images", nargs="+")
    al.add_argument("--out", required=True)
    al.add_argument("--size", type=int, default=256, help="the crop's side (default 256: the paper encoder's input)")
    al.add_argument("--face", type=int, help="only face K (numbered left to right from 0)")
    al.add_argument("--min-prob", type=float, default=0.9, help="MTCNN's face probability to keep (default 0.9)")
    cg = sub.add_parser("convert-generator", help="a StyleGAN2-ADA network-snapshot-*.pkl -> a rosinality-layout "
                                                  ".pt (read as data: nothing in the pickle runs)")
    cg.add_argument("snapshot", help="network-snapshot-*.pkl of NVlabs' stylegan2-ada-pytorch (its G_ema is taken)")
    cg.add_argument("out", help="the .pt to write ({'g_ema', 'latent_avg'[, 'conv_clamp']}; shared.generator)")
    web = sub.add_parser("serve", help="a local web page: upload, W / W+ / F side by side, a slider per direction")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=7860)
    faces_options(web, paste_back=False)
    return ap


def cmd_serve(args, models: Models) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InputError("clcae serve needs gradio: pip install 'clcae[web]'") from None
    from clcae.web import serve

    align, why = models.aligns(args)
    print(f"{'aligning faces (MTCNN, FFHQ crop), edits pasted back' if align else 'not aligning (centre crop)'}: {why}",
          file=sys.stderr)
    serve(models, args.host, args.port, align, args.face)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "align":   # needs no generator or encoder
            return min(cmd_align(args), 100)
        if args.command == "convert-generator":
            with torch.inference_mode():
                return cmd_convert_generator(args)
        models = Models(args)
        if args.command == "serve":   # a server, not one batch: its handlers take inference mode themselves
            return cmd_serve(args, models)
        with torch.inference_mode():
            code = {"invert": cmd_invert, "edit": cmd_edit, "directions": cmd_directions}[args.command](args, models)
    except ClcaeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return min(code, 100)


if __name__ == "__main__":
    raise SystemExit(main())
