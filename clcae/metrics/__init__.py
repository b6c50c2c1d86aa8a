"""Evaluation metrics, one file per metric, and a registry of the per-image image metrics.

Image metrics take ``[B, 3, H, W]`` batches in [-1, 1] and return per-image values ``[B]``
(``compute(name, x, y, **ctx)``; names: :func:`list_metrics`). The other files hold the metrics
that are not image pairs: Frechet distance (:mod:`.frechet`), identity similarity
(:mod:`.identity`), verification (:mod:`.verification`), R^2 (:mod:`.regression`), linear-probe
accuracy (:mod:`.probe`) and runtime (:mod:`.runtime`).

Nothing here imports ``clcae.worlds``: judges (identity nets, feature nets) are passed in as
tensors or callables.
"""
from clcae.metrics.registry import (
                                    IMAGE_METRIC_MODULES,
                                    Metric,
                                    MetricUnavailable,
                                    UnknownMetricError,
                                    compute,
                                    get_metric,
                                    is_valid_metric,
                                    list_metrics,
                                    register_metric,
)

__all__ = ["IMAGE_METRIC_MODULES", "Metric", "MetricUnavailable", "UnknownMetricError", "compute", "get_metric",
           "is_valid_metric", "list_metrics", "register_metric"]
