"""Runtime per image of a callable (an encoder's inversion, an edit).

Why a helper: CUDA kernels run asynchronously, so a wall clock read without a synchronise
measures the launch, not the work; and the first calls pay for allocation and autotuning.
A figure for a paper table, not a benchmark harness: the benchmarks print their own.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_image(fn: Callable[[torch.Tensor], object], x: torch.Tensor, warmup: int = 1,
                      repeats: int = 3, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median over ``repeats`` timed calls of ``fn(x)`` (after ``warmup`` untimed ones),
    divided by the batch size ``x.shape[0]``. ``fn`` runs as given: wrap it in
    ``torch.inference_mode()`` yourself when it needs no gradient."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"seconds_per_image: repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn(x)
    _sync(x.device)
    times = []
    for _ in range(repeats):
        start = clock()
        fn(x)
        _sync(x.device)
        times.append(clock() - start)
    return statistics.median(times) / x.shape[0]
