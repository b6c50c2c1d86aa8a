"""clcae.metrics: each metric against a reference on fixed inputs, and the registry."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clcae import metrics
from clcae.metrics import MetricUnavailable, compute, is_valid_metric, list_metrics
from clcae.metrics.frechet import FrechetReference, feature_stats, frechet_distance, frechet_from_stats
from clcae.metrics.identity import identity_similarity
from clcae.metrics.lpips import ALEXNET_FILE, lpips_available
from clcae.metrics.mse import l2_psp, mse01
from clcae.metrics.probe import probe_accuracy
from clcae.metrics.psnr import batch_psnr, psnr
from clcae.metrics.regression import attribute_r2
from clcae.metrics.runtime import seconds_per_image
from clcae.metrics.ssim import ms_ssim, ms_ssim_scales, ssim
from clcae.metrics.verification import same_person_threshold, verification_accuracy


def pair(b=3, h=32, w=40, noise=0.3, seed=0, dtype=torch.float32):
    """Images in [-1, 1] and a noisy copy (SSIM well away from 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g) * 2 - 1
    y = (x + noise * torch.randn(b, 3, h, w, generator=g)).clamp(-1, 1)
    return x.to(dtype), y.to(dtype)


def hwc01(img: torch.Tensor) -> np.ndarray:
    """One [3, H, W] image in [-1, 1] as scikit-image's [H, W, 3] float64 in [0, 1]."""
    return ((img.double() + 1) / 2).permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------- registry

def test_registry_names_and_unknown_metric_error():
    assert list_metrics() == ["mse", "l2_psp", "psnr", "ssim", "ms_ssim", "lpips"]
    assert is_valid_metric("ssim") and not is_valid_metric("fid")
    with pytest.raises(ValueError) as err:
        compute("lpisp", *pair())
    assert str(err.value) == ("unknown metric 'lpisp'; known metrics: "
                              "mse, l2_psp, psnr, ssim, ms_ssim, lpips")
    assert metrics.get_metric("psnr").higher_is_better and not metrics.get_metric("mse").higher_is_better
    assert metrics.get_metric("lpips").context == ("lpips_net",)


def test_compute_checks_shapes_and_context_keys():
    x, y = pair()
    torch.testing.assert_close(compute("ssim", x, y), ssim(x, y))
    # one shared context serves every metric: each takes its own keys
    torch.testing.assert_close(compute("ms_ssim", x, y, scales=1, lpips_net=None), ssim(x, y))
    with pytest.raises(TypeError, match=r"\['lpips_nett'\].*known keys: \['lpips_net', 'scales'\]"):
        compute("mse", x, y, lpips_nett=None)
    with pytest.raises(ValueError, match=r"same shape.*\(3, 3, 32, 40\) and \(2, 3, 32, 40\)"):
        compute("mse", x, y[:2])
    with pytest.raises(ValueError, match="float images"):
        compute("mse", x, (y > 0).to(torch.uint8))
    with pytest.raises(ValueError, match="already registered"):
        metrics.register_metric("mse", higher_is_better=False)(lambda x, y: x)


# ----------------------------------------------------------------------------- MSE, PSNR

def test_mse01_and_l2_psp_by_hand():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.full((2, 3, 4, 4), 0.5)
    y[1] = -1.0  # [0, 1] scale: 0.5 vs 0.0
    # [-1, 1] differences 0.5 and 1.0: squared 0.25 and 1.0; on [0, 1] halved, squared 0.0625 and 0.25
    torch.testing.assert_close(l2_psp(x, y), torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(mse01(x, y), torch.tensor([0.0625, 0.25]))
    a, b = pair()
    assert mse01(a, b).shape == (3,)
    assert torch.equal(l2_psp(a, b), 4 * mse01(a, b))  # exact: scaling by 4 is exact in floating point


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_psnr_matches_scikit_image(dtype, tol):
    from skimage.metrics import peak_signal_noise_ratio

    x, y = pair(dtype=dtype)
    ours = psnr(x, y)
    ref = [peak_signal_noise_ratio(hwc01(a), hwc01(b), data_range=1) for a, b in zip(x, y)]
    assert ours.shape == (3,)
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=0, atol=tol)
    assert torch.equal(psnr(x, x), torch.full((3,), 120.0, dtype=dtype))  # MSE floored at 1e-12


def test_batch_psnr_pools_the_mse_over_the_batch():
    x, y = pair()
    pooled = float(mse01(x, y).double().mean())
    assert batch_psnr(x, y) == pytest.approx(10 * math.log10(1 / pooled), abs=1e-5)
    # value of train_generator.psnr before it moved here (same code, computed at d3da830)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(5, 3, 16, 16, generator=g) * 2 - 1, torch.rand(5, 3, 16, 16, generator=g) * 2 - 1
    assert batch_psnr(a, b) == 7.776450864913754 and batch_psnr(a, a * 0.99) == 50.836241431140785


# ----------------------------------------------------------------------------- SSIM, MS-SSIM

@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-9)])
def test_ssim_matches_scikit_image_gaussian_window(dtype, tol):
    from skimage.metrics import structural_similarity

    x, y = pair(dtype=dtype)  # non-square, so rows and columns are not mixed up
    ours = ssim(x, y)
    # scikit-image reflects at the border and crops 5 px before averaging: the valid region we compute
    ref = [structural_similarity(hwc01(a), hwc01(b), gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1, channel_axis=2)
           for a, b in zip(x, y)]
    assert ours.shape == (3,) and 0.5 < min(ref) and max(ref) < 0.99
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=0, atol=tol)
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=dtype))


def test_ms_ssim_scales_rule():
    assert [ms_ssim_scales(s) for s in (1024, 256, 176, 175, 128, 64, 32, 22, 21, 11)] == \
        [5, 5, 5, 4, 4, 3, 2, 2, 1, 1]
    assert ms_ssim_scales(64, 256) == 3
    with pytest.raises(ValueError, match="at least 11 px"):
        ms_ssim_scales(10)
    x, y = pair(2, 64, 64)
    with pytest.raises(ValueError, match=r"allow 1\.\.3 scales, got 4"):
        ms_ssim(x, y, scales=4)
    torch.testing.assert_close(ms_ssim(x, y), ms_ssim(x, y, scales=3))
    torch.testing.assert_close(ms_ssim(x, y, scales=1), ssim(x, y))  # one scale, weight 1: SSIM
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(2))


def test_ms_ssim_matches_pytorch_msssim():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    x, y = pair(2, 176, 176, noise=0.5)  # pytorch_msssim wants > 160 px; 176 // 16 = 11: 5 scales
    x01, y01 = (x + 1) / 2, (y + 1) / 2
    ref = pytorch_msssim.ms_ssim(x01, y01, data_range=1, size_average=False)  # the published 5 weights
    torch.testing.assert_close(ms_ssim(x, y), ref, rtol=0, atol=1e-5)
    for n in (2, 3, 4):  # truncated weights, renormalised
        w = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333][:n])
        ref = pytorch_msssim.ms_ssim(x01, y01, data_range=1, size_average=False, weights=(w / w.sum()).tolist())
        torch.testing.assert_close(ms_ssim(x, y, scales=n), ref, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- LPIPS

def test_lpips_is_unavailable_without_the_alexnet_file(tmp_path, monkeypatch):
    """The reason says where torchvision looks without this machine's paths (stage metrics record it);
    a path the user gave is named."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    ok, reason = lpips_available()
    assert not ok and f"torch.hub.get_dir()/checkpoints/{ALEXNET_FILE}" in reason and "Nothing is downloaded" in reason
    assert str(tmp_path) not in reason and "site-packages" not in reason
    assert "the file nowhere/alex.pth" in lpips_available("nowhere/alex.pth")[1]
    with pytest.raises(MetricUnavailable) as err:
        compute("lpips", *pair())
    assert err.value.metric == "lpips" and err.value.reason == reason
    assert isinstance(err.value, FileNotFoundError)
    assert not (tmp_path / "empty_home").exists()  # nothing was downloaded


def test_lpips_equals_the_lpips_package_with_the_same_alexnet(tmp_path, monkeypatch):
    """A seeded stand-in AlexNet under torchvision's file name; the lpips package loads it through
    torchvision itself (pretrained=True), our metric through clcae.metrics.lpips."""
    import lpips
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(1)
    state = torchvision.models.alexnet().state_dict()
    # torchvision loads the whole net: the classifier (unused by LPIPS) as stride-0 zeros keeps the file small
    state = {k: v if k.startswith("features.") else torch.zeros(()).expand(v.shape) for k, v in state.items()}
    torch.save(state, tmp_path / "hub" / "checkpoints" / ALEXNET_FILE)
    assert lpips_available() == (True, "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = lpips.LPIPS(net="alex", verbose=False).eval()
    x, y = pair(2, 64, 64, noise=0.5)
    with torch.no_grad():
        expected = reference(x, y).flatten()
    ours = compute("lpips", x, y)
    assert ours.shape == (2,) and (ours > 0).all()
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(compute("lpips", x, y, lpips_net=reference), expected, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- Frechet

def test_frechet_closed_form_in_one_dimension_and_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, size=(500, 1)), rng.normal(-0.5, 0.5, size=(400, 1))
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2, with the sample (ddof 1) moments
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 4.0 + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()  # = 5 + 4 + 1 + 0
    assert frechet_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(expected, rel=1e-12)
    assert frechet_from_stats(mu_a, np.diag(var_a), mu_a, np.diag(var_a)) == pytest.approx(0, abs=1e-12)


def test_frechet_matches_scipy_sqrtm_on_random_features():
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 8, generator=g) @ torch.randn(8, 8, generator=g)
    b = torch.randn(200, 8, generator=g) * 0.7 + 0.3
    mu_a, s_a = feature_stats(a)
    mu_b, s_b = feature_stats(b)
    assert mu_a.dtype == np.float64 and s_a.shape == (8, 8)
    np.testing.assert_allclose(s_a, np.cov(a.double().numpy(), rowvar=False), rtol=1e-12)
    # tr (S_a S_b)^(1/2) = tr (S_a^(1/2) S_b S_a^(1/2))^(1/2): the symmetric form, via scipy's sqrtm
    root_a = linalg.sqrtm(s_a).real
    expected = (((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b)
                - 2 * np.trace(linalg.sqrtm(root_a @ s_b @ root_a).real))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    # fewer samples than dimensions: singular covariances still give a finite, near-zero self-distance
    few = torch.randn(5, 8, generator=g)
    assert abs(frechet_distance(few, few)) < 1e-4
    with pytest.raises(ValueError, match=r"\[N >= 2, D\]"):
        feature_stats(torch.randn(1, 8))


def test_frechet_reference_agrees_with_scipy_sqrtm():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(400, 16, generator=g) @ torch.randn(16, 16, generator=g)
    ref = FrechetReference(real)
    for scale in (0.5, 1.0, 2.0):
        fake = torch.randn(150, 16, generator=g) @ torch.randn(16, 16, generator=g) * scale + 0.2
        assert ref.distance(fake) == pytest.approx(frechet_distance(fake, real), rel=1e-7)
    assert abs(ref.distance(real)) < 1e-8
    with pytest.raises(ValueError, match="dimension 8, reference 16"):
        ref.distance(torch.randn(10, 8))


# ----------------------------------------------------------------------------- identity, verification

def test_identity_similarity_is_the_cosine():
    theta = torch.tensor([0.0, 0.5, 2.0])
    a = torch.stack([torch.ones(3), torch.zeros(3), torch.zeros(3)], 1)  # e0
    b = torch.stack([theta.cos(), theta.sin(), torch.zeros(3)], 1) * 3.0  # not unit: normalised
    torch.testing.assert_close(identity_similarity(a, b), theta.cos())
    with pytest.raises(ValueError, match="same shape"):
        identity_similarity(a, b[:, :2])


def known_embeddings(n_people=10, per_person=4):
    """Unit embeddings with cosine exactly 0.9 within a person and 0.1 across people:
    sqrt(0.1) common + sqrt(0.8) person + sqrt(0.1) own axis, all orthonormal."""
    n = n_people * per_person
    pid = torch.arange(n_people).repeat_interleave(per_person)
    emb = torch.zeros(n, 1 + n_people + n, dtype=torch.float64)
    emb[:, 0] = math.sqrt(0.1)
    emb[torch.arange(n), 1 + pid] = math.sqrt(0.8)
    emb[torch.arange(n), 1 + n_people + torch.arange(n)] = math.sqrt(0.1)
    return emb, pid


def test_verification_with_a_threshold_known_by_construction():
    emb, pid = known_embeddings()
    assert verification_accuracy(emb, pid) == 1.0
    assert same_person_threshold(emb, pid) == pytest.approx(0.5, abs=1e-9)  # midway between 0.1 and 0.9


def seeded_embeddings(seed, noise, n_people=40, per_person=4, dim=16):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_people, dim, generator=g)
    pid = torch.arange(n_people).repeat_interleave(per_person)
    emb = F.normalize(centres[pid] + noise * torch.randn(len(pid), dim, generator=g), dim=1)
    return emb, pid


def test_verification_values_unchanged_by_the_move():
    """Figures of world_cnn.verification_accuracy / _best_threshold(_pairs(all people)) computed with
    the code before it moved here (commit d3da830), on the same seeded embeddings."""
    emb, pid = seeded_embeddings(0, 0.8)
    assert [verification_accuracy(emb, pid, seed=s) for s in (0, 1, 7)] == [
        0.8958333432674408, 0.8687500059604645, 0.9000000059604645]
    assert same_person_threshold(emb, pid, seed=0) == 0.3850632905960083
    assert verification_accuracy(*seeded_embeddings(1, 2.0), seed=0) == 0.6520833373069763
    assert same_person_threshold(*seeded_embeddings(2, 0.3), seed=2) == 0.6922289133071899


def test_world_cnn_uses_the_moved_metrics():
    from clcae.worlds.procfaces import quality, world_cnn

    assert world_cnn.verification_accuracy is verification_accuracy
    assert world_cnn.attribute_r2 is attribute_r2 and quality.probe_accuracy is probe_accuracy


# ----------------------------------------------------------------------------- R^2, probe

def test_attribute_r2_names_and_values_unchanged_by_the_move():
    from sklearn.metrics import r2_score

    from clcae.worlds.procfaces.procfaces import ATTRIBUTES

    g = torch.Generator().manual_seed(3)
    t = torch.randn(200, len(ATTRIBUTES), generator=g)
    p = t + 0.5 * torch.randn(200, len(ATTRIBUTES), generator=g)
    r2 = attribute_r2(p, t, ATTRIBUTES)
    assert list(r2) == [*ATTRIBUTES, "mean"]
    assert r2["smile"] == pytest.approx(r2_score(t[:, ATTRIBUTES.index("smile")], p[:, ATTRIBUTES.index("smile")]))
    # world_cnn.attribute_r2 before the move (commit d3da830)
    assert (r2["age"], r2["mean"]) == (0.7581181526184082, 0.7568008899688721)
    assert attribute_r2(t, t, [f"c{j}" for j in range(t.shape[1])])["mean"] == 1.0
    with pytest.raises(ValueError, match="names"):
        attribute_r2(p, t, ["smile"])


def test_probe_accuracy_unchanged_by_the_move():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.3
    # quality.probe_accuracy before the move (commit d3da830)
    assert [probe_accuracy(a, b, seed=s) for s in (0, 1)] == [0.6733333333333333, 0.7466666666666667]


# ----------------------------------------------------------------------------- runtime

def test_seconds_per_image_warms_up_and_takes_the_median():
    calls, ticks = [], iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # repeats of 1, 3 and 2 s

    def fn(x):
        calls.append(x.shape[0])

    per_image = seconds_per_image(fn, torch.zeros(4, 3, 8, 8), warmup=2, repeats=3, clock=lambda: next(ticks))
    assert per_image == 2.0 / 4 and calls == [4] * 5
    with pytest.raises(ValueError, match="repeats >= 1"):
        seconds_per_image(fn, torch.zeros(1), repeats=0)
