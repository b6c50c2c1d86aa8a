"""The F blend schedule: how much of the encoder's f replaces the generator's F layer while training.

The generator renders I3 with x = (1 - s) * G5(w+) + s * f at its F layer. Schedules:
  "epoch_ramp"   the official CLCAE trainer: s = i / (n - 1) for batch i of the n in every epoch,
                 so s goes 0 -> 1 within each epoch and drops back to 0 at the next one
                 (s = 1 when an epoch has one batch);
  "single_ramp"  the Feature-Style encoder: one ramp over the whole run, s = min(1, rate * step);
                 rate=None ramps over ``total_steps`` instead (s = 1 on the last step), for runs
                 too short for 1e-4 per step (which reaches 1 only after 10,000 steps);
  "constant"     s = 1 from the first step.
Inference always uses s = 1 (f replaces the layer); this module is for training only.
"""
from __future__ import annotations

FEATURE_BLEND_SCHEDULES = ("epoch_ramp", "single_ramp", "constant")


def feature_blend(step: int, schedule: str = "epoch_ramp", steps_per_epoch: int | None = None,
                  total_steps: int | None = None, rate: float | None = 1e-4) -> float:
    """The blend weight s in [0, 1] at 0-based training ``step``."""
    if step < 0:
        raise ValueError(f"feature_blend: step must be >= 0, got {step}")
    if schedule == "constant":
        return 1.0
    if schedule == "epoch_ramp":
        if not steps_per_epoch or steps_per_epoch < 1:
            raise ValueError(f"feature_blend: schedule 'epoch_ramp' needs steps_per_epoch >= 1, got {steps_per_epoch}")
        return _ramp(step % steps_per_epoch, steps_per_epoch)
    if schedule == "single_ramp":
        if rate is not None:
            if not rate > 0:
                raise ValueError(f"feature_blend: rate must be > 0 (or None to ramp over total_steps), got {rate}")
            return min(1.0, rate * step)
        if not total_steps or total_steps < 1:
            raise ValueError(f"feature_blend: 'single_ramp' with rate=None needs total_steps >= 1, got {total_steps}")
        return _ramp(min(step, total_steps - 1), total_steps)
    raise ValueError(f"feature_blend: unknown schedule {schedule!r}; expected one of {list(FEATURE_BLEND_SCHEDULES)}")


def _ramp(position: int, length: int) -> float:
    """0 at position 0, 1 at position length - 1 (1 throughout when length is 1)."""
    return 1.0 if length == 1 else position / (length - 1)
