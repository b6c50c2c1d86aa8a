"""The DVC stages' code: one module per stage of ``dvc.yaml`` (and ``seeds/dvc.yaml``), named as there.

``stages/<name>.py`` is the stage's ``cmd``: it reads the params file and calls ``run`` of
``clcae.pipeline.<name>`` through :func:`stage_main`. No stage module imports another (the library
modules beside this package hold what two stages share), so DVC reruns a stage only for its own code.

world -> synthesize -> train_aligner -> train_encoder@variant -> fit_directions -> evaluate -> report;
seeds/dvc.yaml: train_encoder and evaluate with ``--seed`` (clcae.seeds), then seed_report.
"""
from __future__ import annotations

import os

from clcae.config import load_params
from clcae.errors import ClcaeError, ConfigError


def stage_main(run, argv=None) -> None:
    """Entry point of a stages/ script: ``run(load_params(path))``.

    Errors the project detects in the user's inputs print one line on stderr instead of a
    traceback, and exit 1: an invalid params file (``error: params.yaml: key: ...``), or a
    :class:`~clcae.errors.ClcaeError` raised by the stage (:class:`ConfigError`: a params value the
    data or machine cannot serve, e.g. ``shared.device: cuda`` without a GPU or a batch larger
    than the data; ``clcae.io.CheckpointError``: an unreadable or wrong checkpoint;
    :class:`InputError`: a missing input), and ``clcae.training.TrainingInterrupted`` (SIGINT /
    SIGTERM after saving a resume point) exits 128 + the signal with a line on how to resume.
    A Ctrl-C outside a training loop exits 130. Other exceptions (bugs) keep their traceback;
    stages raise plain ValueError / FileNotFoundError only for what the user cannot fix.
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    if params.shared.trust_checkpoints:  # read by clcae.io.read_checkpoint, here and in spawned workers
        os.environ["CLCAE_TRUST_CHECKPOINTS"] = "1"
    try:
        run(params)
    except ClcaeError as e:
        print(f"{e.label}: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
