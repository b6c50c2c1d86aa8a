"""The pipelines' time, read from the runs themselves: each stage's own timing in its metrics file.

    python benchmarks/pipeline_time.py [--params params.yaml]

Prints one row per stage of ``dvc.yaml`` and ``seeds/dvc.yaml`` with the seconds the stage
recorded, and the sums. What each figure covers is said in its row: the training stages record
their training time (the encoders: the optimisation steps, not the scoring after them), the world
stage its world CNN (rendering its data, training, evaluating), the others their whole run. A stage
whose file is missing (not run yet) or records no time shows "-" and is left out of the sums.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clcae.config import load_params  # noqa: E402
from clcae.seeds import seed_params  # noqa: E402


def recorded(path: Path, *keys: str, minutes: bool = False) -> float | None:
    """Seconds under ``keys`` of a metrics file (``minutes``: the value is in minutes); None if absent."""
    if not path.is_file():
        return None
    value = json.loads(path.read_text())
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return None if value is None else float(value) * (60 if minutes else 1)


def encoder_rows(p, label: str) -> list[tuple[str, float | None, str]]:
    report = Path(p.train_encoder.report_dir)
    return [(f"{label}train_encoder@{v}", recorded(report / v / "metrics.json", "minutes", minutes=True),
              "optimisation steps") for v in p.train_encoder.variants]


def default_rows(p) -> list[tuple[str, float | None, str]]:
    reports = Path(p.world.report_dir).parent
    return [("world", recorded(Path(p.world.report_dir) / "metrics.json", "world_cnn", "total_s"),
             "its world CNN (render, train, evaluate)"),
            ("synthesize", recorded(Path(p.synthesize.report_dir) / "metrics.json", "seconds"), "whole stage"),
            ("train_aligner", recorded(Path(p.train_aligner.report_dir) / "metrics.json", "minutes", minutes=True),
             "optimisation steps"),
            *encoder_rows(p, ""),
            ("fit_directions", recorded(Path(p.fit_directions.report_dir) / "metrics.json", "seconds"), "whole stage"),
            ("evaluate", recorded(Path(p.evaluate.metrics_file), "seconds"), "whole stage"),
            ("report", recorded(reports / "report_summary.json", "seconds"), "whole stage")]


def seed_rows(p) -> list[tuple[str, float | None, str]]:
    rows = []
    for seed in p.seeds.seeds:
        q = seed_params(p, seed)
        q.train_encoder.variants = {v: q.train_encoder.variants[v] for v in p.seeds.variants}
        rows += encoder_rows(q, f"seed {seed}: ")
        rows.append((f"seed {seed}: evaluate", recorded(Path(q.evaluate.metrics_file), "seconds"), "whole stage"))
    rows.append(("seeds report", recorded(Path(p.seeds.report_dir) / "summary.json", "seconds"), "whole stage"))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    p = load_params(ap.parse_args(argv).params)
    for title, rows in (("dvc.yaml", default_rows(p)), ("seeds/dvc.yaml", seed_rows(p))):
        print(f"# {title}")
        print(f"{'stage':<34} {'minutes':>8}  covers")
        for name, seconds, covers in rows:
            print(f"{name:<34} {'-' if seconds is None else f'{seconds / 60:.1f}':>8}  {covers}")
        done = [s for _, s, _ in rows if s is not None]
        print(f"{'sum of recorded stage times':<34} {sum(done) / 60:>8.1f}  ({len(done)} of {len(rows)} stages)\n")


if __name__ == "__main__":
    main()
