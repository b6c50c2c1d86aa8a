"""The official trainer's switches on the default world: does each help the `clcae` variant here?

Trains the `clcae` variant of ``params.yaml`` once as a baseline (PyTorch's default init, the
stored generator noise, no flips: the project's recipe before the official switches existed) and
once per switch with only that switch set as the official trainer sets it (``weight_init:
official``, ``noise: random``, ``hflip: 0.5``), each with the same data, aligner, seed and step
budget, through the stage's own entry point (``clcae.pipeline.train_encoder.run``). Then inverts the whole
test split with every encoder and compares each switch with the baseline per space on MSE ([0, 1])
and the world's perceptual distance: mean difference and a 95% bootstrap interval paired over test
images (a person's images resampled together). One training seed: a difference whose interval
excludes 0 is a measured effect at this budget, not a verdict across seeds.

Needs the world stage's outputs and the aligner (``dvc repro train_aligner world``). Writes
``--out`` (default ``reports/official_switches.json``) and prints a table; about 8 CPU minutes a run
on 2 cores. Run: ``python benchmarks/official_switches.py [--steps 500] [--only hflip]``.
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

SWITCHES = {"weight_init": "official", "noise": "random", "hflip": 0.5}
BASELINE = {"weight_init": "pytorch", "noise": "const", "hflip": 0.0}


def train(params, name: str, overrides: dict, steps: int, root: Path) -> Path:
    from clcae.pipeline import train_encoder as te

    p = copy.deepcopy(params)
    block = p.train_encoder
    block.variants = {name: {**block.variants["clcae"], **overrides, "steps": steps, "test_images": 16}}
    block.out_dir, block.report_dir = str(root / "encoder"), str(root / "reports")
    start = time.perf_counter()
    te.run(p, name)
    print(f"{name}: trained in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return root / "encoder" / name / "encoder.pt"


@torch.inference_mode()
def per_image(params, encoder_path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{space: {'mse': [N], perceptual: [N]}} on the whole test split."""
    from clcae.images import to_float
    from clcae.inversion import invert, load_any_encoder
    from clcae.nets.stylegan2 import load_generator
    from clcae.worlds import load_world

    G = load_generator(params.shared.generator).eval()
    world = load_world(params, torch.device("cpu"))
    encoder = load_any_encoder(encoder_path, G)
    test = world.test_images(encoder.cfg.image_size)
    out: dict[str, dict[str, list]] = {}
    for idx in torch.arange(len(test)).split(64):
        x = to_float(test.batch(idx))
        for space, rec in invert(encoder, G, x, batch_size=64).images().items():
            rec = rec.clamp(-1, 1)
            d = out.setdefault(space, {"mse": [], world.perceptual_name: []})
            d["mse"].append(((rec - x) / 2).pow(2).flatten(1).mean(1))
            d[world.perceptual_name].append(world.perceptual(rec, x))
    people = test.labels["person_id"].to_numpy() if test.labels is not None else None
    return {s: {k: torch.cat(v).numpy() for k, v in d.items()} for s, d in out.items()}, people


def main() -> None:
    from clcae.config import load_params
    from clcae.stats import paired_bootstrap

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=0, help="0: the params' train_encoder steps")
    ap.add_argument("--only", choices=list(SWITCHES), action="append", help="measure only these switches")
    ap.add_argument("--out", default="reports/official_switches.json")
    ap.add_argument("--workdir", default=None, help="keep the trained encoders here (default: a temp folder)")
    args = ap.parse_args()
    params = load_params(args.params)
    steps = args.steps or params.train_encoder.variant("clcae").steps
    root = Path(args.workdir or tempfile.mkdtemp(prefix="official_switches_"))
    runs = {"baseline": BASELINE}
    for switch in args.only or list(SWITCHES):
        runs[f"{switch}={SWITCHES[switch]}"] = {**BASELINE, switch: SWITCHES[switch]}
    scores = {}
    for name, overrides in runs.items():
        variant = name.replace("=", "_").replace(".", "")
        path = root / "encoder" / variant / "encoder.pt"
        if not path.is_file():
            path = train(params, variant, overrides, steps, root)
        scores[name], people = per_image(params, path)
    rows = []
    base = scores.pop("baseline")
    for name, s in scores.items():
        for space, metrics in s.items():
            for metric, values in metrics.items():
                iv = paired_bootstrap(values, base[space][metric], groups=people)
                rows.append({"switch": name, "space": space, "metric": metric, "switch_mean": float(values.mean()),
                             "baseline_mean": float(base[space][metric].mean()), "diff": iv.diff, "low": iv.low,
                             "high": iv.high, "relative": iv.relative})
    result = {"steps": steps, "seed": params.shared.seed, "baseline": BASELINE, "switches": SWITCHES,
              "test_images": int(len(next(iter(base.values()))["mse"])), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"{'switch':<22}{'space':<7}{'metric':<18}{'switch':>9}{'baseline':>10}{'diff (95% CI)':>34}")
    for r in rows:
        print(f"{r['switch']:<22}{r['space']:<7}{r['metric']:<18}{r['switch_mean']:>9.4f}{r['baseline_mean']:>10.4f}"
              f"   {r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] ({100 * r['relative']:+.1f}%)")


if __name__ == "__main__":
    main()
