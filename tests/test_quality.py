"""The generator quality figures: the linear probe against hand-computable cases, and its blur
calibration."""
import numpy as np
import torch

from clcae.worlds.procfaces import procfaces
from clcae.worlds.procfaces.quality import blur_reference, probe_accuracy


def test_probe_accuracy_is_chance_on_one_distribution_and_bayes_on_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    assert abs(probe_accuracy(a, b) - 0.5) < 0.04
    shifted = b + np.array([1.0, 0.0, 0.0, 0.0])
    # two unit Gaussians one std apart: the Bayes accuracy is Phi(0.5) = 0.6915
    assert abs(probe_accuracy(a, shifted) - 0.6915) < 0.03


class EdgeEnergy(torch.nn.Module):
    """Stands in for a world CNN whose pooled features see sharpness: mean |high-pass| per channel."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # cnn_outputs reads the device from it

    def attributes(self, x):
        return x.new_zeros(len(x), 7)

    def pooled(self, x):
        high = x[..., 1:, 1:] * 2 - x[..., :-1, 1:] - x[..., 1:, :-1]
        return high.abs().mean(dim=(2, 3))


def test_blur_reference_is_chance_without_blur_and_separates_a_blur():
    real = procfaces.render_split("train", 100, 4, 0)[0]
    ref = blur_reference(EdgeEnergy(), real, [0.0, 0.5, 1.0, 1.5])
    assert abs(ref["0"] - 0.5) < 0.1  # 200 vs 200 images: chance, within sampling noise
    assert ref["0"] < ref["0.5"] < ref["1"] < ref["1.5"] and ref["1.5"] > 0.75  # measured 0.49 0.61 0.74 0.83
