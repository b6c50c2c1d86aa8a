"""ProcFaces renderer: determinism, split disjointness, label locality, continuity, I/O."""

import pandas as pd
import pytest
import torch

from clcae.worlds.procfaces import procfaces as pf


@pytest.fixture(scope="module")
def base_params():
    """32 random faces without glasses or beard (they would cover the features we measure)."""
    u = pf.sample_latents(32, torch.Generator().manual_seed(3))
    p = pf.decode(u)
    p["glasses"] = torch.zeros(32)
    p["beard"] = torch.zeros(32)
    return p


def _with(p, **values):
    q = dict(p)
    for k, v in values.items():
        q[k] = torch.full_like(p[k], float(v))
    return q


def test_latent_layout():
    assert pf.LATENT_DIM == len(pf.PARAM_NAMES)
    assert pf.ATTRIBUTES == ["smile", "eye_open", "yaw", "beard", "glasses", "lip_red", "age"]
    dims = set(pf.IDENTITY_DIMS) | set(pf.ATTRIBUTE_DIMS) | set(pf.NUISANCE_DIMS)
    assert dims == set(range(pf.LATENT_DIM))
    assert not set(pf.IDENTITY_DIMS) & set(pf.ATTRIBUTE_DIMS)


def test_render_split_deterministic_by_seed():
    a = pf.render_split("train", 3, 2, seed=0, batch_size=4)
    b = pf.render_split("train", 3, 2, seed=0, batch_size=5)
    c = pf.render_split("train", 3, 2, seed=1)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    # test-split details (pixel noise included) do not depend on the batching either
    t1 = pf.render_split("test", 3, 2, seed=0, batch_size=4)
    t2 = pf.render_split("test", 3, 2, seed=0, batch_size=6)
    assert torch.equal(t1[0], t2[0])
    assert not torch.equal(t1[0], pf.render_split("test", 3, 2, seed=1)[0])


def test_splits_have_disjoint_identities():
    u_tr, id_tr = pf.sample_split("train", 50, 3, seed=0)
    u_te, id_te = pf.sample_split("test", 50, 3, seed=0)
    assert not set(id_tr.tolist()) & set(id_te.tolist())
    assert id_tr.dtype == torch.int64 and u_tr.shape == (150, pf.LATENT_DIM)
    ident = list(pf.IDENTITY_DIMS)
    tr = {tuple(r) for r in u_tr[:, ident].tolist()}
    te = {tuple(r) for r in u_te[:, ident].tolist()}
    assert len(tr) == 50 and len(te) == 50 and not tr & te
    # identity fixed within a person, everything else drawn per image
    per = u_tr.view(50, 3, -1)
    assert torch.equal(per[:, 0, ident], per[:, 2, ident])
    other = [d for d in range(pf.LATENT_DIM) if d not in ident]
    assert (per[:, 0, other] != per[:, 1, other]).all()
    with pytest.raises(ValueError, match="split"):
        pf.sample_split("val", 2, 2, 0)


def test_value_ranges():
    images, u, pid, labels = pf.render_split("test", 8, 4, seed=2)
    assert images.dtype == torch.uint8 and images.shape == (32, 3, 64, 64)
    assert labels.shape == (32, len(pf.ATTRIBUTES))
    yaw = pf.ATTRIBUTES.index("yaw")
    others = [j for j in range(len(pf.ATTRIBUTES)) if j != yaw]
    assert labels[:, others].min() >= 0 and labels[:, others].max() <= 1
    assert labels[:, yaw].abs().max() <= 1
    x = pf.render(pf.decode(torch.randn(16, pf.LATENT_DIM) * 3))  # extreme latents too
    assert x.shape == (16, 3, 64, 64) and x.min() >= -1 and x.max() <= 1 and torch.isfinite(x).all()
    assert pf.render(pf.decode(u[:4]), size=32).shape == (4, 3, 32, 32)


@pytest.mark.parametrize("name, lo, hi, region", [
    ("smile", 0.0, 1.0, "mouth"),
    ("lip_red", 0.0, 1.0, "mouth"),
    ("eye_open", 0.1, 1.0, "eyes"),
    ("glasses", 0.0, 1.0, "glasses"),
])
def test_attribute_changes_stay_in_their_region(base_params, name, lo, hi, region):
    for yaw in (-0.8, 0.0, 0.8):
        p0 = _with(base_params, yaw=yaw, **{name: lo})
        p1 = _with(base_params, yaw=yaw, **{name: hi})
        diff = (pf.render(p1) - pf.render(p0)).abs().sum(1, keepdim=True)  # [N, 1, 64, 64]
        assert (diff.flatten(1).sum(1) > 1.0).all(), f"{name} barely changes the image"
        inside = (diff * pf.region_mask(p0, 64, (region,))).flatten(1).sum(1)
        frac = inside / diff.flatten(1).sum(1)
        assert frac.min() > 0.7, f"{name}: only {frac.min():.2f} of the change inside {region}"


def test_yaw_moves_features_with_its_sign(base_params):
    """Centroid of the dark features (eyes, brows, nose, mouth) inside the inner face box."""
    def centroid(p):
        luma = pf.render(p).mean(1)  # [N, 64, 64]
        skin = pf._palette(p["skin_tone"], pf._SKIN).mean(1) * 2 - 1
        w = torch.relu(skin[:, None, None] - luma - 0.1)[:, 22:46, 19:45]
        xs = torch.arange(19, 45, dtype=torch.float32)
        return (w.sum(1) * xs).sum(1) / w.sum((1, 2))

    c = torch.stack([centroid(_with(base_params, yaw=y)) for y in (-0.8, 0.0, 0.8)])  # [3, N]
    assert (c[2] > c[0]).all()
    assert c[2].mean() > c[1].mean() + 1.0 > c[0].mean() + 2.0


def test_u_to_image_is_continuous():
    u = pf.sample_latents(16, torch.Generator().manual_seed(5))
    x0 = pf.render(pf.decode(u))
    gen = torch.Generator().manual_seed(6)
    for eps in (1e-3, 1e-2):
        du = torch.randn(u.shape, generator=gen)
        du = du / du.norm(dim=1, keepdim=True) * eps
        diff = (pf.render(pf.decode(u + du)) - x0).abs()
        # measured: mean ~0.07 * eps, max ~3 * eps (pixel values in [-1, 1])
        assert diff.mean() < 0.5 * eps, f"eps={eps}: mean change {diff.mean():.2e}"
        assert diff.amax() < 20 * eps, f"eps={eps}: max change {diff.amax():.3f}"


def test_details_only_change_the_image_where_switched_on():
    u = pf.sample_latents(6, torch.Generator().manual_seed(7))
    d = pf.sample_details(6, torch.Generator().manual_seed(8))
    d["on"] = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    plain = pf.render(pf.decode(u))
    detailed = pf.render(pf.decode(u), details=d)
    change = (detailed - plain).abs().flatten(1).mean(1)
    assert (change[0::2] > 0.01).all()
    assert torch.allclose(detailed[1::2], plain[1::2], atol=1e-5)


def test_png_folder_round_trip(tmp_path):
    images, u, pid, labels = pf.render_split("train", 3, 2, seed=0)
    df = pf.labels_frame(u, pid, labels)
    out = pf.write_png_folder(images, df, tmp_path / "faces")
    back, df_back = pf.read_png_folder(out)
    assert torch.equal(back, images)
    assert list(df_back.columns[:2]) == ["file", "person_id"]
    assert list(df_back.columns[2:2 + len(pf.ATTRIBUTES)]) == pf.ATTRIBUTES
    assert [c for c in df_back.columns if c.startswith("u_")] == [f"u_{j}" for j in range(pf.LATENT_DIM)]
    pd.testing.assert_series_equal(df_back["person_id"], df["person_id"])
    u_back = torch.tensor(df_back[[f"u_{j}" for j in range(pf.LATENT_DIM)]].to_numpy(), dtype=torch.float32)
    assert torch.allclose(u_back, u, atol=1e-6)
    # rewriting replaces the folder and leaves no temp folders behind
    pf.write_png_folder(images[:2], df.iloc[:2], out)
    assert len(pf.read_png_folder(out)[0]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]
    with pytest.raises(ValueError, match="rows"):
        pf.write_png_folder(images, df.iloc[:1], tmp_path / "bad")


def test_row_crops_do_not_clip_features(monkeypatch):
    """Parts are drawn on row bands for speed; drawing them on full rows must agree."""
    u = pf.sample_latents(64, torch.Generator().manual_seed(9)) * 1.5  # extremes included
    d = pf.sample_details(64, torch.Generator().manual_seed(10))
    cropped = pf.render(pf.decode(u), details=d)
    rows = pf._Canvas.rows
    monkeypatch.setattr(pf._Canvas, "rows", lambda self, y0, y1: rows(self, -1.0, 1.0))
    full = pf.render(pf.decode(u), details=d)
    assert (cropped - full).abs().max() < 0.01
