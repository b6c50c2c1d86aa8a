import pytest
import torch
import torchvision.transforms.functional as TF

from clcae.images import gaussian_blur


def test_gaussian_blur_matches_torchvision_per_image_and_zero_sigma_is_identity():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sigma = torch.tensor([0.0, 0.6, 1.0])
    out = gaussian_blur(x, sigma)
    torch.testing.assert_close(out[0], x[0])
    for i in (1, 2):  # torchvision: one sigma per call, reflect padding, kernel size 2r+1
        torch.testing.assert_close(out[i], TF.gaussian_blur(x[i], [5, 5], [sigma[i].item()] * 2))
    same = gaussian_blur(x[:1].repeat(3, 1, 1, 1), sigma)  # one image, sigma 0, 0.6, 1
    assert same[2].std() < same[1].std() < same[0].std()


def test_gaussian_blur_names_the_bad_shapes():
    with pytest.raises(ValueError, match=r"sigma \[N\].*\(2,\)"):
        gaussian_blur(torch.zeros(3, 3, 8, 8), torch.zeros(2))
