"""torchrun / DDP helpers: process-group setup, rank queries, a differentiable all-gather.

Everything degrades to a single process when no process group is initialised, so the same
training code runs under ``python`` and ``torchrun --nproc_per_node N``.
"""
from __future__ import annotations

import datetime
import os
from typing import NamedTuple

import torch
import torch.distributed as dist

from clcae.errors import ConfigError


class DistInfo(NamedTuple):
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (or no process group): the process that logs and writes outputs."""
    return get_rank() == 0


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> this rank's GPU when CUDA is available, else the CPU; 'cuda' without one is an error."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"shared.device: {str(device)!r} requested but no CUDA device is available")
    if str(device) == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def init_distributed(device: str | torch.device = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK / MASTER_*.

    NCCL on CUDA, gloo on CPU. Without those variables (plain ``python``) no group is made and
    (0, 1, 0, device) comes back. Safe to call twice.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device, local_rank)
    if world_size > 1 and not is_distributed():
        for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world_size} but {var} is unset: launch with torchrun")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(get_rank(), get_world_size(), local_rank, device)


def stage_device(shared) -> torch.device:
    """The device of a stage from ``params.shared.device`` and this process's LOCAL_RANK."""
    return resolve_device(shared.device, int(os.environ.get("LOCAL_RANK", "0")))


def cleanup_distributed() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (for logged metrics; no gradient)."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / get_world_size()


def same_on_all_ranks(value: int, device: torch.device | str = "cpu") -> bool:
    """Whether every rank holds the same integer (e.g. the step it resumes from)."""
    if not is_distributed():
        return True
    t = torch.tensor([value, -value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # [max, -min]
    return int(t[0]) == -int(t[1])


@torch.no_grad()
def replicas_identical(model: torch.nn.Module) -> bool:
    """Under DDP: every rank holds the same weights (max |p - mean over ranks| is 0). Collective."""
    if not is_distributed() or get_world_size() == 1:
        return True
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    return bool((all_reduce_mean(flat) - flat).abs().max().item() == 0.0)


def gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's local batch size, in rank order."""
    if not is_distributed():
        return [n]
    mine = torch.tensor([n], device=device)
    sizes = [torch.zeros_like(mine) for _ in range(get_world_size())]
    dist.all_gather(sizes, mine)
    return [int(s) for s in sizes]


def all_gather_objects(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` without a process group)."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's rows; backward sums the gradient over ranks and keeps our rows.

    The sum is what makes DDP exact: rank r's features receive the gradients of every rank's
    loss terms that used them (as negatives), not only its own.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        rank = dist.get_rank()
        ctx.start, ctx.stop = sum(sizes[:rank]), sum(sizes[:rank + 1])
        longest = max(sizes)
        padded = x.new_zeros((longest, *x.shape[1:]))  # all_gather needs equal shapes
        padded[: x.shape[0]] = x
        chunks = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(chunks, padded.contiguous())
        return torch.cat([c[:n] for c, n in zip(chunks, sizes)])  # [sum(sizes), ...]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # sum over ranks
        return grad[ctx.start:ctx.stop], None


def all_gather_with_grad(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Rows of ``x`` from all ranks in rank order, differentiable ([N_local, ...] -> [N_total, ...]).

    Local batches may differ in size (``sizes`` from :func:`gather_sizes`, computed if omitted).
    Without a process group it returns ``x``.
    """
    if not is_distributed() or get_world_size() == 1:
        return x
    sizes = sizes or gather_sizes(x.shape[0], x.device)
    if sizes[get_rank()] != x.shape[0]:
        raise ValueError(f"all_gather_with_grad: sizes[{get_rank()}] = {sizes[get_rank()]} but x has {x.shape[0]} rows")
    return _AllGatherWithGrad.apply(x, tuple(sizes))


def all_reduce_sum(n: int, device: torch.device) -> int:
    """The sum of an int over the ranks (``device``: NCCL reduces GPU tensors only)."""
    if not is_distributed():
        return n
    t = torch.tensor([n], dtype=torch.long, device=device)
    dist.all_reduce(t)
    return int(t.item())
