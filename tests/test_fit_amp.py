"""``shared.cpu_amp``: the trainers' forward under bf16 autocast on the CPU, and only when asked."""
import pytest
import torch
from torch import nn

from clcae.training import Loop, Resumed, ResumePoint, fit


@pytest.mark.parametrize("cpu_amp, dtype", [(False, torch.float32), (True, torch.bfloat16)])
def test_cpu_amp_runs_the_forward_in_bf16(tmp_path, cpu_amp, dtype):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []

    def step_loss(x, step):
        y = model(x)               # a matmul: autocast casts it to bf16 when on
        seen.append(y.dtype)
        loss = y.float().square().mean()
        return loss, {"loss": loss.detach()}

    loop = Loop("amp", model, opt, ResumePoint(tmp_path / "resume.pt", {"run": 1}), 3, torch.device("cpu"),
                batches=lambda start: (torch.randn(8, 4) for _ in range(start, 3)), step_loss=step_loss,
                live_dir=tmp_path / "live", lr=lambda step: 0.1, log_every=1, checkpoint_every=3, cpu_amp=cpu_amp)
    step, _, _ = fit(loop, Resumed())
    assert step == 3 and seen == [dtype] * 3
    assert model.weight.dtype == torch.float32   # autocast leaves the weights (and the optimizer) in float32
