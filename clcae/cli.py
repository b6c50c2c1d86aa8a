"""``clcae``: invert and edit your own photos with a trained encoder, from the command line.

    clcae invert photo.jpg more/*.png --out out/       W, W+ and F reconstructions + latents per photo
    clcae edit photo.jpg --direction smile --strength 3 --out out/
    clcae edit photo.jpg --direction smile --direction yaw --sweep -3 3 7 --out out/
    clcae directions                                   the directions this world has
    clcae align photo.jpg more/*.png --out aligned/    each face's FFHQ crop and its transform
    clcae serve                                        a local web page (http://127.0.0.1:7860)

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
        self._G = self._encoder = None

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


def read_photos(paths: list[str], size: int) -> tuple[list[tuple[Path, torch.Tensor, list[str]]], int]:
    """The readable photos ``(path, uint8 [3, S, S], notes)`` and the count that failed (each
    failure printed as one line)."""
    from clcae.photos import load_photo

    good, failed = [], 0
    for p in paths:
        try:
            image, notes = load_photo(p, size)
            good.append((Path(p), image, notes))
        except ClcaeError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    return good, failed


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, suffixed where two photos share one (``a.png``, ``a.jpg`` -> ``a``, ``a-2``)."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        seen[p.stem] = seen.get(p.stem, 0) + 1
        out.append(p.stem if seen[p.stem] == 1 else f"{p.stem}-{seen[p.stem]}")
    return out


def cmd_invert(args, models: Models) -> int:
    from clcae.images import to_float, to_uint8
    from clcae.inversion import invert
    from clcae.metrics.mse import mse01

    encoder, G = models.encoder, models.G
    photos, failed = read_photos(args.images, encoder.cfg.image_size)
    out = Path(args.out)
    rows = []
    if photos:
        batch = torch.stack([image for _, image, _ in photos])
        inv = invert(encoder, G, batch, batch_size=args.batch_size)
        for i, ((path, _, notes), stem) in enumerate(zip(photos, unique_stems([p for p, _, _ in photos]))):
            written = []
            for space, images in inv.images().items():
                save_png(to_uint8(images[i]), out / f"{stem}_{space}.png")
                written.append(f"{stem}_{space}.png")
            latents = {"w": inv.w[i].cpu(), "wplus": inv.wplus[i].cpu()}
            if inv.f is not None:
                latents["f"] = inv.f[i].cpu()
            save_torch(latents, out / f"{stem}_latents.pt")
            target = to_float(batch[i:i + 1]).to(inv.image_w)
            mse = {s: float(mse01(img[i:i + 1].clamp(-1, 1), target)) for s, img in inv.images().items()}
            rows.append((path.name, " ".join(f"{SPACE[s]} {v:.4f}" for s, v in mse.items()),
                         "; ".join(notes) or "-", len(written) + 1))
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

    directions = models.directions()
    unknown = [d for d in args.direction if d not in directions]
    if unknown:
        raise InputError(f"unknown direction(s) {unknown}; this world has: {', '.join(directions)} (`clcae directions`)")
    if args.strength and len(args.strength) != len(args.direction):
        raise InputError(f"{len(args.direction)} --direction but {len(args.strength)} --strength: give one strength "
                         f"per direction, or none for each direction's own")
    encoder, G = models.encoder, models.G
    photos, failed = read_photos([args.image], encoder.cfg.image_size)
    if not photos:
        return failed
    (path, image, notes), = photos
    inv = invert(encoder, G, image[None], keep_codes=True)
    space = args.space if args.space != "f" or inv.f is not None else "wplus"
    if space != args.space:
        print(f"note: {models.encoder_path} has no F branch; editing in W+", file=sys.stderr)
    editor = Editor.for_encoder(encoder, G, mode=args.edit_mode)
    out, stem = Path(args.out), path.stem
    save_png(to_uint8(inv.images()[space][0]), out / f"{stem}_{space}_inversion.png")
    written = [f"{stem}_{space}_inversion.png"]
    for k, name in enumerate(args.direction):
        d = directions[name]
        if args.sweep:
            start, stop, n = args.sweep
            strengths = torch.linspace(start, stop, int(n)).tolist()
            edited = editor.edit(first_n(inv, 1, len(strengths)), d, torch.tensor(strengths), spaces=(space,))
            file = f"{stem}_{name}_sweep_{space}.png"
            save_image_grid(to_uint8(edited.images[space]), out / file, nrow=len(strengths))
        else:
            strength = args.strength[k] if args.strength else d.strength
            edited = editor.edit(inv, d, strength, spaces=(space,))
            file = f"{stem}_{name}_{strength:+g}_{space}.png"
            save_png(to_uint8(edited.images[space][0]), out / file)
        written.append(file)
    print(f"{path.name}: {'; '.join(notes) or 'used as is'}")
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

    from clcae.faces import FaceDetector, align_face
    from clcae.io import save_text
    from clcae.photos import decode_photo

    detector, out = FaceDetector(args.min_prob), Path(args.out)
    failed, faces_written = 0, 0
    paths = [Path(p) for p in args.images]
    for path, stem in zip(paths, unique_stems(paths)):
        try:
            photo, notes = decode_photo(path)
        except ClcaeError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        faces = detector(photo)
        if args.face is not None:
            faces = faces[args.face:args.face + 1]
        if not faces:
            which = f"no face {args.face}" if args.face is not None else "no face found"
            print(f"error: {path}: {which} (MTCNN, probability >= {args.min_prob}); skipped", file=sys.stderr)
            failed += 1
            continue
        records = []
        for k, face in enumerate(faces):
            k = args.face if args.face is not None else k
            crop, geo = align_face(photo, face.landmarks, args.size)
            save_png(crop, out / f"{stem}_face{k}.png")
            records.append({"face": k, "file": f"{stem}_face{k}.png", "prob": face.prob,
                            "box": face.box.tolist(), "landmarks": face.landmarks.tolist(),
                            "quad": geo.quad.tolist(), "size": args.size,
                            "crop_to_photo": geo.crop_to_photo.tolist()})
        save_text(json.dumps({"photo": str(path), "photo_size": list(photo.shape[-2:]), "notes": notes,
                              "faces": records}, indent=1), out / f"{stem}_faces.json")
        faces_written += len(records)
        print(f"{path.name:<28} {len(records)} face{'s' if len(records) != 1 else ''} -> "
              f"{', '.join(r['file'] for r in records)}" + (f"  ({'; '.join(notes)})" if notes else ""))
    print(f"{faces_written} faces from {len(paths) - failed} photos aligned into {out}, {failed} failed")
    return failed


def cmd_directions(args, models: Models) -> int:
    directions = models.directions()
    print(f"{'direction':<20} {'layers':<8} {'strength':>8}  {'edits':<12} source")
    for name, d in directions.items():
        layers = "all" if d.layers is None else f"{d.layers.first}-{d.layers.last}"
        target = "-" if d.attribute is None else f"{'+' if d.attribute_sign > 0 else '-'}{d.attribute}"
        print(f"{name:<20} {layers:<8} {d.strength:>8g}  {target:<12} {d.source}")
    return 0


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
    sub.add_parser("directions", help="list the directions of the current world")
    al = sub.add_parser("align", help="find each face (MTCNN) and write its FFHQ-aligned crop and transform")
    al.add_argument("images", nargs="+")
    al.add_argument("--out", required=True)
    al.add_argument("--size", type=int, default=256, help="the crop's side (default 256: the paper encoder's input)")
    al.add_argument("--face", type=int, help="only face K (numbered left to right from 0)")
    al.add_argument("--min-prob", type=float, default=0.9, help="MTCNN's face probability to keep (default 0.9)")
    web = sub.add_parser("serve", help="a local web page: upload, W / W+ / F side by side, a slider per direction")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=7860)
    return ap


def cmd_serve(args, models: Models) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InputError("clcae serve needs gradio: pip install 'clcae[web]'") from None
    from clcae.web import serve

    serve(models, args.host, args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "align":   # needs no generator or encoder
            return min(cmd_align(args), 100)
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
