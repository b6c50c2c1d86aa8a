"""Stage `fit_directions`: edit directions for the generator, labelled by the world's judges.

InterFaceGAN: ``n_samples`` mapped w (seeded) are rendered, read by the world's attribute
classifier and one linear SVM per attribute gives a unit normal (optionally with other
attributes' normals projected out). GANSpace: a PCA of the same w. Published direction files
(``published``, ``published_pca``) are checked and indexed beside them. Writes
``<out_dir>/directions.json`` (the index :func:`clcae.editing.read_directions` reads), one
``[1, D]`` tensor per normal, ``ganspace_pca.pt``, and the report (metrics, plots, a strip of
samples moved along each normal).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from clcae.editing.directions import INDEX, Direction, LayerRange, load_direction, load_pca, save_direction, save_pca
from clcae.editing.ganspace import fit_pca
from clcae.editing.interfacegan import fit_boundary, project_out
from clcae.errors import ConfigError
from clcae.images import to_uint8
from clcae.io import save_csv, save_figure, save_image_grid, save_json, save_text
from clcae.seeding import seeded_generator


@torch.inference_mode()
def sample_labelled(G, attributes, n: int, batch_size: int, truncation: float, seed: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` mapped w ``[n, D]`` and the attribute readout of their images ``[n, K]`` (seeded)."""
    z = torch.randn(n, G.style_dim, generator=seeded_generator(seed, "fit_directions"))
    ws, scores = [], []
    for chunk in tqdm(z.split(batch_size), desc="fit_directions: sample + label", unit="batch", leave=False):
        w = G.mapped(chunk.to(device), truncation)
        image = G.synthesis(w[:, None].expand(-1, G.n_latent, -1))
        ws.append(w.float().cpu())
        scores.append(attributes(image.clamp(-1, 1)).float().cpu())
    return torch.cat(ws), torch.cat(scores)


def fit_interfacegan(w: torch.Tensor, scores: torch.Tensor, names: list[str], cfg, seed: int) -> tuple[dict, dict]:
    """One SVM per attribute and the conditional directions -> ({name: Direction}, metrics)."""
    directions, metrics = {}, {}
    for k, name in enumerate(names):
        b = fit_boundary(w, scores[:, k], cfg.chosen_frac, cfg.train_frac, cfg.svm_c, seed=seed)
        directions[name] = Direction(name, b.normal, source="fit_directions: InterFaceGAN SVM", strength=cfg.strength)
        metrics[name] = {"val_accuracy": b.val_accuracy, "remaining_accuracy": b.remaining_accuracy,
                         "n_train": b.n_train, "n_val": b.n_val, "latent_std": b.latent_std}
    for name, others in cfg.conditions.items():
        missing = [a for a in [name, *others] if a not in directions]
        if missing:
            raise ConfigError(f"fit_directions.conditions.{name}: {missing} not among the fitted attributes {names}")
        cond = project_out(directions[name].vector, *(directions[o].vector for o in others))
        label = f"{name}_without_{'_'.join(others)}"
        directions[label] = Direction(label, cond, source=f"fit_directions: {name} with {others} projected out",
                                      strength=cfg.strength)
        metrics[label] = {"cosine_to_primal": float(cond @ directions[name].vector)}
    return directions, metrics


def plot_report(explained: torch.Tensor, normals: dict[str, Direction], report_dir: Path, published: bool = False) -> None:
    """``explained_variance.png`` and ``direction_cosines.png`` (written even when empty: DVC outputs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    k = torch.arange(len(explained))
    ax.bar(k, explained.numpy(), color="tab:blue", label="per component")
    ax.plot(k, explained.cumsum(0).numpy(), color="tab:orange", marker=".", label="cumulative")
    ax.set(xlabel="GANSpace component", ylabel="share of the components' variance" if published
           else "explained variance of w", ylim=(0, 1), title="published PCA of w" if published else "PCA of sampled w")
    ax.legend(loc="center right")
    fig.tight_layout()
    save_figure(fig, report_dir / "explained_variance.png", dpi=120)
    plt.close(fig)

    names = list(normals)
    v = torch.stack([normals[n].mean_vector / normals[n].mean_vector.norm() for n in names]) if names \
        else torch.zeros(0, 1)   # a per-layer direction: the mean over its layers
    cos = (v @ v.T).numpy()
    fig, ax = plt.subplots(figsize=(2 + 0.6 * len(names), 1.8 + 0.6 * len(names)))
    im = ax.imshow(cos if names else [[float("nan")]], vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{cos[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title("cosine between InterFaceGAN normals" if names else "no InterFaceGAN normals")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, report_dir / "direction_cosines.png", dpi=120)
    plt.close(fig)


@torch.inference_mode()
def component_effects(G, attributes, names: list[str], w: torch.Tensor, basis, strength: float = 2.0,
                      batch_size: int = 64):
    """Mean attribute change when each GANSpace component moves ``w`` by ``+strength`` standard
    deviations on every layer: which attribute a component edits (a DataFrame, rows: components)."""
    import pandas as pd

    device = G.latent_avg.device
    codes = w.to(device)[:, None].expand(-1, G.n_latent, -1)

    def readout(delta):
        return torch.cat([attributes(G.synthesis(c + delta).clamp(-1, 1)).float().cpu()
                          for c in codes.split(batch_size)])
    before = readout(0)
    rows = [(readout(basis.direction(k).delta(strength, G.n_latent).to(device)) - before).mean(0)
            for k in range(basis.n_components)]
    return pd.DataFrame(torch.stack(rows).numpy(), columns=names, index=[f"pc{k}" for k in range(len(rows))])


@torch.inference_mode()
def sample_strip(G, w: torch.Tensor, directions: list[Direction], multiples=(-2, -1, 0, 1, 2)) -> torch.Tensor:
    """uint8 ``[len(directions) * len(multiples), 3, S, S]``: one sampled face moved along each
    direction (on its layers) by multiples of the direction's own strength."""
    rows = []
    for d in directions:
        s = torch.tensor(multiples, dtype=torch.float32) * d.strength
        codes = w[None, None].expand(len(s), G.n_latent, -1) + d.delta(s, G.n_latent).to(w.device)
        rows.append(to_uint8(G.synthesis(codes)))
    return torch.cat(rows)


def sample_w(G, n: int, batch_size: int, truncation: float, seed: int, device) -> torch.Tensor:
    """The same ``n`` mapped w as :func:`sample_labelled`, without rendering (no attribute classifier)."""
    z = torch.randn(n, G.style_dim, generator=seeded_generator(seed, "fit_directions"))
    with torch.inference_mode():
        return torch.cat([G.mapped(c.to(device), truncation) for c in z.split(batch_size)]).float().cpu()


def ganspace_target(effects, component: int, strength: float) -> dict:
    """The attribute a GANSpace edit moves most (from :func:`component_effects`) and the sign of the
    move for a positive strength: what the edit is scored on."""
    if effects is None:
        return {}
    row = effects.loc[f"pc{component}"]
    attribute = row.abs().idxmax()
    return {"attribute": attribute, "attribute_sign": int(1 if row[attribute] >= 0 else -1)}


def run(params) -> dict:
    """Stage entry: params.shared, params.fit_directions -> data/directions, reports/directions."""
    from clcae.distributed import stage_device
    from clcae.nets.stylegan2 import load_generator
    from clcae.worlds import load_world

    cfg, seed = params.fit_directions, params.shared.seed
    device = stage_device(params.shared)
    G = load_generator(params.shared.generator, device=device, channels_last=params.shared.channels_last).eval()
    world = load_world(params, device)
    out, report = Path(cfg.out_dir), Path(cfg.report_dir)
    report.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    index, metrics = {}, {"n_samples": cfg.n_samples, "style_dim": G.style_dim, "n_latent": G.n_latent}

    names = cfg.attributes or list(world.attribute_names)
    unknown = [a for a in names if a not in world.attribute_names]
    if unknown:
        raise ConfigError(f"fit_directions.attributes: {unknown} not read by the {world.name} world's classifier "
                          f"(it reads {world.attribute_names or 'nothing'})")
    taken = sorted(set(cfg.published) & set(names)) + sorted(set(cfg.ganspace_edits) & (set(cfg.published) | set(names)))
    if taken:
        raise ConfigError(f"fit_directions: direction name(s) {taken} given twice (fitted attributes, published, "
                          f"ganspace_edits share one namespace)")
    if names:
        w, scores = sample_labelled(G, world.attributes, cfg.n_samples, cfg.batch_size, cfg.truncation, seed, device)
        columns = [world.attribute_names.index(a) for a in names]
        normals, metrics["interfacegan"] = fit_interfacegan(w, scores[:, columns], names, cfg, seed)
    else:
        w, normals = sample_w(G, cfg.n_samples, cfg.batch_size, cfg.truncation, seed, device), {}
    for name, path in cfg.published.items():
        normals[name] = load_direction(path, G.style_dim, name=name, n_latent=G.n_latent)
        normals[name].strength = cfg.strength
    for name, d in normals.items():
        save_direction(d, out / "interfacegan" / f"{name}.pt")
        primal = name.split("_without_")[0]
        target = {"attribute": primal, "attribute_sign": 1} if primal in world.attribute_names else {}
        index[name] = {"kind": "published" if name in cfg.published else "interfacegan",
                       "file": f"interfacegan/{name}.pt", "layers": None, "strength": d.strength,
                       "source": d.source, **target}

    if cfg.published_pca:
        basis = load_pca(cfg.published_pca, G.style_dim)
        explained = basis.std ** 2 / (basis.std ** 2).sum()   # shares of the k published components' variance
        metrics["ganspace"] = {"published": cfg.published_pca, "components": basis.n_components}
    else:
        basis, explained = fit_pca(w, cfg.pca_components, seed)
        metrics["ganspace"] = {"explained_variance": [round(float(v), 5) for v in explained],
                               "cumulative": round(float(explained.sum()), 5)}
    save_pca(basis, out / "ganspace_pca.pt")
    effects = None
    if names:
        effects = component_effects(G, world.attributes, list(world.attribute_names), w[:cfg.effect_samples],
                                    basis, batch_size=cfg.batch_size)
        save_csv(effects.round(4), report / "ganspace_effects.csv", index_label="component")
    else:   # the declared output, with the reason
        save_text(f"# no attribute classifier in the {world.name} world: component effects not measured\n"
                  "component\n", report / "ganspace_effects.csv")
    for name, (component, first, last, strength) in cfg.ganspace_edits.items():
        LayerRange(int(first), int(last)).check(G.n_latent, f"fit_directions.ganspace_edits.{name}")
        index[name] = {"kind": "ganspace", "file": "ganspace_pca.pt", "component": int(component),
                       "layers": [int(first), int(last)], "strength": float(strength),
                       **ganspace_target(effects, int(component), float(strength))}
    save_json({"style_dim": G.style_dim, "n_latent": G.n_latent, "directions": index}, out / INDEX)

    plot_report(explained, normals, report, published=cfg.published_pca is not None)
    strip = list(normals.values()) + [basis.direction(int(c), int(a), int(b), name=n, strength=float(s))
                                      for n, (c, a, b, s) in cfg.ganspace_edits.items()]
    if not strip:   # nothing named: the first components, all layers
        strip = [basis.direction(k) for k in range(min(4, basis.n_components))]
    save_image_grid(sample_strip(G, w[0].to(device), strip), report / "samples.png", nrow=5)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    save_json(metrics, report / "metrics.json")
    return metrics
