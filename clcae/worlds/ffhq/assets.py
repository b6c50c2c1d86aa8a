"""The ffhq world's external files: what each is, where it comes from, where it goes, how it is checked.

Nothing is downloaded at run time. ``python -m clcae.worlds.ffhq.assets check`` lists every file
the paper config (``configs/ffhq.yaml``) names, at the paths its params give, and says for each
whether it is there and intact: the size and sha256 where the source publishes or a mirror
records them, else its format (a PyTorch file, not an HTML page: the classic failed Google Drive
download). For each missing or damaged file the message names what it is, where to fetch it and
the path (and param) to put it at (with ``ffhq.verify_checksums: false``, for stand-in files: presence
and format only, as the stage checks them). ``python -m clcae.worlds.ffhq.assets fetch`` downloads
the files that have a direct URL (for users who are online), checked before they are moved into place;
Google Drive links are printed with the path instead (Drive needs a browser for large files).
The stage ``assets`` of ``ffhq/dvc.yaml`` (:func:`run`) runs the check, decodes every image of the
two folders once and writes ``ffhq.assets_report``.

The stage code loads these files with the project's loaders (``load_generator``, ``load_arcface``,
``load_official_encoder``, ...), which check their layout; this module checks the bytes.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from clcae.data import FolderImages, unreadable_files
from clcae.io import atomic_path, file_sha256

MiB = 1 << 20
HTML_STARTS = (b"<!doctype html", b"<html", b"<!DOCTYPE", b"<HTML", b"<head")
TORCH_STARTS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")   # zip (torch.save) or pickle


@dataclass(frozen=True)
class Asset:
    """One external file or folder of the paper config."""
    name: str
    what: str
    param: str                 # the params key that holds its path
    url: str
    size: int | None = None    # bytes, when published or recorded
    sha256: str | None = None  # when published or recorded
    folder: bool = False       # an image folder: checked by its image count
    images: int = 0            # the folder's expected image count
    needed_by: str = ""        # the stages or functions that read it
    checksum_from: str = "the file at the URL"   # where size and sha256 were taken from
    optional: bool = False     # the stages run without it (and say what they use instead)

    @property
    def direct(self) -> bool:
        """A URL a plain HTTP GET downloads (not a Google Drive page, not a dataset behind a form)."""
        return self.url.startswith(("http://", "https://", "file://")) and "drive.google.com" not in self.url \
            and not self.folder


DRIVE = "https://drive.google.com/file/d/{}/view"
TORCHVISION = "https://download.pytorch.org/models/{}"
E4E = "https://github.com/omertov/encoder4editing/raw/main/editings/{}"   # the same files as CLCAE's editings/
CLCAE_CONTRASTIVE = ("https://drive.google.com/drive/folders/19Q75nlaZ8KVdUd6C9s2y6c1cKXuB90TS (CLCAE's README, "
                     "github.com/KumapowerLIU/CLCAE: 'Contrastive model and data for FFHQ')")

MANIFEST: tuple[Asset, ...] = (
    Asset("generator", "StyleGAN2 FFHQ 1024 px config-f, rosinality's conversion (stylegan2-ffhq-config-f.pt, a "
          "legacy pickle of {'g_ema', 'latent_avg': [512], 'g', 'd'}: load_generator reads g_ema and latent_avg)",
          "shared.generator", DRIVE.format("1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT"), size=381_462_551,
          sha256="bae494ef77e32a9cd1792a81a3c167692a0e64f6bcd8b06592ff42917e2ed46e",
          checksum_from="Git LFS mirrors of the file (the Drive file publishes none)", needed_by="synthesize, train_encoder, fit_directions, evaluate"),
    Asset("arcface", "ArcFace IR-SE50 (model_ir_se50.pth, a bare state dict in a legacy pickle: "
          "TreB1eN/InsightFace_Pytorch's weights as linked in pSp's README): the identity loss and metric",
          "ffhq.arcface", DRIVE.format("1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn"),
          size=175_367_323, sha256="a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28",
          checksum_from="Git LFS mirrors; facexlib's release recognition_arcface_ir_se50.pth is the same file",
          needed_by="the ffhq world (train_encoder, evaluate)"),
    Asset("lpips_alexnet", "torchvision's AlexNet (alexnet-owt-7be5be79.pth): LPIPS's backbone; LPIPS's own linear "
          "layers come with the lpips package", "ffhq.lpips_alexnet", TORCHVISION.format("alexnet-owt-7be5be79.pth"),
          size=244_408_911, sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
          checksum_from="torchvision (the name carries the first 8 digits)", needed_by="the ffhq world's perceptual loss, evaluate's lpips"),
    Asset("inception", "torchvision's Inception-v3 (inception_v3_google-0cc3c7bd.pth): Frechet distances "
          "(without it the ArcFace features are used, and named so)", "ffhq.inception",
          TORCHVISION.format("inception_v3_google-0cc3c7bd.pth"), size=108_949_747, optional=True,
          sha256="0cc3c7bd75056d25e46cba549dc184522069b81e9787eff6df84f397bd52a5ef",
          checksum_from="torchvision (the name carries the first 8 digits)", needed_by="evaluate (optional)"),
    Asset("interfacegan_age", "e4e's InterFaceGAN age direction ([1, 512])", "fit_directions.published.age",
          E4E.format("interfacegan_directions/age.pt"), size=2_808,
          sha256="50074516b1629707d89b5e43d6b8abd1792212fa3b961a87a11323d6a5222ae0", needed_by="fit_directions"),
    Asset("interfacegan_smile", "e4e's InterFaceGAN smile direction ([1, 512])", "fit_directions.published.smile",
          E4E.format("interfacegan_directions/smile.pt"), size=2_808,
          sha256="817a7e732b59dee9eba862bec8bd7e8373568443bc9f9731a21cf9b0356f0653", needed_by="fit_directions"),
    Asset("interfacegan_pose", "e4e's InterFaceGAN pose direction ([1, 18, 512]: one unit vector repeated on the "
          "18 W+ layers, saved from cuda:0)", "fit_directions.published.pose",
          E4E.format("interfacegan_directions/pose.pt"), size=37_624,
          sha256="736e0eacc8488fa0b020a2e7bd256b957284c364191dfea693705e5d06d43e7d", needed_by="fit_directions"),
    Asset("ganspace_pca", "GANSpace's FFHQ PCA of W as e4e ships it (ffhq_pca.pt: {'mean': [1, 512], "
          "'comp': [80, 1, 512], 'std': [80]})", "fit_directions.published_pca",
          E4E.format("ganspace_pca/ffhq_pca.pt"), size=167_562,
          sha256="4d7f9df1c96180d9026b9cb8d04753579fbf385f321a9d0e263641601c5e5d36", needed_by="fit_directions"),
    Asset("clcae_encoder", "the released CLCAE FFHQ inversion model (FFHQ_Inversion in CLCAE's README: "
          "{'state_dict': encoder.* and decoder.*, 'opts', 'iter'}, saved from a GPU): load_official_encoder "
          "converts it", "evaluate.released.clcae_released",
          DRIVE.format("1gCsF8mHxjhExswCchz7UpXfe-NvAhIm9"),
          needed_by="evaluate (evaluate.released), train_encoder (init)"),
    Asset("clcae_aligner_image", "the released CLCAE contrastive image encoder (best_model_image.pt: "
          "{'state_dict', 'opts'}, saved from a GPU): load_official_aligner converts it",
          "train_encoder.common.aligner", CLCAE_CONTRASTIVE, optional=True,
          needed_by="train_encoder when train_encoder.common.aligner names it (else the pipeline's own aligner)"),
    Asset("clcae_aligner_latent", "the released CLCAE contrastive latent encoder (best_model_latent.pt: "
          "{'state_dict', 'opts'}, saved from a GPU): load_official_aligner converts it",
          "train_encoder.common.aligner", CLCAE_CONTRASTIVE, optional=True,
          needed_by="train_encoder when train_encoder.common.aligner names it (else the pipeline's own aligner)"),
    Asset("ffhq_images", "FFHQ, 70,000 aligned faces (images1024x1024, PNG): the encoder's training images",
          "ffhq.train_dir", "https://github.com/NVlabs/ffhq-dataset (download_ffhq.py --images; md5 per file in "
          "ffhq-dataset-v2.json)", folder=True, images=70_000,
          needed_by="train_encoder"),
    Asset("celebahq_test", "CelebA-HQ test split as pSp uses it (2,824 aligned faces)", "ffhq.test_dir",
          "CelebAMask-HQ.zip (" + DRIVE.format("1badu11NqxGf6qM3PTTooQDJvQbejgbTv") + "), the images whose CelebA "
          "id is >= 182638 (CelebA-HQ-to-CelebA-mapping.txt: 24,183 / 2,993 / 2,824)",
          folder=True, images=2_824, needed_by="train_encoder (scores), evaluate"),
)
ASSETS = {a.name: a for a in MANIFEST}
# where an optional asset is looked for when its param is unset (listed by `check`, not needed)
DEFAULT_PATHS = {"clcae_aligner_image": "assets/ffhq/best_model_image.pt",
                 "clcae_aligner_latent": "assets/ffhq/best_model_latent.pt"}
# train_encoder.common.aligner names the released contrastive models as a pair [image, latent] (one
# file there is a clcae aligner.pt, not a released model)
RELEASED_PAIR = {"clcae_aligner_image": 0, "clcae_aligner_latent": 1}


def lookup(params, key: str):
    """``params`` value at a dotted ``key`` (dict keys too); None when absent or null."""
    value = params
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
        if value is None:
            return None
    return value


def named_path(asset: Asset, params) -> str | None:
    """The path ``params`` give the asset, or None (a released contrastive model: only as a pair)."""
    value = lookup(params, asset.param)
    if asset.name in RELEASED_PAIR:
        return value[RELEASED_PAIR[asset.name]] if isinstance(value, (list, tuple)) and len(value) == 2 else None
    return value


def torch_hub_file(name: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / name


def locate(asset: Asset, params) -> Path | None:
    """Where ``params`` put the asset (its param, a torch hub cache for null torchvision weights, or a
    fixed path); None when the config does not use it (e.g. no released encoder to evaluate)."""
    value = named_path(asset, params)
    if value is None and asset.name in DEFAULT_PATHS:
        return Path(DEFAULT_PATHS[asset.name])
    if value is None and asset.url.startswith(TORCHVISION.format("")):
        return torch_hub_file(asset.url.rsplit("/", 1)[1])   # ffhq.lpips_alexnet / inception null: the hub cache
    return None if value is None else Path(value)


@dataclass
class Status:
    asset: Asset
    path: Path
    state: str     # ok | unverified | optional (missing, not needed) | missing | corrupt
    detail: str

    @property
    def ok(self) -> bool:
        return self.state in ("ok", "unverified", "optional")

    def message(self) -> str:
        if self.ok:
            return f"{self.path}: {self.asset.name} {self.state} ({self.detail})"
        where = f"put it at {self.path}" + (f" (or set {self.asset.param})" if self.asset.param else "")
        return (f"{self.path}: {self.asset.name} {self.state}: {self.detail}. {self.asset.what}; fetch it from "
                f"{self.asset.url} and {where}")


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def check(asset: Asset, path: Path, hash_files: bool = True) -> Status:
    """Is the asset at ``path`` there and intact? Size and sha256 when known, else its format."""
    if asset.folder:
        if not path.is_dir():
            return Status(asset, path, "missing", "no such folder")
        n = count_images(path)
        if n == 0:
            return Status(asset, path, "corrupt", "the folder holds no PNG/JPEG images")
        if n != asset.images:
            return Status(asset, path, "unverified", f"{n:,} images, the paper's set has {asset.images:,}")
        return Status(asset, path, "ok", f"{n:,} images")
    if not path.is_file():
        return Status(asset, path, "optional" if asset.optional else "missing", "no such file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(512)
    if head.lstrip().lower().startswith(tuple(s.lower() for s in HTML_STARTS)):
        return Status(asset, path, "corrupt", "it is an HTML page, not the file (a download that saved the "
                                              "site's page, e.g. Google Drive's quota or confirm page)")
    if asset.size is not None and size != asset.size:
        return Status(asset, path, "corrupt", f"{size:,} bytes, the file has {asset.size:,} (an interrupted or "
                                              f"wrong download)")
    if asset.sha256 is not None and hash_files:
        digest = file_sha256(path)
        if digest != asset.sha256:
            return Status(asset, path, "corrupt", f"sha256 {digest[:16]}..., the file's is {asset.sha256[:16]}... "
                                                  f"(from {asset.checksum_from})")
        return Status(asset, path, "ok", f"{size / MiB:,.1f} MiB, sha256 matches")
    if not head.startswith(TORCH_STARTS):
        return Status(asset, path, "corrupt", "not a PyTorch file (neither torch.save's zip nor a pickle)")
    return Status(asset, path, "unverified", f"{size / MiB:,.1f} MiB, a PyTorch file; no published checksum")


def format_only(asset: Asset) -> Asset:
    """The asset without its size and sha256: checked for presence and format (not an HTML page)."""
    return dataclasses.replace(asset, size=None, sha256=None)


def require(name: str, path: str | os.PathLike) -> Path:
    """``path`` when the asset ``name`` is there and looks like the file (not an HTML page, a PyTorch
    file), else the project's input error with the message that says what to fetch and where. Size
    and sha256 are the assets stage's check; loaders check the layout (stand-in weights pass)."""
    from clcae.errors import InputError

    status = check(format_only(ASSETS[name]), Path(path), hash_files=False)
    if not status.ok:
        raise InputError(status.message())
    return status.path


def check_all(params, manifest: tuple[Asset, ...] = MANIFEST, hash_files: bool = True) -> list[Status]:
    """The status of every asset the params use."""
    named = [dataclasses.replace(a, optional=False) if a.optional and named_path(a, params) is not None else a
             for a in manifest]   # an optional file the params name is needed
    return [check(a, p, hash_files) for a in named if (p := locate(a, params)) is not None]


def fetch(asset: Asset, path: Path, chunk: int = 4 * MiB) -> Status:
    """Download one asset with a direct URL to ``path``, atomically: checked before it is moved in."""
    if not asset.direct:
        raise ValueError(f"{asset.name}: no direct download ({asset.url}); fetch it by hand and put it at {path}")
    with atomic_path(path) as tmp, urllib.request.urlopen(asset.url) as response, open(tmp, "wb") as out:
        while block := response.read(chunk):
            out.write(block)
        out.close()
        status = check(asset, Path(tmp))
        if not status.ok:
            raise OSError(f"{asset.url}: the download failed its check: {status.detail}")
    return check(asset, path)


def run(params) -> dict:
    """Stage `assets` (ffhq/dvc.yaml): every asset's status into ``ffhq.assets_report``; an error naming
    each missing or damaged one (and where to fetch it) unless all the stages need is in place.
    ``ffhq.verify_checksums: false`` (stand-in files, e.g. the tests') checks presence and format only."""
    from clcae.errors import InputError
    from clcae.io import save_json

    verify = params.ffhq.verify_checksums   # false for stand-ins: what a file is, not whose bytes
    statuses = check_all(params, MANIFEST if verify else tuple(map(format_only, MANIFEST)), hash_files=verify)
    from clcae.worlds.ffhq.folders import undecodable

    folders = {split: FolderImages(Path(path), 1) for split, path in
               (("train", params.ffhq.train_dir), ("test", params.ffhq.test_dir)) if Path(path).is_dir()}
    bad_files = {split: f.skipped + undecodable(f) for split, f in folders.items()}   # headers, then decoding
    report = {"checksums_verified": params.ffhq.verify_checksums,
              "assets": {s.asset.name: {"path": str(s.path), "state": s.state, "detail": s.detail} for s in statuses},
              "unreadable_images": {split: unreadable_files(bad) for split, bad in bad_files.items()},
              "in_place": sum(s.ok for s in statuses), "assets_checked": len(statuses)}
    bad = [s for s in statuses if not s.ok]
    if bad:
        raise InputError(f"{len(bad)} of {len(statuses)} assets missing or damaged "
                         f"(python -m clcae.worlds.ffhq.assets fetch gets the direct downloads):\n"
                         + "\n".join(s.message() for s in bad))
    save_json(report, params.ffhq.assets_report)
    return report


def main(argv: list[str] | None = None) -> int:
    from clcae.config import load_params
    from clcae.errors import ClcaeError

    ap = argparse.ArgumentParser(prog="python -m clcae.worlds.ffhq.assets", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("check", "fetch"))
    ap.add_argument("names", nargs="*", help="assets to fetch (default: every missing one with a direct URL)")
    ap.add_argument("--params", default="params.yaml", help="the config whose paths are checked (configs/ffhq.yaml)")
    ap.add_argument("--no-hash", action="store_true",
                    help="sizes and formats only, no sha256 (hashing the checkpoints takes a while)")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
    except ClcaeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # ffhq.verify_checksums false (stand-in files): presence and format, as the assets stage checks them
    verify = lookup(params, "ffhq.verify_checksums") is not False
    manifest = MANIFEST if verify else tuple(map(format_only, MANIFEST))
    statuses = check_all(params, manifest, hash_files=verify and not args.no_hash)
    if args.command == "fetch":
        wanted = set(args.names) or {s.asset.name for s in statuses if not s.ok}
        for s in statuses:
            if s.asset.name not in wanted or s.ok:
                continue
            if not s.asset.direct:
                print(f"by hand: {s.message()}")
                continue
            print(f"fetching {s.asset.name}: {s.asset.url} -> {s.path}")
            try:
                fetch(ASSETS[s.asset.name], s.path)   # checked against the published size and sha256
            except OSError as e:
                print(f"error: {e}", file=sys.stderr)
        statuses = check_all(params, manifest, hash_files=verify and not args.no_hash)
    for s in statuses:
        print(("ok      " if s.state in ("ok", "unverified") else "absent  " if s.ok else "MISSING " if s.state == "missing" else "CORRUPT ") + s.message())
    bad = [s for s in statuses if not s.ok]
    print(f"{len(statuses) - len(bad)} of {len(statuses)} assets in place" + (f"; {len(bad)} to fetch" if bad else "")
          + ("" if verify else " (ffhq.verify_checksums: false, presence and format checked)"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
