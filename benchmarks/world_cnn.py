"""Benchmark: the world CNN's training step (the `world` stage's 1,000 steps), float32 against bf16
autocast on the CPU, alternated so that both see the same machine.

    python benchmarks/world_cnn.py [--steps 20] [--rounds 2] [--batch 64]

Prints the median step time of each setting per round. The step is the one `train_world_cnn`
runs (WorldCNN in channels_last, `world_cnn_losses`, AdamW) on random images and targets: the
timing does not depend on the data. The stage trains with bf16 autocast when `shared.cpu_amp`
(the default), in float32 otherwise.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from clcae.config import WorldCNNConfig
from clcae.worlds.procfaces.world_cnn import CosFaceHead, WorldCNN, world_cnn_losses


def step_times(cfg: WorldCNNConfig, batch: int, steps: int, bf16: bool) -> list[float]:
    """Seconds of each of ``steps`` training steps after one warm-up step."""
    torch.manual_seed(0)
    model = WorldCNN(cfg.widths, cfg.emb_dim).to(memory_format=torch.channels_last).train()
    head = CosFaceHead(cfg.emb_dim, cfg.n_people, cfg.margin, cfg.scale)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    x = torch.rand(batch, 3, 64, 64).mul(2).sub(1).contiguous(memory_format=torch.channels_last)
    pid = torch.randint(0, cfg.n_people, (batch,))
    attr_target, trait_target = torch.randn(batch, 7), torch.randn(batch, 20)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        loss = world_cnn_losses(model, head, x, pid, attr_target, trait_target, cfg, amp=bf16)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=WorldCNNConfig().batch_size)
    args = ap.parse_args()
    cfg = WorldCNNConfig()
    print(f"world CNN training step, batch {args.batch} at 64 px, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps")
    for r in range(args.rounds):
        for bf16 in (False, True):
            ms = 1000 * statistics.median(step_times(cfg, args.batch, args.steps, bf16))
            print(f"round {r + 1}  {'bf16 autocast' if bf16 else 'float32':13s}  {ms:7.1f} ms/step  "
                  f"({args.batch / ms * 1000:.0f} img/s; 1,000 steps: {ms:.0f} s)")


if __name__ == "__main__":
    main()
