"""World generator training: loss falls, checkpoints load, fine-tune init keeps the function."""
import json

import torch

from clcae.nets.stylegan2 import load_generator
from clcae.world import procfaces
from clcae.world.train_generator import (GeneratorTrainConfig, build_generator, init_from_checkpoint,
                                         renderer_latent, train)

TINY = dict(size=32, style_dim=48, n_mlp=2, channels={4: 16, 8: 16, 16: 16, 32: 8}, batch_size=4, steps=6)


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
    assert longer["steps"] == 8 and longer["history"][0]["step"] == 8  # resumed at 6, not restarted


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
    from clcae.world.train_generator import regression_batch, regression_loss

    cfg = GeneratorTrainConfig(**TINY)
    G = build_generator(cfg)
    opt = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.9, 0.99))
    z = torch.randn(8, 48)
    target, mask = regression_batch(z, 32)
    losses = []
    for _ in range(40):
        loss = regression_loss(G(z, noise_mode="none"), target, mask, 4.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
