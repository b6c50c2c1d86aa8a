"""Bootstrap intervals for claims: coverage, pairing, seeds."""
import numpy as np
import pandas as pd
import pytest

from clcae.stats import hierarchical_bootstrap, paired_bootstrap, verdict


def test_paired_bootstrap_matches_the_normal_interval_and_uses_the_pairing():
    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 1.0, 2000)                  # image difficulty, shared by both sides
    a = base + rng.normal(-0.05, 0.1, 2000)            # A is 0.05 better (lower)
    iv = paired_bootstrap(a, base, n_boot=4000)
    d = a - base
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert iv.diff == pytest.approx(d.mean())
    assert iv.low == pytest.approx(d.mean() - 1.96 * se, abs=0.3 * se)
    assert iv.high == pytest.approx(d.mean() + 1.96 * se, abs=0.3 * se)
    assert iv.relative == pytest.approx(d.mean() / base.mean())
    assert verdict(iv, lower_is_better=True) == "holds" and verdict(iv, lower_is_better=False) == "reversed"
    # unpaired, the shared difficulty (std 1) would swamp a 0.05 effect; paired it does not
    assert iv.high - iv.low < 0.02


def test_interval_containing_zero_is_inconclusive():
    rng = np.random.default_rng(1)
    b = rng.normal(0, 1, 300)
    iv = paired_bootstrap(b + rng.normal(0, 0.5, 300), b)
    assert iv.low < 0 < iv.high and verdict(iv, lower_is_better=True) == "inconclusive"
    with pytest.raises(ValueError, match=r"\[N >= 2\]"):
        paired_bootstrap(np.ones(3), np.ones(4))


def test_bootstrap_covers_the_planted_difference():
    """Over 200 fresh data sets, the 95% interval contains the true mean difference about 95% of the time."""
    rng = np.random.default_rng(7)
    hits = 0
    for trial in range(200):
        b = rng.gamma(2.0, 1.0, 150)
        a = b - 0.1 + rng.normal(0, 0.5, 150)
        iv = paired_bootstrap(a, b, n_boot=400, seed=trial)
        hits += iv.low <= -0.1 <= iv.high
    assert 0.88 <= hits / 200 <= 0.99


def test_grouped_bootstrap_resamples_people_not_images():
    """Four photos of each person share the person's effect: resampling images alone is too narrow."""
    rng = np.random.default_rng(8)
    people = np.repeat(np.arange(100), 4)
    b = rng.normal(1, 1, 400)
    a = b + rng.normal(0, 0.5, 100)[people] + rng.normal(0, 0.05, 400)   # the effect varies by person
    by_image = paired_bootstrap(a, b)
    by_person = paired_bootstrap(a, b, groups=people)
    assert by_person.n_groups == 100 and by_image.n_groups == 400 and by_person.diff == by_image.diff
    assert (by_person.high - by_person.low) > 1.6 * (by_image.high - by_image.low)   # about sqrt(4) wider
    with pytest.raises(ValueError, match="one group label per image"):
        paired_bootstrap(a, b, groups=people[:10])


def test_hierarchical_interval_widens_when_seeds_disagree():
    rng = np.random.default_rng(2)
    S, N = 4, 500
    b = np.repeat(rng.normal(1.0, 1.0, (1, N)), S, axis=0)      # the same test images for every seed
    per_image = rng.normal(0, 0.3, (1, N))                      # how much A gains on each image, every seed
    noise = per_image + rng.normal(0, 0.05, (S, N))             # + a little seed x image interaction
    agree = b - 0.1 + noise                                     # every seed: A better by 0.1
    seed_effect = np.array([-0.3, 0.25, -0.2, 0.15])[:, None]   # seeds disagree in sign
    disagree = b + seed_effect + noise
    image_only = paired_bootstrap(agree.mean(0), b.mean(0))     # images resampled, seeds averaged
    h_agree = hierarchical_bootstrap(agree, b)
    assert h_agree.n_seeds == S and h_agree.n_images == N
    assert (h_agree.high - h_agree.low) == pytest.approx(image_only.high - image_only.low, rel=0.35)
    h_dis = hierarchical_bootstrap(disagree, b)
    flat = paired_bootstrap(disagree.mean(0), b.mean(0))
    assert (h_dis.high - h_dis.low) > 4 * (flat.high - flat.low)
    # the pooled image-only interval would call it; across seeds it is not a holding claim
    assert verdict(h_dis, lower_is_better=True) != "holds"


def test_one_seed_hierarchical_equals_paired_in_distribution():
    rng = np.random.default_rng(3)
    b = rng.normal(0, 1, (1, 400))
    a = b - 0.2 + rng.normal(0, 0.3, (1, 400))
    h, p = hierarchical_bootstrap(a, b, n_boot=4000), paired_bootstrap(a[0], b[0], n_boot=4000)
    assert h.low == pytest.approx(p.low, abs=0.01) and h.high == pytest.approx(p.high, abs=0.01)


def synthetic_frames(rng, n=200, seeds=(0,)):
    """Per-image frames where clcae F < W+ < W on mse by construction, no_align is worse in W."""
    import pandas as pd

    rows, edits = [], []
    for s in seeds:
        hard = rng.gamma(2.0, 0.01, n)                       # image difficulty
        cells = {("clcae", "w"): 2.0, ("clcae", "wplus"): 1.5, ("clcae", "f"): 0.7,
                 ("no_align", "w"): 2.3, ("no_align", "wplus"): 1.5, ("no_align", "f"): 0.7,
                 ("psp", "w"): 4.0, ("psp", "wplus"): 1.2}
        for (v, sp), k in cells.items():
            mse = hard * k * rng.lognormal(0, 0.05, n)
            rows.append(pd.DataFrame({"variant": v, "space": sp, "image": np.arange(n), "seed": s, "mse": mse,
                                      "identity": 1 - 5 * mse}))
        for v, sp, ident in (("clcae", "f", 0.85), ("clcae", "wplus", 0.7), ("psp", "wplus", 0.72)):
            for strength in (-2.0, 2.0):
                edits.append(pd.DataFrame({"variant": v, "space": sp, "direction": "smile", "strength": strength,
                                           "image": np.arange(n), "seed": s,
                                           "identity": ident + rng.normal(0, 0.05, n),
                                           "target_gain": (1 - ident) + rng.normal(0, 0.05, n)}))
    return pd.concat(rows), pd.concat(edits)


def test_paper_claims_on_synthetic_frames():
    from clcae.claims import paper_claims

    rng = np.random.default_rng(4)
    recon, edits = synthetic_frames(rng)
    table = paper_claims(recon, edits, {"mse": False, "identity": True}, edit_strength=2.0, n_boot=500)
    get = lambda claim, a, b, m: table[(table.claim.str.startswith(claim)) & (table.a == a) & (table.b == b)
                                       & (table.metric == m)].iloc[0]
    assert get("the align loss improves W ", "clcae W", "no_align W", "mse").verdict == "holds"
    assert get("the align loss improves W+", "clcae W+", "no_align W+", "mse").verdict == "inconclusive"  # no effect planted
    assert get("distortion", "clcae F", "clcae W+", "mse").verdict == "holds"
    assert get("distortion", "clcae W+", "clcae W", "identity").verdict == "holds"
    row = get("CLCAE beats", "clcae W+", "psp W+", "mse")
    assert row.verdict == "reversed" and row["diff"] > 0 and row.note == "one training seed"
    assert get("F edits", "clcae F", "clcae W+", "identity").verdict == "holds"
    assert get("(control)", "clcae F", "clcae W+", "target_gain").verdict == "reversed"   # F keeps more, moves less
    # a claim whose cells were not trained is listed, not dropped
    no_ablation = paper_claims(recon[recon.variant != "no_align"], None, {"mse": False}, 2.0, n_boot=200)
    skipped = no_ablation[no_ablation.claim.str.startswith("the align loss")]
    assert (skipped.verdict == "not tested").all() and skipped.note.str.contains("no_align").all()


def test_claims_with_seeds_use_the_hierarchical_interval():
    from clcae.claims import Cell, compare

    rng = np.random.default_rng(5)
    recon, _ = synthetic_frames(rng, n=100, seeds=(0, 1, 2))
    row = compare(recon, "x", Cell("clcae", "f"), Cell("clcae", "wplus"), "mse", False, n_boot=300)
    assert row["n_seeds"] == 3 and row["n_images"] == 100 and row["note"] == ""


def test_claims_pair_by_image_not_by_row_order():
    from clcae.claims import Cell, compare

    rng = np.random.default_rng(6)
    recon, _ = synthetic_frames(rng, n=120)
    recon["person_id"] = recon.image // 4
    base = compare(recon, "x", Cell("clcae", "f"), Cell("clcae", "wplus"), "mse", False, n_boot=300)
    shuffled = recon.sample(frac=1.0, random_state=0)
    assert compare(shuffled, "x", Cell("clcae", "f"), Cell("clcae", "wplus"), "mse", False, n_boot=300) == base
    assert base["n_groups"] == 30 and base["n_images"] == 120
    # a cell scored on fewer images is compared on the images both have
    fewer = recon[~((recon.space == "f") & (recon.image >= 60))]
    row = compare(fewer, "x", Cell("clcae", "f"), Cell("clcae", "wplus"), "mse", False, n_boot=300)
    f, wp = (recon[(recon.variant == "clcae") & (recon.space == s) & (recon.image < 60)].mse.mean() for s in ("f", "wplus"))
    assert row["n_images"] == 60 and row["a_mean"] == pytest.approx(f) and row["b_mean"] == pytest.approx(wp)


def test_claim_whose_seeds_disagree_in_sign_is_not_reported_as_holding():
    from clcae.claims import Cell, compare

    rng = np.random.default_rng(7)
    n, frames = 400, []
    b = rng.gamma(2.0, 0.01, n)
    for s, gain in enumerate([0.004, 0.004, 0.004, 0.004, -0.0005]):   # seed 4 reverses, barely
        a = b - gain + rng.normal(0, 0.0005, n)
        frames += [pd.DataFrame({"variant": "clcae", "space": "f", "image": np.arange(n), "seed": s, "mse": a}),
                   pd.DataFrame({"variant": "clcae", "space": "wplus", "image": np.arange(n), "seed": s, "mse": b})]
    frame = pd.concat(frames)
    pooled = hierarchical_bootstrap(*[frame[frame.space == sp].pivot(index="seed", columns="image", values="mse").to_numpy()
                                      for sp in ("f", "wplus")], n_boot=2000)
    assert verdict(pooled, lower_is_better=True) == "holds"   # the two-level interval alone would call it
    row = compare(frame, "x", Cell("clcae", "f"), Cell("clcae", "wplus"), "mse", False, n_boot=2000)
    assert row["verdict"] == "inconclusive" and row["seeds_on_a_side"] == 4
    assert row["note"] == "seeds disagree in sign (4 of 5 on A's side)"
    assert row["seed_sd"] == pytest.approx(np.std([-0.004] * 4 + [0.0005], ddof=1), rel=0.05)
    agreeing = frame[frame.seed < 4]
    row = compare(agreeing, "x", Cell("clcae", "f"), Cell("clcae", "wplus"), "mse", False, n_boot=2000)
    assert row["verdict"] == "holds" and row["seeds_on_a_side"] == 4 and row["note"] == ""
