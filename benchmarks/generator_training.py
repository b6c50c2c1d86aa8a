"""World generator training step: step time, images/s and peak memory, with the teacher losses.

Compares the float32 eager step ("as trained": one channels_last pass of G's image per teacher
serves both teacher terms; host sync once per log interval) with the earlier way
(``perceptual_distance`` and ``attributes`` as separate NCHW passes, a sync per step) and with
the speed options: ``--amp bf16`` (bfloat16 autocast forward passes) and ``--compile 1``
(torch.compile of the renderer and the forward; its compile time is printed apart). `make
world-generator` runs bf16 + compile by default. The render of the targets is timed alone too:
it is part of every step. The teachers are randomly initialised world CNNs: speed does not
depend on their weights.

Run: ``python benchmarks/generator_training.py [--device cuda] [--batch 32] [--steps 10]
[--sharp-teachers 2]``.
"""
import argparse
import dataclasses
import platform
import resource
import time

import torch

from clcae.worlds.procfaces.train_generator import (
    GeneratorLoss,
    GeneratorTrainConfig,
    TrainState,
    regression_loss,
    regression_step,
)
from clcae.worlds.procfaces.world_cnn import WorldCNN, perceptual_distance


class SeparatePassesLoss(GeneratorLoss):
    """The earlier teacher losses: three NCHW passes per teacher and a host sync per term."""

    def __call__(self, image, batch):
        cfg = self.cfg
        loss = regression_loss(image, batch.target, batch.mask, cfg.parts_weight)
        perceptual = torch.stack([perceptual_distance(t, image, batch.target).mean() for t in self.teachers]).mean()
        attribute = torch.stack([((t.attributes(image) - batch.labels).abs() / t.attr_std).mean()
                                 for t in self.teachers]).mean()
        loss = loss + cfg.perceptual_weight * perceptual + cfg.attribute_weight * attribute
        return loss, {"loss": loss.item(), "perceptual": perceptual.item(), "attribute": attribute.item()}


def time_steps(st: TrainState, batch_size: int, steps: int, device: torch.device) -> tuple[float, float, float]:
    """(seconds of the first step, which compiles; seconds per regression step after it:
    render + G + teachers + Adam + EMA; seconds per render of the targets alone)."""
    g = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def one():
        z = torch.randn(batch_size, st.cfg.style_dim, generator=g).to(device)
        regression_step(st, z, st.render(z, st.cfg.size), 0.5)
        sync()

    start = time.perf_counter()
    one()
    first = time.perf_counter() - start
    one()  # compiled code may specialise once more
    start = time.perf_counter()
    for _ in range(steps):
        one()
    step = (time.perf_counter() - start) / steps
    z = torch.randn(batch_size, st.cfg.style_dim, generator=g).to(device)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        st.render(z, st.cfg.size)
    sync()
    return first, step, (time.perf_counter() - start) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sharp-teachers", type=int, default=0)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    base = GeneratorTrainConfig(batch_size=args.batch, sharp_teachers=args.sharp_teachers)
    torch.manual_seed(0)
    teachers = [WorldCNN().eval().requires_grad_(False) for _ in range(base.n_teachers + base.sharp_teachers)]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {device}, batch {args.batch}, {base.n_teachers} teachers"
          f" + {base.sharp_teachers} sharp")
    rows = {}
    for name, loss_cls, layout, options in (
            ("separate passes", SeparatePassesLoss, torch.contiguous_format, {}),
            ("as trained", GeneratorLoss, torch.channels_last, {}),
            ("--amp bf16", GeneratorLoss, torch.channels_last, {"amp": "bf16"}),
            ("bf16 + compile", GeneratorLoss, torch.channels_last, {"amp": "bf16", "compile": True})):
        if loss_cls is SeparatePassesLoss and base.sharp_teachers:
            continue  # the earlier way had no sharp teachers
        cfg = dataclasses.replace(base, **options)
        models = [t.to(device, memory_format=layout) for t in teachers]
        st = TrainState(cfg, device, None, models[:cfg.n_teachers], models[cfg.n_teachers:])
        st.loss_fn = loss_cls(cfg, st.loss_fn.teachers, st.loss_fn.sharp_teachers)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        first, rows[name], render = time_steps(st, args.batch, args.steps, device)
        mem = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(f"{name:16s} {rows[name] * 1000:8.1f} ms/step | {args.batch / rows[name]:8.1f} img/s | "
              f"render {render * 1000:6.1f} ms | first step {first:6.1f} s | peak {'GPU' if device.type == 'cuda' else 'RSS (process, so far)'} "
              f"{mem:.0f} MiB")
    print("speed-up over 'as trained': " + ", ".join(f"{name} x{rows['as trained'] / t:.2f}"
                                                     for name, t in rows.items() if name != "as trained"))


if __name__ == "__main__":
    main()
