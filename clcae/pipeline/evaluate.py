"""Stage `evaluate`: every trained variant on the world's test split.

Reconstruction: each variant inverts the test images; for each space it trains (W only where
the variant's loss trains G(w): the pSp-style baseline's w is never trained as a W code) the
registered image metrics (``clcae.metrics``: MSE on [0, 1], pSp's L2, PSNR, SSIM, MS-SSIM, LPIPS
when its AlexNet weights are there, else recorded as unavailable with the reason), the world's
perceptual distance and identity similarity, per image; a Frechet distance of each space's
reconstructions to the real test images through the world's features; the inversion time per
image (encoder + the final render).

Editing (CLCAE's section 3.3, scored as e4e and HFGI do): the first ``edit_images`` test images'
inversions are edited along each direction in every space over a strength sweep and judged by the
world (attribute change, drift of the other attributes, identity kept, Frechet distance of the
edited set to the real test images); e4e's latent editing consistency at the headline strength.
Skipped, with the reason in the metrics, when the world reads no attributes.

Writes per-image CSVs (``reports/evaluate/``), ``reports/metrics.json`` and PNG figures
(``reports/evaluate/figures/``).
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from clcae.data import unreadable_files
from clcae.editing import Editor, read_directions
from clcae.editing.scores import EditJudges, edit_sweep, editing_consistency
from clcae.errors import ConfigError, InputError
from clcae.images import to_float, to_uint8
from clcae.inversion import invert, load_any_encoder, load_encoder
from clcae.io import save_csv, save_figure, save_image_grid, save_json
from clcae.metrics import MetricUnavailable, get_metric
from clcae.metrics.frechet import FrechetReference
from clcae.metrics.runtime import seconds_per_image
from clcae.metrics.verification import same_person_threshold
from clcae.scoring import score_reconstructions
from clcae.spaces import LATENT_EDIT, SPACES

# ----------------------------------------------------------------------------- helpers


def first(inversion, n: int):
    """The first ``n`` images of an Inversion."""
    return inversion.select(slice(0, n))


def judge_split(world, images, batch_size: int) -> dict[str, torch.Tensor]:
    """One pass of the world's judges over an image set: ``{'identity' [N, D], 'features' [N, D']}``
    on the CPU (the same-person threshold, the Frechet reference and the targets' identities)."""
    identity, features = [], []
    with torch.inference_mode():
        for idx in torch.arange(len(images)).split(batch_size):
            readout = world.describe(to_float(images.batch(idx)).to(world.device))
            identity.append(readout["identity"].float().cpu())
            features.append(readout["features"].float().cpu())
    return {"identity": torch.cat(identity), "features": torch.cat(features)}


def world_threshold(identity: torch.Tensor, labels) -> float | None:
    """The world's same-person cosine threshold from its verification curve on the test split's
    identity embeddings (None when the test images carry no person ids)."""
    if labels is None or "person_id" not in labels:
        return None
    return same_person_threshold(identity, torch.tensor(labels["person_id"].to_numpy()))


def metric_context(names: list[str], lpips_alexnet: str | None, device) -> tuple[list[str], dict, dict]:
    """The image metrics that can run here, their shared context and ``{name: reason}`` for the
    ones that cannot (LPIPS without its AlexNet weights: never with stand-in weights)."""
    from clcae.metrics.lpips import load_lpips_alex

    ctx, unavailable = {}, {}
    for name in names:
        get_metric(name)   # an unknown name fails here, listing the known ones
    if "lpips" in names:
        try:
            ctx["lpips_net"] = load_lpips_alex(lpips_alexnet, how_to_point="set ffhq.lpips_alexnet").to(device)
        except MetricUnavailable as e:
            unavailable["lpips"] = e.reason
        except FileNotFoundError as e:   # the loader's own message (names the expected file)
            unavailable["lpips"] = str(e)
    return [n for n in names if n not in unavailable], ctx, unavailable


def load_variant(params, variant: str, G, device):
    """A trained variant's encoder, or a released one (``evaluate.released``: converted if official)."""
    released = params.evaluate.released
    if variant in released:
        try:
            return load_any_encoder(released[variant], G, device)
        except FileNotFoundError as e:
            raise InputError(f"{e} (evaluate.released.{variant}; `python -m clcae.worlds.ffhq.assets check` lists the files)") from None
    path = Path(params.train_encoder.out_dir) / variant / "encoder.pt"
    if not path.is_file():
        raise InputError(f"{path}: encoder of variant {variant!r} not found (run `dvc repro train_encoder@{variant}`)")
    return load_encoder(path, device=device)


def evaluated_variants(params) -> list[str]:
    """``evaluate.variants``, trained or released names (default: every train_encoder variant, then
    every released encoder); e.g. ``[clcae_released]`` evaluates a released model without training."""
    cfg, trained = params.evaluate, params.train_encoder.variants
    clash = [name for name in cfg.released if name in trained]
    if clash:
        raise ConfigError(f"evaluate.released: {clash} are train_encoder variants too; give released encoders "
                          f"names of their own (e.g. {clash[0]}_released)")
    unknown = [v for v in cfg.variants if v not in trained and v not in cfg.released]
    if unknown:
        raise ConfigError(f"evaluate.variants: {unknown} are neither train_encoder.variants {list(trained)} nor "
                          f"evaluate.released {list(cfg.released)}")
    return list(cfg.variants) or [*trained, *cfg.released]


def final_render_seconds(encoder, G, x: torch.Tensor) -> float:
    """Seconds per image of encoder + the variant's final render (G(w+, f), or G(w+) without f),
    as the papers time an inversion method."""
    layer = encoder.cfg.feature_layer

    def run(batch):
        out = encoder(batch)
        if out.f is None:
            return G.synthesis(out.wplus)
        return G.synthesis(out.wplus, feature=out.f, feature_layer=layer, feature_insert=encoder.cfg.feature_insert)
    with torch.inference_mode():
        return seconds_per_image(run, x)


# ----------------------------------------------------------------------------- reconstruction


def reconstruction_scores(world, images_by_space: dict, inputs: torch.Tensor, target_id: torch.Tensor,
                          names: list[str], ctx: dict, real: FrechetReference,
                          batch_size: int) -> tuple[pd.DataFrame, dict]:
    """Per-image figures of every space (``target_id`` [N, D]: the inputs' identity embeddings) ->
    (frame: space, image, one column per metric; {space: Frechet distance to the real test images})."""
    cols: dict[str, dict[str, list]] = {space: {} for space in images_by_space}
    feats: dict[str, list] = {space: [] for space in images_by_space}
    target_id = target_id.to(inputs.device)
    for idx in torch.arange(len(inputs)).split(batch_size):   # each target judged once, its spaces together
        scored = score_reconstructions(world, {s: images[idx] for s, images in images_by_space.items()},
                                       inputs[idx], names, ctx, target_id[idx])
        for space, (figures, features) in scored.items():
            for name, values in figures.items():
                cols[space].setdefault(name, []).append(values)
            feats[space].append(features.float().cpu())
    fd = {space: real.distance(torch.cat(f)) for space, f in feats.items()}
    frames = [pd.DataFrame({"space": space, "image": range(len(inputs)),
                            **{k: torch.cat(v).float().cpu().numpy() for k, v in c.items()}})
              for space, c in cols.items()]
    return pd.concat(frames, ignore_index=True), fd


def reconstruction_grid(inputs: torch.Tensor, images: dict[str, dict], path: Path, n: int = 8) -> None:
    """Rows: test images; columns: input, then each variant's renders (its scored spaces)."""
    columns = [inputs[:n]] + [img[:n] for by_space in images.values() for img in by_space.values()]
    grid = torch.stack([c.clamp(-1, 1).cpu() for c in columns], 1).flatten(0, 1)
    save_image_grid(to_uint8(grid), path, nrow=len(columns))


# ----------------------------------------------------------------------------- editing


def summarise(per_set: pd.DataFrame, consistency: pd.DataFrame, strength: float, fd_name: str) -> dict:
    """{space: {direction: figures}} at ``+-strength`` (both signs pooled), the unedited
    reconstruction's Frechet distance beside the edited one, and the consistency."""
    at = per_set[per_set.strength.abs() == strength]
    out: dict = {}
    for (space, name), rows in at.groupby(["space", "direction"]):
        lec = consistency[(consistency.space == space) & (consistency.direction == name)]
        base = per_set[(per_set.space == space) & (per_set.direction == name) & (per_set.strength == 0)]
        out.setdefault(space, {})[name] = {
            "right_way": rows.right_way.mean(), "identity_kept": rows.identity_kept.mean(),
            "identity": rows.identity.mean(), "target_gain": rows.target_gain.mean(),
            "other_drift": rows.other_drift.mean(), fd_name: rows.frechet.mean(),
            f"{fd_name}_unedited": base.frechet.mean(),
            "lec_perceptual": lec.perceptual.mean(), "lec_latent": lec.latent.mean()}
    return {s: {d: {k: round(float(v), 5) for k, v in f.items() if v == v} for d, f in ds.items()}
            for s, ds in out.items()}


def plot_curves(per_set: pd.DataFrame, fd_name: str, path: Path) -> None:
    """Rows: target change, other drift, identity, Frechet; columns: directions; lines: variant x space."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(per_set.direction))
    rows = [("target_change", "target attribute change"), ("other_drift", "other attributes |change|"),
            ("identity", "identity cos to input"), ("frechet", fd_name)]
    fig, axes = plt.subplots(len(rows), len(names), figsize=(3.2 * len(names), 2.4 * len(rows)), squeeze=False)
    styles = {"w": ":", "wplus": "--", "f": "-", "wplus_latent": (0, (1, 1)), "f_latent": "-."}
    variants = list(dict.fromkeys(per_set.variant))
    for (variant, space), frame in per_set.groupby(["variant", "space"], sort=False):
        for j, name in enumerate(names):
            d = frame[frame.direction == name].sort_values("strength")
            for i, (col, _) in enumerate(rows):
                axes[i, j].plot(d.strength, d[col], linestyle=styles.get(space, "-"), marker=".",
                                label=f"{variant} {space}", color=f"C{variants.index(variant)}")
    for j, name in enumerate(names):
        axes[0, j].set_title(name)
        axes[-1, j].set_xlabel("strength")
    for i, (_, label) in enumerate(rows):
        axes[i, 0].set_ylabel(label)
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def edit_grid(editor: Editor, inversion, directions: dict, strengths: list[float], space: str, path: Path) -> None:
    """One test image: rows = directions, columns = the strengths (0: the reconstruction)."""
    one = first(inversion, 1)
    rows = [torch.cat([editor.edit(one, d, s, spaces=(space,)).images[space] for s in strengths])
            for d in directions.values()]
    save_image_grid(to_uint8(torch.cat(rows).clamp(-1, 1)).cpu(), path, nrow=len(strengths))


def evaluate_editing(G, world, variant: str, encoder, inputs: torch.Tensor, spaces: tuple[str, ...],
                     directions: dict, real_features, threshold, cfg) -> tuple:
    """One variant's editing scores -> (per-image frame, per-set frame, consistency frame).

    The spaces are edited as the official CLCAE code edits (through the encoder, :class:`Editor`
    mode ``"encoder"``); for an encoder with W+ attention the W+ and F edits of the codes (mode
    ``"latent"``) are scored too, as the spaces ``wplus_latent`` and ``f_latent``. The first
    ``cfg.edit_images`` inputs are inverted here with the encoder's codes, which the official edit
    needs and which are kept for these images only (T3 is 8 MB an image at paper scale)."""
    n = min(cfg.edit_images, len(inputs))
    inputs = inputs[:n]

    def invert_codes(x, spaces=SPACES):
        return invert(encoder, G, x, batch_size=cfg.batch_size, keep_codes=True, spaces=spaces)
    inversion = invert_codes(inputs)
    judges = EditJudges(world.describe, list(world.attribute_names), world.perceptual, threshold,
                        batch_size=cfg.batch_size)
    strengths = sorted({0.0, *cfg.edit_strengths, cfg.edit_strength, -cfg.edit_strength})
    settings = [(Editor.for_encoder(encoder, G, batch_size=cfg.batch_size), spaces, "")]
    if encoder.cfg.w_attention:   # without it both settings are the same edit (w+ + delta)
        settings.append((Editor.for_encoder(encoder, G, batch_size=cfg.batch_size, mode="latent"),
                         tuple(s for s in spaces if s != "w"), LATENT_EDIT))
    frames = []
    for editor, edit_spaces, suffix in settings:
        per_image, per_set = edit_sweep(editor, inversion, inputs, directions, strengths, judges, real_features,
                                        edit_spaces)
        consistency = editing_consistency(editor, invert_codes, first(inversion, min(cfg.consistency_images, n)),
                                          directions, cfg.edit_strength, judges, edit_spaces)
        for frame in (per_image, per_set, consistency):
            frame["space"] = frame["space"] + suffix
        frames.append((per_image, per_set, consistency))
        space = "f" if "f" in edit_spaces else "wplus"
        edit_grid(editor, inversion, directions, strengths, space,
                  Path(cfg.report_dir) / "figures" / f"edits_{variant}_{space}{suffix}.png")
    per_image, per_set, consistency = (pd.concat(parts, ignore_index=True) for parts in zip(*frames))
    for frame in (per_image, per_set, consistency):
        frame.insert(0, "variant", variant)
    return per_image, per_set, consistency


def editing_directions(params, world, G, cfg) -> tuple[dict, str | None]:
    """The directions to score, each with the attribute it edits, or ``({}, why not)``."""
    if not cfg.edit_directions:
        return {}, "evaluate.edit_directions is empty"
    if not world.attribute_names:
        return {}, f"the {world.name} world reads no attributes{world.no_attributes_hint}"
    available = read_directions(params.fit_directions.out_dir, G.style_dim, G.n_latent)
    directions = {}
    for name in cfg.edit_directions:
        if name not in available:
            raise ConfigError(f"evaluate.edit_directions: {name!r} is not in {params.fit_directions.out_dir} "
                              f"(it has {', '.join(available)})")
        d = available[name]
        if (d.attribute or name) not in world.attribute_names:
            raise ConfigError(f"evaluate.edit_directions: {name!r} edits {d.attribute or name!r}, which the "
                              f"{world.name} world does not read ({world.attribute_names})")
        directions[name] = d
    return directions, None


# ----------------------------------------------------------------------------- stage


def run(params) -> dict:
    """Stage entry: params.evaluate (+ shared, train_encoder, fit_directions) -> reports/."""
    from clcae.distributed import stage_device
    from clcae.nets.stylegan2 import load_generator
    from clcae.worlds import load_world

    cfg = params.evaluate
    device = stage_device(params.shared)
    start = time.perf_counter()
    G = load_generator(params.shared.generator, device=device, channels_last=params.shared.channels_last).eval()
    world = load_world(params, device)
    variants = evaluated_variants(params)
    directions, no_editing = editing_directions(params, world, G, cfg)
    report = Path(cfg.report_dir)
    (report / "figures").mkdir(parents=True, exist_ok=True)

    size = params.train_encoder.common.image_size or G.size
    test = world.test_images(size)
    n = min(cfg.test_images or len(test), len(test))
    inputs = torch.cat([to_float(test.batch(idx)) for idx in torch.arange(n).split(cfg.batch_size)]).to(device)
    person = test.labels["person_id"].to_numpy()[:n] if test.labels is not None and "person_id" in test.labels else None
    judged = judge_split(world, test, cfg.batch_size)   # the test split through the judges once
    threshold, threshold_source = cfg.same_person_threshold, "evaluate.same_person_threshold"
    if threshold is None:
        threshold, threshold_source = world_threshold(judged["identity"], test.labels), \
            "the test split's verification curve"
    real_features = judged["features"]
    real = FrechetReference(real_features)
    fd_name = f"fd_{world.features_name}"
    names, ctx, unavailable = metric_context(cfg.metrics, params.ffhq.lpips_alexnet, device)

    recon, recon_fd, runtime, renders, edit_frames = [], {}, {}, {}, []
    for variant in tqdm(variants, desc="evaluate: variants (invert, score, edit)", unit="variant"):
        encoder = load_variant(params, variant, G, device)
        if encoder.cfg.image_size != size:
            raise ConfigError(f"evaluate: test images are {size} px, the encoder {variant!r} takes {encoder.cfg.image_size}")
        trains_w = variant in cfg.released or params.train_encoder.variant(variant).w_loss   # released: CLCAE
        inversion = invert(encoder, G, inputs, batch_size=cfg.batch_size)
        spaces = tuple(s for s in inversion.images() if s != "w" or trains_w)
        renders[variant] = {s: inversion.images()[s] for s in spaces}
        runtime[variant] = final_render_seconds(encoder, G, inputs[:cfg.batch_size])
        frame, recon_fd[variant] = reconstruction_scores(world, renders[variant], inputs, judged["identity"][:n],
                                                         names, ctx, real, cfg.batch_size)
        frame.insert(0, "variant", variant)
        frame.insert(3, "name", [test.names[i] for i in frame.image])
        if person is not None:
            frame.insert(4, "person_id", person[frame.image.to_numpy()])
        recon.append(frame)
        if directions:
            edit_frames.append(evaluate_editing(G, world, variant, encoder, inputs, spaces, directions,
                                                real_features, threshold, cfg))
    recon = pd.concat(recon, ignore_index=True)
    save_csv(recon, report / "reconstruction.csv", index=False, float_format="%.8g")   # paired differences need the digits
    reconstruction_grid(inputs, renders, report / "figures" / "reconstructions.png")

    figures = [c for c in recon.columns if c not in ("variant", "space", "image", "name", "person_id")]
    means = recon.groupby(["variant", "space"], sort=False)[figures].mean()
    metrics = {
        "world": world.name, "test_images": n,
        "unreadable_test_images": unreadable_files(getattr(test, "skipped", [])),
        "reconstruction": {v: {sp: {**{k: round(float(x), 6) for k, x in means.loc[(v, sp)].items()},
                                    fd_name: round(recon_fd[v][sp], 5)}
                               for sp in recon[recon.variant == v].space.unique()} for v in variants},
        "runtime_s_per_image": {v: round(t, 6) for v, t in runtime.items()},
        "unavailable": unavailable}
    if directions:
        per_image, per_set, consistency = (pd.concat(parts, ignore_index=True) for parts in zip(*edit_frames))
        if person is not None:
            per_image.insert(5, "person_id", person[per_image.image.to_numpy()])
        save_csv(per_image, report / "editing_per_image.csv", index=False, float_format="%.8g")
        save_csv(per_set, report / "editing.csv", index=False, float_format="%.6g")
        save_csv(consistency, report / "editing_consistency.csv", index=False, float_format="%.6g")
        plot_curves(per_set, fd_name, report / "figures" / "editing_curves.png")
        metrics["editing"] = {
            "strength": cfg.edit_strength, "same_person_threshold": None if threshold is None else round(threshold, 5),
            "threshold_source": threshold_source, "images": int(per_image.image.nunique()), "frechet": fd_name,
            **{v: summarise(per_set[per_set.variant == v], consistency[consistency.variant == v], cfg.edit_strength,
                            fd_name) for v in variants}}
    else:   # the outputs dvc.yaml declares, empty, and the reason
        for name in ("editing_per_image.csv", "editing.csv", "editing_consistency.csv"):
            save_csv(pd.DataFrame(columns=["variant", "direction", "space", "strength", "image"]), report / name, index=False)
        metrics["editing"] = {"skipped": no_editing}
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    save_json(metrics, cfg.metrics_file)
    return metrics
