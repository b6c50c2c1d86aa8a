"""Seed-replicated runs (``seeds/dvc.yaml``): the encoders trained again with other seeds and each
seed's run evaluated like the default one (``stages/train_encoder.py --seed`` and
``stages/evaluate.py --seed`` run the default stages' code on :func:`seed_params`);
``clcae.pipeline.seed_report`` tests the claims over them.

A bootstrap over test images says how sure we are about *one trained model*; another training seed
can move a small effect further than that interval. Each variant of ``seeds.variants`` is trained
with every seed of ``seeds.seeds`` (the same data, aligner, generator and step budget: the seed sets
the initialisation, the batch order and dropout). This module says where each seed's run lives
(:func:`seed_params`, :func:`seed_runs`); the report's code is apart so that changing it retrains nothing.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from clcae.errors import ConfigError


def check(params, seed: int | None = None, variant: str | None = None) -> None:
    """Config errors naming the key: variants the pipeline does not define, the default seed listed again."""
    cfg = params.seeds
    unknown = [v for v in cfg.variants if v not in params.train_encoder.variants]
    if unknown:
        raise ConfigError(f"seeds.variants: {unknown} not among train_encoder.variants {list(params.train_encoder.variants)}")
    if params.shared.seed in cfg.seeds:
        raise ConfigError(f"seeds.seeds: {params.shared.seed} is shared.seed, the default pipeline's run (already counted)")
    if seed is not None and seed not in cfg.seeds:
        raise ConfigError(f"seeds.seeds: no seed {seed} (known: {cfg.seeds})")
    if variant is not None and variant not in cfg.variants:
        raise ConfigError(f"seeds.variants: no variant {variant!r} (known: {cfg.variants})")


def seed_params(params, seed: int, variant: str | None = None):
    """The params of the run with training seed ``seed``: the default run's settings with that seed
    and its own encoder, training-report and evaluate folders under ``seeds.out_dir`` (``variant``:
    checked against ``seeds.variants``)."""
    check(params, seed, variant)
    root = Path(params.seeds.out_dir)
    replace = dataclasses.replace
    return replace(
        params,
        shared=replace(params.shared, seed=seed),
        train_encoder=replace(params.train_encoder, out_dir=str(root / "encoder" / f"seed{seed}"),
                              report_dir=str(root / "train_encoder" / f"seed{seed}")),
        evaluate=replace(params.evaluate, variants=list(params.seeds.variants),
                         report_dir=str(root / "evaluate" / f"seed{seed}"),
                         metrics_file=str(root / "evaluate" / f"seed{seed}" / "metrics.json")))


def seed_runs(params) -> dict[int, dict[str, Path]]:
    """seed -> the evaluate files of its run; the default pipeline's run first."""
    def files(p) -> dict[str, Path]:
        return {"report": Path(p.evaluate.report_dir), "metrics": Path(p.evaluate.metrics_file),
                "train": Path(p.train_encoder.report_dir)}

    return {params.shared.seed: files(params), **{seed: files(seed_params(params, seed)) for seed in params.seeds.seeds}}
