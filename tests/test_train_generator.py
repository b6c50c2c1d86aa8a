"""World generator training: loss falls, checkpoints load, fine-tune init keeps the function."""
import dataclasses
import json

import pytest
import torch

from clcae.nets.stylegan2 import load_generator
from clcae.worlds.procfaces import procfaces
from clcae.worlds.procfaces.train_generator import (
    GeneratorTrainConfig,
    build_generator,
    init_from_checkpoint,
    renderer_latent,
    train,
)

TINY = dict(size=32, style_dim=48, n_mlp=2, channels={4: 16, 8: 16, 16: 16, 32: 8}, batch_size=4, steps=6,
            perceptual_weight=0.0, attribute_weight=0.0)  # no teacher CNN to train


def loss_and_gradient(st, forward, z, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward (st.forward_loss or a compiled one) and backward from zeroed gradients: the loss
    and G's gradient, less the noise weights' own (they depend on the noise drawn; the noise weights
    start at zero, so the noise does not enter the loss at init)."""
    st.G.zero_grad()
    loss, _ = forward(z, batch)
    loss.backward()
    return loss.detach().clone(), torch.cat([p.grad.flatten() for name, p in st.G.named_parameters()
                                             if not name.endswith("noise.weight")])


def assert_same_batch(actual, expected) -> None:
    """Two RenderedBatch (targets, masks, labels) equal to float rounding, naming the field that is not."""
    for name, a, b in zip(expected._fields, actual, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_renderer_latent_is_pixelnormed_prefix():
    z = torch.randn(5, 48)
    u = renderer_latent(z)
    assert u.shape == (5, procfaces.LATENT_DIM)
    torch.testing.assert_close(u, (z / z.pow(2).mean(1, keepdim=True).sqrt())[:, :procfaces.LATENT_DIM])
    torch.testing.assert_close(renderer_latent(3 * z), u)  # the mapping only sees the direction of z


def test_tiny_training_writes_loadable_generator_and_resumes(tmp_path):
    out = tmp_path / "g.pt"
    figures = train(GeneratorTrainConfig(**TINY), str(out), progress=False)
    assert figures["steps"] == 6 and (tmp_path / "g.pt.samples.png").exists()
    assert json.loads((tmp_path / "g.pt.json").read_text())["steps"] == 6
    G = load_generator(out)
    assert G.size == 32 and G.style_dim == 48 and G.channels == TINY["channels"]
    longer = train(GeneratorTrainConfig(**{**TINY, "steps": 8}), str(out), progress=False)
    assert longer["steps"] == 8 and [h["step"] for h in longer["history"]] == [6, 8]  # resumed at 6


def test_a_non_finite_loss_stops_before_the_state_is_saved(tmp_path, monkeypatch):
    import clcae.worlds.procfaces.train_generator as tg

    pixel_loss = tg.regression_loss
    monkeypatch.setattr(tg, "regression_loss", lambda *args: pixel_loss(*args) * float("nan"))
    out = tmp_path / "g.pt"
    with pytest.raises(FloatingPointError, match="regression step 6: non-finite"):
        train(GeneratorTrainConfig(**TINY), str(out), progress=False)
    assert not (tmp_path / "g.pt.state.pt").exists() and not out.exists()


def test_fine_tune_init_preserves_the_loaded_function(tmp_path):
    out = tmp_path / "g.pt"
    train(GeneratorTrainConfig(**TINY), str(out), progress=False)
    source = load_generator(out)  # stored at lr_mlp = 0.01
    G = build_generator(GeneratorTrainConfig(**TINY)).eval()  # trains at lr_mlp = 1
    init_from_checkpoint(G, str(out))
    z = torch.randn(3, 48)
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(z), source.mapping(z), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(G(z), source(z), atol=1e-5, rtol=0)


def test_regression_loss_falls():
    torch.manual_seed(0)
    from clcae.worlds.procfaces.train_generator import regression_batch, regression_loss

    cfg = GeneratorTrainConfig(**TINY)
    G = build_generator(cfg)
    opt = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.9, 0.99))
    z = torch.randn(8, 48)
    batch = regression_batch(z, 32)
    losses = []
    for _ in range(40):
        loss = regression_loss(G(z, noise_mode="none"), batch.target, batch.mask, 4.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_r1_penalty_of_a_linear_critic_is_its_squared_weight_norm():
    from clcae.worlds.procfaces.train_generator import r1_penalty

    a = torch.randn(3, 4, 4)

    class Linear(torch.nn.Module):
        def forward(self, x):
            return (x * a).sum(dim=(1, 2, 3))[:, None] + x.pow(2).sum() * 0  # dD/dx = a

    torch.testing.assert_close(r1_penalty(Linear(), torch.randn(5, 3, 4, 4)), a.pow(2).sum())


def test_adversarial_step_raises_the_critics_score_and_d_learns():
    """With gan_reg_weight 0, the G update climbs D's logit; D's loss falls on a fixed G."""
    from clcae.worlds.procfaces.train_generator import TrainState, adversarial_step, regression_batch

    torch.manual_seed(0)
    cfg = GeneratorTrainConfig(**{**TINY, "gan_reg_weight": 0.0, "gan_lr": 2e-3, "r1_every": 1000})
    st = TrainState(cfg, torch.device("cpu"), None)
    st.start_adversarial()
    z = torch.randn(8, 48)
    batch = regression_batch(z, 32)
    d_losses = []
    G_state = {k: v.clone() for k, v in st.G.state_dict().items()}
    for _ in range(15):
        st.G.load_state_dict(G_state)  # D trains against one fixed G
        d_losses.append(adversarial_step(st, z, batch)["d_loss"])
    assert d_losses[-1] < d_losses[0] - 0.1
    st.G.load_state_dict(G_state)
    with torch.no_grad():
        before = st.D(st.G(z, noise_mode="const")).mean().item()
    st.opt_D.param_groups[0]["lr"] = 0.0  # freeze D: only the G step acts
    adversarial_step(st, z, batch)
    with torch.no_grad():
        after = st.D(st.G(z, noise_mode="const")).mean().item()
    assert after > before


def test_resume_across_the_adversarial_phase_is_exact(tmp_path):
    base = {**TINY, "gan_steps": 4, "r1_every": 2}
    whole = train(GeneratorTrainConfig(**base), str(tmp_path / "a" / "g.pt"), progress=False)
    part = tmp_path / "b" / "g.pt"
    first = train(GeneratorTrainConfig(**{**base, "gan_steps": 2}), str(part), progress=False)
    assert first["phase"] == "adversarial" and first["steps"] == 2
    resumed = train(GeneratorTrainConfig(**base), str(part), progress=False)
    assert resumed["steps"] == 4 and set(resumed["minutes_by_phase"]) == {"regression", "adversarial"}
    assert [(h["phase"], h["step"]) for h in resumed["history"]] == [("regression", 6), ("adversarial", 2),
                                                                     ("adversarial", 4)]
    assert whole["history"][-1]["d_loss"] == pytest.approx(resumed["history"][-1]["d_loss"], abs=1e-6)
    a, b = load_generator(tmp_path / "a" / "g.pt"), load_generator(part)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0, msg=name)


def test_generator_loss_teacher_terms_match_hand_computation():
    from clcae.worlds.procfaces.train_generator import GeneratorLoss, regression_batch, regression_loss
    from clcae.worlds.procfaces.world_cnn import WorldCNN, perceptual_distance

    torch.manual_seed(0)
    teacher = WorldCNN(widths=(4, 4, 8, 8, 8), emb_dim=8).eval().requires_grad_(False)
    teacher.attr_std.copy_(torch.linspace(0.5, 2.0, 7))
    batch = regression_batch(torch.randn(3, 48), 32)
    image = batch.target + 0.1 * torch.randn_like(batch.target)
    cfg = GeneratorTrainConfig(**{**TINY, "perceptual_weight": 2.0, "attribute_weight": 3.0})
    loss, logs = GeneratorLoss(cfg, [teacher])(image, batch)
    pixel = regression_loss(image, batch.target, batch.mask, cfg.parts_weight)
    perceptual = perceptual_distance(teacher, image, batch.target).mean()
    attribute = ((teacher.attributes(image) - batch.labels).abs() / teacher.attr_std).mean()
    torch.testing.assert_close(loss, pixel + 2.0 * perceptual + 3.0 * attribute)
    assert logs["perceptual"] > 0 and logs["attribute"] == pytest.approx(attribute.item())
    same, _ = GeneratorLoss(cfg, [teacher])(batch.target, batch)  # a perfect render: attribute error only
    torch.testing.assert_close(same, 3.0 * ((teacher.attributes(batch.target) - batch.labels).abs()
                                            / teacher.attr_std).mean())
    with pytest.raises(ValueError, match="teacher"):
        GeneratorLoss(cfg, [])


def test_teacher_ensemble_averages_each_term():
    from clcae.worlds.procfaces.train_generator import GeneratorLoss, regression_batch, regression_loss
    from clcae.worlds.procfaces.world_cnn import WorldCNN

    torch.manual_seed(0)
    teachers = [WorldCNN(widths=(4, 4, 8, 8, 8), emb_dim=8).eval().requires_grad_(False) for _ in range(2)]
    teachers[1].attr_std.fill_(4.0)  # the two teachers' attribute errors differ
    batch = regression_batch(torch.randn(3, 48), 32)
    image = batch.target + 0.1 * torch.randn_like(batch.target)
    cfg = GeneratorTrainConfig(**{**TINY, "perceptual_weight": 2.0, "attribute_weight": 3.0, "n_teachers": 2})
    pixel = regression_loss(image, batch.target, batch.mask, cfg.parts_weight)
    single = [GeneratorLoss(cfg, [t])(image, batch)[0] - pixel for t in teachers]
    both, logs = GeneratorLoss(cfg, teachers)(image, batch)
    assert single[0].item() != pytest.approx(single[1].item())
    torch.testing.assert_close(both, pixel + (single[0] + single[1]) / 2)


def test_sharp_teachers_take_the_perceptual_term_and_leave_the_attribute_term():
    from clcae.worlds.procfaces.train_generator import GeneratorLoss, regression_batch, regression_loss
    from clcae.worlds.procfaces.world_cnn import WorldCNN, perceptual_distance

    torch.manual_seed(0)
    teacher, sharp = (WorldCNN(widths=(4, 4, 8, 8, 8), emb_dim=8).eval().requires_grad_(False) for _ in range(2))
    teacher.attr_std.copy_(torch.linspace(0.5, 2.0, 7))
    batch = regression_batch(torch.randn(3, 48), 32)
    image = batch.target + 0.1 * torch.randn_like(batch.target)
    cfg = GeneratorTrainConfig(**{**TINY, "perceptual_weight": 2.0, "attribute_weight": 3.0, "n_teachers": 1,
                                  "sharp_teachers": 1})
    loss, logs = GeneratorLoss(cfg, [teacher], [sharp])(image, batch)
    pixel = regression_loss(image, batch.target, batch.mask, cfg.parts_weight)
    perceptual = perceptual_distance(sharp, image, batch.target).mean()
    assert perceptual.item() != pytest.approx(perceptual_distance(teacher, image, batch.target).mean().item())
    attribute = ((teacher.attributes(image) - batch.labels).abs() / teacher.attr_std).mean()
    torch.testing.assert_close(loss, pixel + 2.0 * perceptual + 3.0 * attribute)
    assert logs["perceptual"] == pytest.approx(perceptual.item(), rel=1e-5)


def test_training_with_a_teacher_logs_its_terms(tmp_path):
    from clcae.worlds.procfaces.world_cnn import WorldCNN, WorldCNNConfig, save_world_cnn

    teacher = save_world_cnn(WorldCNN(widths=(4, 4, 8, 8, 8), emb_dim=8), tmp_path / "teacher.pt",
                             WorldCNNConfig(seed=7, blur_prob=0.25), metrics={"test_split": {"verification_acc": 0.5}})
    cfg = GeneratorTrainConfig(**{**TINY, "perceptual_weight": 1.0, "attribute_weight": 1.0, "n_teachers": 1})
    figures = train(cfg, str(tmp_path / "g.pt"), progress=False, teachers=[str(teacher)])
    last = figures["history"][-1]
    assert last["perceptual"] > 0 and last["attribute"] > 0
    assert figures["teachers"] == [{"path": str(teacher), "seed": 7, "steps": 1000, "blur_prob": 0.25,
                                    "test_split": {"verification_acc": 0.5}}]
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        train(cfg, str(tmp_path / "h.pt"), progress=False, teachers=[str(tmp_path / "missing.pt")])
    with pytest.raises(ValueError, match="n_teachers=1"):  # one path per teacher
        train(cfg, str(tmp_path / "h.pt"), progress=False, teachers=[str(teacher)] * 2)
    sharp_cfg = dataclasses.replace(cfg, sharp_teachers=1)
    with pytest.raises(ValueError, match="sharp_teachers=1"):
        train(sharp_cfg, str(tmp_path / "h.pt"), progress=False, teachers=[str(teacher)],
              sharp_teachers=[str(teacher)] * 2)
    sharp = save_world_cnn(WorldCNN(widths=(4, 4, 8, 8, 8), emb_dim=8), tmp_path / "sharp.pt",
                           WorldCNNConfig(seed=3, blur_prob=0.0))
    figures = train(sharp_cfg, str(tmp_path / "s.pt"), progress=False, teachers=[str(teacher)],
                    sharp_teachers=[str(sharp)])
    assert [t["seed"] for t in figures["sharp_teachers"]] == [3] and figures["history"][-1]["perceptual"] > 0


def test_readout_bias_is_zero_for_the_renders_and_signed_for_a_shift():
    from clcae.worlds.procfaces.procfaces import ATTRIBUTES
    from clcae.worlds.procfaces.train_generator import readout_bias, regression_batch
    from clcae.worlds.procfaces.world_cnn import WorldCNN

    class RenderingGenerator(torch.nn.Module):  # stands in for G: the render of u(z) + a colour shift
        size = 32

        def __init__(self, shift: float):
            super().__init__()
            self.shift = shift

        def forward(self, z, noise_mode="const"):
            return regression_batch(z, self.size).target + self.shift

    torch.manual_seed(0)
    cnn = WorldCNN(widths=(4, 4, 8, 8, 8), emb_dim=8).eval()
    cnn.attr_std.fill_(0.5)
    with torch.no_grad():
        cnn.attr_head[-1].weight.mul_(1000)  # a freshly initialised head barely reacts to its input
    z = torch.randn(6, 48)
    exact = readout_bias(RenderingGenerator(0.0), {"judge": cnn}, z, batch_size=4)
    assert list(exact["judge"]) == list(ATTRIBUTES) and all(v == 0 for v in exact["judge"].values())
    shifted = readout_bias(RenderingGenerator(-0.3), {"judge": cnn}, z, batch_size=4)
    target = regression_batch(z, 32).target
    by_hand = ((cnn.attributes((target - 0.3).clamp(-1, 1)) - cnn.attributes(target)) / 0.5).mean(0)
    torch.testing.assert_close(torch.tensor(list(shifted["judge"].values())), by_hand, atol=1e-4, rtol=1e-4)
    assert by_hand.abs().max() > 0.01


def test_edge_term_pays_for_sharpness_not_for_brightness():
    """The edge term: zero for a brightness offset, the high-pass L1 (torchvision's blur) for a blur."""
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    from clcae.worlds.procfaces.train_generator import regression_loss

    torch.manual_seed(0)
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    shifted = target + 0.2
    assert regression_loss(shifted, target, mask, 0.0, edge_weight=3.0).item() == pytest.approx(
        regression_loss(shifted, target, mask, 0.0).item(), abs=1e-6)
    soft = tv_blur(target, [5, 5], [0.8, 0.8])
    high = lambda x: x - tv_blur(x, [5, 5], [1.0, 1.0])  # noqa: E731
    expected = 3.0 * (high(soft) - high(target)).abs().mean().item()
    got = regression_loss(soft, target, mask, 0.0, edge_weight=3.0) - regression_loss(soft, target, mask, 0.0)
    assert got.item() == pytest.approx(expected, rel=1e-5) and expected > 0.01


def test_bf16_autocast_step_matches_float32_to_bf16_precision():
    """--amp bf16 runs G and the teachers in bfloat16: the loss and the gradient it gives G
    must be float32's up to bf16 rounding (8-bit mantissa), not a different objective."""
    from clcae.worlds.procfaces.train_generator import TrainState, regression_batch
    from clcae.worlds.procfaces.world_cnn import WorldCNN

    torch.manual_seed(0)
    teacher = WorldCNN(widths=(4, 4, 8, 8, 8), emb_dim=8).eval().requires_grad_(False)
    fp32 = GeneratorTrainConfig(**{**TINY, "perceptual_weight": 1.0, "attribute_weight": 1.0, "n_teachers": 1})
    z = torch.randn(8, 48)
    batch = regression_batch(z, 32)
    results = []
    for cfg in (fp32, dataclasses.replace(fp32, amp="bf16")):
        st = TrainState(cfg, torch.device("cpu"), None, [teacher])  # the same G: seeded by cfg.seed
        results.append(loss_and_gradient(st, st.forward_loss, z, batch))
    (loss32, grad32), (loss16, grad16) = results
    assert not torch.equal(grad16, grad32)  # autocast did act
    assert abs(loss16 - loss32) / loss32 < 0.02
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99


def test_amp_value_is_checked_and_may_change_on_resume(tmp_path):
    with pytest.raises(ValueError, match="amp='fp16'"):
        GeneratorTrainConfig(**TINY, amp="fp16")
    out = tmp_path / "g.pt"
    train(GeneratorTrainConfig(**TINY), str(out), progress=False)
    longer = train(GeneratorTrainConfig(**{**TINY, "steps": 8, "amp": "bf16"}), str(out), progress=False)
    assert longer["steps"] == 8 and longer["config"]["amp"] == "bf16"


def test_compiled_regression_forward_computes_the_eager_loss_and_gradient():
    """--compile 1 fuses the step's forward; it must compute the same loss and gradient (the
    noise weights start at zero, so the random noise inputs do not enter the loss at init; only
    the noise weights' own gradients depend on the noise drawn)."""
    from clcae.worlds.procfaces.train_generator import TrainState, regression_batch

    cfg = GeneratorTrainConfig(**{**TINY, "compile": True})
    st = TrainState(cfg, torch.device("cpu"), None)
    z = torch.randn(4, 48)
    batch = regression_batch(z, 32)
    compiled_loss, compiled_grad = loss_and_gradient(st, st.regression_forward, z, batch)
    eager_loss, eager_grad = loss_and_gradient(st, st.forward_loss, z, batch)
    assert st.regression_forward is not st.forward_loss
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (CI has none)")
def test_compiled_step_replayed_as_cuda_graphs_computes_the_eager_loss_and_gradient(monkeypatch):
    """On a GPU --compile 1 replays the forward and backward as CUDA graphs: the third call (after
    warm-up and recording) must still give the eager loss and gradient, and the compiled renderer
    the eager batch."""
    from clcae.worlds.procfaces.train_generator import TrainState, regression_batch

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare float32 with float32
    device = torch.device("cuda")
    st = TrainState(GeneratorTrainConfig(**{**TINY, "compile": True}), device, None)
    z = torch.randn(4, 48, device=device)
    batch = regression_batch(z, 32)
    assert_same_batch(st.render(z, 32), batch)
    for _ in range(3):
        compiled_loss, compiled_grad = loss_and_gradient(st, st.regression_forward, z, batch)
    eager_loss, eager_grad = loss_and_gradient(st, st.forward_loss, z, batch)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-3, atol=1e-4)


def test_compiled_renderer_gives_the_eager_targets_masks_and_labels():
    """--compile 1 also fuses the renderer of the regression targets: same batch, to float rounding."""
    from clcae.worlds.procfaces.train_generator import TrainState, regression_batch

    st = TrainState(GeneratorTrainConfig(**{**TINY, "compile": True}), torch.device("cpu"), None)
    assert st.render is not regression_batch
    z = torch.randn(6, 48)
    eager = regression_batch(z, 32)
    assert_same_batch(st.render(z, 32), eager)
    assert eager.target.std() > 0.1  # faces, not a blank batch


def test_ema_update_is_the_weighted_mean_of_each_parameter():
    from clcae.worlds.procfaces.train_generator import TrainState

    st = TrainState(GeneratorTrainConfig(**TINY), torch.device("cpu"), None)
    with torch.no_grad():
        for p in st.G.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in st.G_ema.parameters()]
    st.update_ema(0.9)
    for old, new, target in zip(before, st.G_ema.parameters(), st.G.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * target)
