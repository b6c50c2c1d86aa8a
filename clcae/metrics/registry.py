"""The metric registry: one name per per-image metric, in the spirit of stylegan3's ``metric_main``.

Why: the evaluate stage and the report loop over metric names from params, so a typo must fail
at once with the known names, and every metric must be called the same way,
``compute(name, x, y, **ctx) -> [B]`` on images ``[B, 3, H, W]`` in [-1, 1], so a paired
bootstrap over images works for all of them.

The image metrics register themselves when their module is imported; the registry imports
them on first use (:data:`IMAGE_METRIC_MODULES`), so importing one metric module (the world
stage imports :mod:`clcae.metrics.verification`) does not pull in the others.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from clcae.errors import InputError

# modules whose import registers an image metric (in the order list_metrics reports)
IMAGE_METRIC_MODULES = ("mse", "psnr", "ssim", "lpips")


class MetricUnavailable(InputError):
    """A metric's reference weights are absent: record it as unavailable with ``reason``;
    it is never computed with stand-in (random) weights."""

    def __init__(self, metric: str, reason: str):
        super().__init__(f"metric {metric!r} is unavailable: {reason}")
        self.metric, self.reason = metric, reason


class UnknownMetricError(ValueError):
    """A metric name that is not registered (the message lists the known ones)."""


@dataclass(frozen=True)
class Metric:
    """A registered per-image metric: ``fn(x, y, **ctx) -> [B]``; ``context`` names the keyword
    arguments it takes beyond the two images (e.g. ``lpips_net``)."""

    name: str
    fn: Callable[..., torch.Tensor]
    higher_is_better: bool
    doc: str
    context: tuple[str, ...] = ()


_METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, higher_is_better: bool) -> Callable:
    """Decorator: register ``fn(x, y, **ctx) -> [B]`` under ``name`` (a stable key of the
    metrics files; re-registering a name is an error, not a silent override)."""

    def decorate(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _METRICS and _METRICS[name].fn is not fn:
            raise ValueError(f"metric {name!r} is already registered by {_METRICS[name].fn.__module__}")
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        context = tuple(inspect.signature(fn).parameters)[2:]  # after (x, y)
        _METRICS[name] = Metric(name, fn, higher_is_better, doc, context)
        return fn

    return decorate


def _load_all() -> None:
    for module in IMAGE_METRIC_MODULES:
        importlib.import_module(f"clcae.metrics.{module}")


def _order(metric: Metric) -> int:
    module = metric.fn.__module__.rsplit(".", 1)[-1]
    return IMAGE_METRIC_MODULES.index(module) if module in IMAGE_METRIC_MODULES else len(IMAGE_METRIC_MODULES)


def list_metrics() -> list[str]:
    """The registered names: by :data:`IMAGE_METRIC_MODULES`, then in registration order (stable
    whatever was imported first)."""
    _load_all()
    return [m.name for m in sorted(_METRICS.values(), key=_order)]


def is_valid_metric(name: str) -> bool:
    _load_all()
    return name in _METRICS


def get_metric(name: str) -> Metric:
    """The registered metric, or :class:`UnknownMetricError` naming it and the known ones."""
    _load_all()
    if name not in _METRICS:
        raise UnknownMetricError(f"unknown metric {name!r}; known metrics: {', '.join(list_metrics())}")
    return _METRICS[name]


def compute(name: str, x: torch.Tensor, y: torch.Tensor, **ctx) -> torch.Tensor:
    """Per-image values ``[B]`` of metric ``name`` between images ``x`` and ``y``
    (``[B, 3, H, W]`` in [-1, 1]).

    ``ctx`` may be shared by a loop over all metrics: each metric gets the keys it takes
    (``lpips_net=`` for ``lpips``, ``scales=`` for ``ms_ssim``); a key no metric takes is an
    error (a typo would otherwise be ignored).
    """
    metric = get_metric(name)
    known = {key for m in _METRICS.values() for key in m.context}
    unused = sorted(set(ctx) - known)
    if unused:
        raise TypeError(f"compute({name!r}): context key(s) {unused} are taken by no metric; "
                        f"known keys: {sorted(known)}")
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"metric {name!r}: expected two image batches [B, 3, H, W] of the same shape, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"metric {name!r}: expected float images in [-1, 1], got {x.dtype} and {y.dtype}")
    return metric.fn(x, y, **{key: ctx[key] for key in metric.context if key in ctx})
