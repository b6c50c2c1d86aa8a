"""Editing: InterFaceGAN and GANSpace directions, published files, edits in W / W+ / F, scores."""
import numpy as np
import pytest
import torch
from test_encoder import tiny_encoder
from tiny import tiny_generator

from clcae.data import resize_square
from clcae.editing import (
    Direction,
    DirectionError,
    Editor,
    LayerRange,
    fit_boundary,
    fit_pca,
    load_direction,
    load_pca,
    project_out,
    read_directions,
    save_direction,
    save_pca,
)
from clcae.editing.scores import EditJudges, edit_sweep, editing_consistency
from clcae.inversion import invert
from clcae.metrics.frechet import frechet_distance
from clcae.pipeline.fit_directions import fit_interfacegan, sample_labelled


def planted(n=4000, d=32, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(d, generator=g)
    normal = normal / normal.norm()
    latents = torch.randn(n, d, generator=g) * 2 + 0.5
    scores = latents @ normal + noise * torch.randn(n, generator=g)
    return latents, scores, normal


def test_svm_recovers_a_planted_linear_attribute():
    latents, scores, normal = planted()
    b = fit_boundary(latents, scores, chosen_frac=0.2, train_frac=0.7, seed=0)
    assert float(b.normal @ normal) > 0.95 and abs(b.normal.norm().item() - 1) < 1e-5
    assert b.val_accuracy > 0.97 and b.remaining_accuracy > 0.9
    assert (b.n_train, b.n_val) == (2 * 560, 2 * 240)
    assert b.latent_std == pytest.approx(float((latents @ b.normal).std()), rel=1e-5)


def test_svm_refuses_too_few_chosen_samples():
    latents, scores, _ = planted(n=20)
    with pytest.raises(ValueError, match="leaves 1 per side"):
        fit_boundary(latents, scores, chosen_frac=0.05)


def test_conditional_direction_projects_the_condition_out():
    e = torch.eye(4)
    assert torch.allclose(project_out(e[0] + e[1], e[1]), e[0])
    primal = torch.tensor([1.0, 2.0, 3.0, 4.0])
    cond = project_out(primal, e[1], e[2] + e[3])
    assert abs(float(cond @ e[1])) < 1e-6 and abs(float(cond @ (e[2] + e[3]))) < 1e-6
    assert torch.allclose(cond, torch.tensor([1.0, 0.0, -0.5, 0.5]) / np.sqrt(1.5), atol=1e-6)
    with pytest.raises(ValueError, match="span"):
        project_out(e[1], e[1])


def test_pca_matches_numpy_svd():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 12, generator=g) @ torch.randn(12, 12, generator=g) + 3.0
    basis, ratio = fit_pca(x, 5)
    xc = (x - x.mean(0)).double().numpy()
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    comp = basis.comp[:, 0].double().numpy()
    assert np.allclose(np.abs((comp * vt[:5]).sum(1)), 1.0, atol=1e-5)   # same axes (sign is ours)
    assert np.allclose(basis.std.numpy(), s[:5] / np.sqrt(len(x) - 1), rtol=1e-5)
    assert np.allclose(ratio.numpy(), s[:5] ** 2 / (s ** 2).sum(), rtol=1e-5)
    assert torch.allclose(basis.mean[0], x.mean(0), atol=1e-5)
    assert basis.comp.shape == (5, 1, 12) and basis.mean.shape == (1, 12)
    # strength 1 on a component moves one standard deviation along it
    d = basis.direction(2)
    assert float(d.vector.norm()) == pytest.approx(float(basis.std[2]), rel=1e-6)


def test_directions_round_trip(tmp_path):
    d = Direction("smile", torch.randn(16))
    save_direction(d, tmp_path / "smile.pt")
    assert torch.load(tmp_path / "smile.pt").shape == (1, 16)   # the published [1, D] layout
    back = load_direction(tmp_path / "smile.pt", 16)
    assert torch.equal(back.vector, d.vector) and back.name == "smile"
    basis, _ = fit_pca(torch.randn(100, 16), 4)
    save_pca(basis, tmp_path / "pca.pt")
    again = load_pca(tmp_path / "pca.pt", 16)
    assert all(torch.equal(getattr(again, k), getattr(basis, k)) for k in ("mean", "comp", "std"))
    np.save(tmp_path / "stylegan_ffhq_smile_w_boundary.npy", d.vector[None].double().numpy())
    assert torch.allclose(load_direction(tmp_path / "stylegan_ffhq_smile_w_boundary.npy", 16).vector, d.vector)


def save_as_if_cuda(obj, path, monkeypatch):
    """torch.save with every storage tagged 'cuda:0', as a file saved from a GPU is."""
    import torch.serialization as ser

    with monkeypatch.context() as m:
        m.setattr(ser, "location_tag", lambda storage: "cuda:0")
        torch.save(obj, path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only machine reading a GPU-saved file")
def test_published_files_saved_on_a_gpu_load_on_cpu(tmp_path, monkeypatch):
    save_as_if_cuda(torch.randn(1, 16), tmp_path / "age.pt", monkeypatch)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(tmp_path / "age.pt")                 # what the official scripts do
    assert load_direction(tmp_path / "age.pt", 16).vector.device.type == "cpu"
    basis, _ = fit_pca(torch.randn(100, 16), 3)
    save_as_if_cuda(basis.state(), tmp_path / "ffhq_pca.pt", monkeypatch)
    assert load_pca(tmp_path / "ffhq_pca.pt", 16).comp.shape == (3, 1, 16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only machine reading a GPU-saved file")
def test_per_layer_directions_as_clcae_publishes_pose(tmp_path, monkeypatch):
    """CLCAE's pose.pt: [1, 18, 512], 18 identical rows, saved on cuda:0 -> one [D] vector. Different
    rows: an edit layer by layer. A wrong N or D is named with both sizes."""
    v = torch.nn.functional.normalize(torch.randn(16), dim=0)
    save_as_if_cuda(v.expand(1, 6, 16).clone(), tmp_path / "pose.pt", monkeypatch)
    pose = load_direction(tmp_path / "pose.pt", 16, n_latent=6)
    assert not pose.per_layer and torch.equal(pose.vector, v)
    rows = torch.randn(1, 6, 16)
    torch.save(rows, tmp_path / "layered.pt")
    layered = load_direction(tmp_path / "layered.pt", 16, n_latent=6)
    assert layered.per_layer and torch.equal(layered.delta(2.0, 6), 2.0 * rows)
    assert torch.equal(layered.delta(torch.tensor([1.0, -1.0]), 6, LayerRange(1, 2))[:, [0, 3, 4, 5]],
                       torch.zeros(2, 4, 16))
    save_direction(layered, tmp_path / "again.pt")
    assert torch.equal(torch.load(tmp_path / "again.pt"), rows)   # the published layout kept
    with pytest.raises(DirectionError, match=r"layered\.pt: a per-layer direction \[1, 6, 16\] of 6 layers; the "
                                             r"generator has 18 w\+ layers"):
        load_direction(tmp_path / "layered.pt", 16, n_latent=18)
    with pytest.raises(DirectionError, match="of 6 layers; the generator has 8 w\\+ layers"):
        layered.delta(1.0, 8)
    with pytest.raises(DirectionError, match=r"pose\.pt: direction of dimension 16 .* latent dimension 512"):
        load_direction(tmp_path / "pose.pt", 512)


def test_wrong_dimension_and_layout_name_the_file(tmp_path):
    torch.save(torch.randn(1, 512), tmp_path / "pose.pt")
    with pytest.raises(DirectionError, match=r"pose\.pt: direction of dimension 512 .* latent dimension 128"):
        load_direction(tmp_path / "pose.pt", 128)
    torch.save({"mean": torch.zeros(1, 512), "comp": torch.zeros(2, 1, 512), "std": torch.ones(2)}, tmp_path / "pca.pt")
    with pytest.raises(DirectionError, match=r"pca\.pt: direction of dimension 512 .* 128"):
        load_pca(tmp_path / "pca.pt", 128)
    with pytest.raises(DirectionError, match="use load_pca"):
        load_direction(tmp_path / "pca.pt", 512)
    torch.save(torch.randn(3, 8), tmp_path / "bad.pt")
    with pytest.raises(DirectionError, match=r"bad\.pt: expected a direction tensor \[1, D\], \[D\] or per layer "
                                             r"\[1, N, D\], got \[3, 8\]"):
        load_direction(tmp_path / "bad.pt", 8)
    with pytest.raises(DirectionError, match="missing"):
        torch.save({"mean": torch.zeros(1, 8)}, tmp_path / "half.pt")
        load_pca(tmp_path / "half.pt", 8)


def test_layer_range_delta():
    d = Direction("x", torch.ones(4), layers=LayerRange(2, 3))
    delta = d.delta(torch.tensor([1.0, -2.0]), n_latent=6)
    assert delta.shape == (2, 6, 4)
    assert torch.equal(delta[:, [0, 1, 4, 5]], torch.zeros(2, 4, 4))
    assert torch.equal(delta[1, 2:4], torch.full((2, 4), -2.0))
    with pytest.raises(ValueError, match="outside the generator's 0..5"):
        d.delta(1.0, n_latent=6, layers=LayerRange(4, 6))


@pytest.fixture(scope="module")
def inverted():
    G = tiny_generator(size=32, style_dim=32)
    encoder = tiny_encoder(G, image_size=64).eval()
    x = torch.rand(6, 3, 64, 64) * 2 - 1
    return G, encoder, x, invert(encoder, G, x, batch_size=4, keep_codes=True)


def test_edit_at_strength_zero_is_the_inversion(inverted):
    G, encoder, _, inv = inverted
    editor = Editor.for_encoder(encoder, G, batch_size=4)   # the chunks invert used
    out = editor.edit(inv, Direction("d", torch.randn(G.style_dim)), 0.0)
    for space, image in inv.images().items():
        assert torch.equal(out.images[space], image), space
    assert torch.equal(out.f, inv.f) and torch.equal(out.wplus, inv.wplus)


def test_edit_needs_codes_in_encoder_mode(inverted):
    G, encoder, x, _ = inverted
    with pytest.raises(ValueError, match="keep_codes=True"):
        Editor.for_encoder(encoder, G).edit(invert(encoder, G, x[:2]), Direction("d", torch.randn(G.style_dim)), 1.0)
    with pytest.raises(ValueError, match="needs the encoder"):
        Editor(G, mode="encoder")


def test_official_edit_recomputes_wplus_and_f_from_the_moved_w(inverted):
    """AFPSP.forward(edit_offset=d): w' = w + d enters the encoder before the cross-attention; every
    W+ block gets query w' - w_avg (and block 0 also key/value), the F block key/value w' - w_avg,
    and f' = f(w') + G5(w+(w')) - G5(w+)."""
    G, encoder, _, inv = inverted
    editor = Editor.for_encoder(encoder, G, batch_size=4)
    assert editor.mode == "encoder"
    d = Direction("d", torch.randn(G.style_dim))
    strength = torch.tensor([1.0, 2.0, 0.0, -1.0, 1.0, 1.0])
    out = editor.edit(inv, d, strength)
    layer = encoder.cfg.feature_layer
    with torch.inference_mode():
        w_off = inv.codes.w_off + strength[:, None] * d.vector               # w' - w_avg  [B, D]
        dw = torch.cat([w_off[:, None], inv.codes.offsets], 1)               # [B, N, D]
        refine = torch.cat([blk(w_off[:, None], dw[:, i:i + 1]) for i, blk in enumerate(encoder.w_blocks)], 1)
        wplus = (w_off + encoder.w_avg)[:, None] + refine
        b, c, h, wd = inv.codes.t3.shape
        tokens = encoder.f_block(inv.codes.t3.flatten(2).transpose(1, 2), w_off[:, None])
        f_w = encoder.f_head(tokens.transpose(1, 2).reshape(b, c, h, wd))
        _, g_new = G.synthesis(wplus, feature_layer=layer, return_features=True)
        _, g_old = G.synthesis(inv.wplus, feature_layer=layer, return_features=True)
        image_f = resize_square(G.synthesis(wplus, feature=f_w + g_new - g_old, feature_layer=layer), 64)
    assert torch.allclose(out.wplus, wplus, atol=1e-5)
    assert not torch.allclose(out.wplus[0] - inv.wplus[0], d.vector.expand(G.n_latent, -1), atol=1e-3)  # not w+ + d
    assert torch.allclose(out.f, f_w + g_new - g_old, atol=1e-5)
    assert torch.allclose(out.images["f"], image_f, atol=1e-5)
    assert torch.equal(out.images["f"][2], inv.image_f[2]) and torch.equal(out.wplus[2], inv.wplus[2])  # strength 0
    # a layer range: the other layers keep their codes
    ranged = editor.edit(inv, Direction("r", d.vector, layers=LayerRange(2, 4)), 1.0)
    assert torch.equal(ranged.wplus[:, [0, 1, 5, 6, 7]], inv.wplus[:, [0, 1, 5, 6, 7]])
    assert not torch.allclose(ranged.wplus[:, 2:5], inv.wplus[:, 2:5])


def test_without_attention_both_edit_modes_move_wplus_by_the_direction():
    G = tiny_generator(size=32, style_dim=32)
    encoder = tiny_encoder(G, image_size=64, w_attention=False, f_attention=False).eval()
    inv = invert(encoder, G, torch.rand(3, 3, 64, 64) * 2 - 1, keep_codes=True)
    d = Direction("d", torch.randn(G.style_dim))
    official = Editor.for_encoder(encoder, G).edit(inv, d, 1.5)
    latent = Editor.for_encoder(encoder, G, mode="latent").edit(inv, d, 1.5)
    assert torch.allclose(official.wplus, inv.wplus + 1.5 * d.vector, atol=1e-6)
    for space in official.images:
        assert torch.allclose(official.images[space], latent.images[space], atol=1e-5), space


def test_edits_in_w_wplus_and_f(inverted):
    G, encoder, _, inv = inverted
    editor = Editor.for_encoder(encoder, G, batch_size=4, mode="latent")
    d = Direction("d", torch.randn(G.style_dim), layers=LayerRange(0, 3))
    strength = torch.tensor([1.0, 2.0, 0.0, -1.0, 1.0, 1.0])
    out = editor.edit(inv, d, strength)
    moved = out.wplus - inv.wplus
    assert torch.allclose(moved[:, :4], strength[:, None, None] * d.vector, atol=1e-6)
    assert torch.equal(moved[:, 4:], torch.zeros_like(moved[:, 4:]))
    assert torch.equal(out.images["f"][2], inv.image_f[2])           # strength 0 row unchanged
    assert not torch.allclose(out.images["f"][0], inv.image_f[0])
    # f' = f + G5(w+') - G5(w+), rendered as G(w+', f')
    layer = encoder.cfg.feature_layer
    with torch.inference_mode():
        _, g_new = G.synthesis(out.wplus, feature_layer=layer, return_features=True)
        _, g_old = G.synthesis(inv.wplus, feature_layer=layer, return_features=True)
        expected = resize_square(G.synthesis(out.wplus, feature=inv.f + g_new - g_old, feature_layer=layer), 64)
        w_expected = resize_square(
            G.synthesis(inv.w[:, None].expand(-1, G.n_latent, -1) + d.delta(strength, G.n_latent)), 64)
    assert torch.allclose(out.f, inv.f + g_new - g_old, atol=1e-5)
    assert torch.allclose(out.images["f"], expected, atol=1e-5)
    assert torch.allclose(out.images["w"], w_expected, atol=1e-5)
    with pytest.raises(ValueError, match="3 strengths for a batch of 6"):
        editor.edit(inv, d, torch.ones(3))


def brightness(x):
    return x.mean(dim=(1, 2, 3))[:, None]   # a one-attribute "classifier": mean brightness [B, 1]


def test_a_fitted_direction_moves_its_attribute():
    """InterFaceGAN end to end on a tiny generator: label sampled w by brightness, fit, edit."""
    G = tiny_generator(size=32, style_dim=32)
    w, scores = sample_labelled(G, brightness, 2000, 200, 1.0, seed=0, device=torch.device("cpu"))
    assert w.shape == (2000, 32) and scores.shape == (2000, 1)

    class Cfg:
        chosen_frac, train_frac, svm_c, strength, conditions = 0.1, 0.7, 1.0, 3.0, {}
    directions, metrics = fit_interfacegan(w, scores, ["bright"], Cfg, seed=0)
    assert metrics["bright"]["val_accuracy"] > 0.85   # brightness of a random generator is not quite linear in w
    d = directions["bright"]
    s = 2 * metrics["bright"]["latent_std"]
    with torch.inference_mode():
        fresh = G.mapping(torch.randn(200, 32, generator=torch.Generator().manual_seed(5)))
        before = brightness(G.synthesis(fresh[:, None].expand(-1, G.n_latent, -1)))
        after = brightness(G.synthesis(fresh[:, None].expand(-1, G.n_latent, -1) + d.delta(s, G.n_latent)))
    assert ((after - before) > 0).float().mean() > 0.9


def test_editing_scores_and_consistency(inverted):
    G, encoder, x, inv = inverted
    editor = Editor.for_encoder(encoder, G, batch_size=4)

    def describe(im):
        return {"attributes": torch.cat([brightness(im), im[:, :1].mean((1, 2, 3))[:, None]], 1),
                "identity": torch.nn.functional.normalize(im.flatten(1), dim=1), "features": im.mean((2, 3))}
    judges = EditJudges(describe, ["bright", "red"], perceptual=lambda a, b: (a - b).abs().flatten(1).mean(1),
                        same_person_threshold=0.5, batch_size=4)
    vector = torch.randn(G.style_dim)
    # the same direction twice: scored on its own name, and as a GANSpace-style edit of "bright" that lowers it
    d = {"bright": Direction("bright", vector), "darker": Direction("darker", -vector, attribute="bright",
                                                                     attribute_sign=-1)}
    real = torch.rand(20, 3)
    per_image, per_set = edit_sweep(editor, inv, x, d, [0.0, 1.0, -1.0], judges, real_features=real)
    assert len(per_image) == 2 * 3 * 3 * 6 and len(per_set) == 2 * 3 * 3
    zero = per_image[per_image.strength == 0]
    assert (zero.target_change == 0).all() and zero.right_way.isna().all() and zero.target_gain.isna().all()
    clamp = lambda im: im.clamp(-1, 1)   # the judges see saved-image range
    for strength in (1.0, -1.0):
        one = per_image[(per_image.strength == strength) & (per_image.space == "f") & (per_image.direction == "bright")]
        edited = editor.edit(inv, d["bright"], strength).images["f"]
        change = (brightness(clamp(edited)) - brightness(clamp(inv.image_f)))[:, 0].numpy()
        assert np.allclose(one.target_change, change, atol=1e-6)
        assert (one.right_way == (np.sign(change) == np.sign(strength))).all()
        assert np.allclose(one.target_gain, change * np.sign(strength), atol=1e-6)
        # "darker" at -strength is the same edit; its right way is the opposite sign of its strength
        dark = per_image[(per_image.strength == -strength) & (per_image.space == "f") & (per_image.direction == "darker")]
        assert np.allclose(dark.target_change, change, atol=1e-6) and (dark.right_way.values == one.right_way.values).all()
        ident = (torch.nn.functional.normalize(clamp(edited).flatten(1), dim=1) *
                 torch.nn.functional.normalize(x.flatten(1), dim=1)).sum(1).numpy()
        assert np.allclose(one.identity, ident, atol=1e-5) and (one.identity_kept == (ident > 0.5)).all()
        # per-set rows: the per-image means, and the Frechet distance of the edited set's features
        row = per_set[(per_set.strength == strength) & (per_set.space == "f") & (per_set.direction == "bright")].iloc[0]
        assert row.identity == pytest.approx(one.identity.mean()) and row.right_way == pytest.approx(one.right_way.mean())
        assert row.frechet == pytest.approx(frechet_distance(clamp(edited).mean((2, 3)), real), rel=1e-6)
    lec = editing_consistency(editor, lambda im, spaces: invert(encoder, G, im, batch_size=4, keep_codes=True, spaces=spaces),
                              inv,
                              {"bright": d["bright"]},
                              1.0, judges)
    assert set(lec.space) == {"w", "wplus", "f"} and lec[lec.space == "f"].latent.isna().all()
    assert (lec.perceptual >= 0).all() and (lec[lec.space != "f"].latent > 0).all()


def test_base_features_reuse_gives_the_same_edit(inverted):
    G, encoder, _, inv = inverted
    editor = Editor.for_encoder(encoder, G, batch_size=4)
    d = Direction("d", torch.randn(G.style_dim))
    assert torch.equal(editor.edit(inv, d, 1.5, g_base=editor.base_features(inv)).images["f"],
                       editor.edit(inv, d, 1.5).images["f"])


@pytest.mark.parametrize("mode", ["encoder", "latent"])
def test_an_f_edit_alone_renders_the_same_image_without_g_wplus(inverted, mode):
    """An F-only edit reads G_k(w+') and G_k(w+) from the layers up to k (no G(w+') image): the
    same F image, bit for bit, as the edit of all spaces; an inversion kept without renders
    (``invert(spaces=())``, the consistency's re-inversion) edits as the rendered one."""
    G, encoder, x, inv = inverted
    editor = Editor.for_encoder(encoder, G, batch_size=4, mode=mode)
    d = Direction("d", torch.randn(G.style_dim, generator=torch.Generator().manual_seed(3)))
    every = editor.edit(inv, d, 1.5)
    alone = editor.edit(inv, d, 1.5, spaces=("f",))
    assert set(alone.images) == {"f"} and torch.equal(alone.images["f"], every.images["f"])
    bare = invert(encoder, G, x, batch_size=4, keep_codes=True, spaces=())
    assert bare.images() == {} and bare.size == inv.size == inv.image_f.shape[-1]
    for space in ("w", "wplus", "f"):
        assert torch.equal(editor.edit(bare, d, -1.0, spaces=(space,)).images[space],
                           editor.edit(inv, d, -1.0, spaces=(space,)).images[space])


def test_read_directions_index(tmp_path):
    import json

    save_direction(Direction("smile", torch.randn(8)), tmp_path / "interfacegan" / "smile.pt")
    basis, _ = fit_pca(torch.randn(50, 8), 3)
    save_pca(basis, tmp_path / "ganspace_pca.pt")
    index = {"directions": {
        "smile": {"kind": "interfacegan", "file": "interfacegan/smile.pt", "layers": None, "strength": 3.0},
        "light": {"kind": "ganspace", "file": "ganspace_pca.pt", "component": 1, "layers": [0, 2], "strength": 2.0}}}
    (tmp_path / "directions.json").write_text(json.dumps(index))
    got = read_directions(tmp_path, 8, n_latent=6)
    assert got["smile"].strength == 3.0 and got["light"].layers == LayerRange(0, 2)
    assert torch.allclose(got["light"].vector, basis.comp[1, 0] * basis.std[1])
    with pytest.raises(ValueError, match="light"):
        read_directions(tmp_path, 8, n_latent=2)
    with pytest.raises(FileNotFoundError, match="dvc repro fit_directions"):
        read_directions(tmp_path / "nowhere", 8)


def test_evaluate_skips_editing_in_a_world_without_attributes(tmp_path):
    """The ffhq world without an attribute classifier: reconstruction only, editing skipped with the reason."""
    from types import SimpleNamespace

    from clcae.pipeline.evaluate import editing_directions

    world = SimpleNamespace(name="ffhq", attribute_names=[], no_attributes_hint=" (set ffhq.attribute_classifier)")
    cfg = SimpleNamespace(edit_directions=["smile"])
    directions, why = editing_directions(None, world, None, cfg)
    assert directions == {} and "reads no attributes (set ffhq.attribute_classifier)" in why
    assert editing_directions(None, world, None, SimpleNamespace(edit_directions=[]))[1] == "evaluate.edit_directions is empty"
