"""train_encoder: the real stage entry point on a tiny world; overfitting, exact resume, DDP, the inversion API."""
import json
import os
import subprocess
import sys

import pytest
import tiny
import torch
from conftest import ROOT
from test_safe_loading import official_states

import clcae.pipeline.train_encoder as te
from clcae.config import Params, build
from clcae.inversion import invert
from clcae.losses import InversionLoss, InversionLossConfig
from clcae.nets.aligner import Aligner, AlignerConfig, save_aligner
from clcae.nets.encoder import load_encoder
from clcae.nets.stylegan2 import Generator, save_generator
from clcae.pipeline.world import write_train_shards
from clcae.worlds.procfaces import procfaces as pf
from clcae.worlds.procfaces import world_cnn as wc

# encoder side 32 -> T3 8x8; the tiny generator's layer 3 (second conv at 8x8) is F
TINY_ENCODER = {"num_layers": 18, "width": 4, "heads": 2, "dropout": 0.0, "feature_layer": 3, "batch_size": 4,
                "steps": 6, "lr": 1e-3, "warmup_steps": 1, "log_every": 2, "checkpoint_every": 2,
                "sample_every": 3, "test_images": 4, "optimizer": "ranger", "lr_schedule": "cosine",
                "hflip": 0.5, "noise": "random"}   # the official flips and fresh noise: resumes must stay exact


def tiny_generator() -> Generator:
    return tiny.tiny_generator(style_dim=16, seed=0, latent_avg=True)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A world stage's outputs in miniature, a tiny generator and a tiny aligner on disk."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    cnn = wc.WorldCNN(widths=(8, 8, 16, 16, 16), emb_dim=16)
    cnn.train()(pf.render(pf.decode(pf.sample_latents(8, torch.Generator().manual_seed(0)))))
    wc.save_world_cnn(cnn.eval(), root / "world" / "world_cnn.pt")
    images, u, pid, labels = pf.render_split("train", 8, 2, seed=0)
    write_train_shards(images, u, pid, labels, root / "world" / "train", shard_size=8)
    test, tu, tpid, tlabels = pf.render_split("test", 3, 2, seed=0)
    pf.write_png_folder(test, pf.labels_frame(tu, tpid, tlabels), root / "world" / "test")
    save_generator(tiny_generator(), root / "g.pt")
    aligner = Aligner(AlignerConfig(image_size=32, num_layers=18, width=4, style_dim=16, embed_dim=16, heads=2,
                                    ff_dim=32, dropout=0.0))
    save_aligner(aligner.eval(), root / "aligner" / "aligner.pt")
    return root


def tiny_params(root, out, variants=None, **common) -> Params:
    return build(Params, {
        "shared": {"seed": 1, "device": "cpu", "generator": str(root / "g.pt")},
        "world": {"out_dir": str(root / "world")},
        "train_aligner": {"out_dir": str(root / "aligner")},
        "train_encoder": {"common": {**TINY_ENCODER, **common},
                          "variants": variants or {"clcae": {}, "psp": {"align": 0.0, "w_attention": False, "w_loss": False,
                                                                        "f_attention": False, "use_f": False}},
                          "out_dir": str(out / "encoder"), "report_dir": str(out / "reports")}})


def test_stage_writes_encoder_metrics_curves_and_grid(tiny_world, tmp_path):
    params = tiny_params(tiny_world, tmp_path)
    metrics = te.run(params, "clcae")
    on_disk = json.loads((tmp_path / "reports" / "clcae" / "metrics.json").read_text())
    assert on_disk["steps"] == 6 and on_disk["test_images"] == 4 and on_disk["replicas_identical"]
    assert set(on_disk["test"]) == {"w", "wplus", "f"}
    for figures in on_disk["test"].values():
        assert figures["l2_psp"] == pytest.approx(4 * figures["mse"])
        assert 0 < figures["mse"] < 1 and figures["world_perceptual"] > 0
        assert -1 <= figures["world_id_similarity"] <= 1
    assert on_disk["test"] == metrics["test"]
    curve = (tmp_path / "reports" / "clcae" / "live" / "plots" / "metrics" / "train" / "total.tsv").read_text()
    assert [line.split("\t")[0] for line in curve.splitlines()] == ["step", "2", "4", "6"]
    for term in ("l2/w", "l2/wplus", "l2/f", "perceptual/f", "identity/f", "freg", "align", "blend", "lr"):
        assert (tmp_path / "reports" / "clcae" / "live" / "plots" / "metrics" / "train" / f"{term}.tsv").exists(), term
    from PIL import Image

    grid = Image.open(tmp_path / "reports" / "clcae" / "samples.png")
    assert grid.size == (4 * 34 + 2, 6 * 34 + 2)  # 6 test images x (input | G(w) | G(w+) | G(w+, f)), padding 2
    encoder = load_encoder(tmp_path / "encoder" / "clcae" / "encoder.pt")
    assert (encoder.cfg.image_size, encoder.cfg.n_latent, encoder.cfg.style_dim) == (32, 8, 16)
    assert not (tmp_path / "encoder" / "clcae" / ".resume").exists()  # a finished run leaves no resume point


def test_loader_workers_change_nothing_and_init_starts_from_saved_weights(tiny_world, tmp_path):
    """Batches decoded by two DataLoader workers train the same encoder, bit for bit; `init` loads an
    encoder file's weights (the centring buffers stay the run's) and refuses one of another shape."""
    from clcae.io import CheckpointError

    a = te.run(tiny_params(tiny_world, tmp_path / "a"), "clcae")
    b = te.run(tiny_params(tiny_world, tmp_path / "b", loader_workers=2), "clcae")
    saved = tmp_path / "a" / "encoder" / "clcae" / "encoder.pt"
    state_a = load_encoder(saved).state_dict()
    state_b = load_encoder(tmp_path / "b" / "encoder" / "clcae" / "encoder.pt").state_dict()
    assert all(torch.equal(v, state_b[k]) for k, v in state_a.items()) and a["test"] == b["test"]
    assert a["unreadable_images"] == {"train": {"count": 0, "files": []}, "test": {"count": 0, "files": []}}

    params = tiny_params(tiny_world, tmp_path / "c", init=str(saved))
    G = tiny_generator()
    encoder = te.build_encoder(params.train_encoder.variant("clcae"), G, 32)
    te.start_from(encoder, str(saved), G, "train_encoder.variants.clcae")
    assert all(torch.equal(v, state_a[k]) for k, v in encoder.state_dict().items())
    psp = te.build_encoder(params.train_encoder.variant("psp"), G, 32)
    with pytest.raises(CheckpointError, match=r"encoder\.pt \(train_encoder\.variants\.psp\.init\): state dict does "
                                              r"not fit .*unexpected keys [1-9]"):
        te.start_from(psp, str(saved), G, "train_encoder.variants.psp")
    with pytest.raises(FileNotFoundError, match=r"absent\.pt: encoder file not found \(train_encoder"):
        te.start_from(psp, str(tmp_path / "absent.pt"), G, "train_encoder.variants.psp")
    c = te.run(params, "clcae")   # starts from a's weights: after 6 more steps, closer to the images
    assert c["test"]["f"]["mse"] < a["test"]["f"]["mse"]

    from clcae.errors import ConfigError, InputError
    from clcae.pipeline.evaluate import evaluated_variants, load_variant

    params.evaluate.released = {"clcae_released": str(saved)}   # evaluate.released: after the trained variants
    assert evaluated_variants(params) == ["clcae", "psp", "clcae_released"]
    released = load_variant(params, "clcae_released", G, "cpu")
    assert all(torch.equal(v, state_a[k]) for k, v in released.state_dict().items())
    params.evaluate.variants = ["clcae_released"]   # a released model alone: nothing to train
    assert evaluated_variants(params) == ["clcae_released"]
    params.evaluate.variants = ["clcae", "nope"]
    with pytest.raises(ConfigError, match=r"evaluate\.variants: \['nope'\] are neither"):
        evaluated_variants(params)
    params.evaluate.variants = []
    params.evaluate.released = {"psp": str(saved)}
    with pytest.raises(ConfigError, match=r"evaluate\.released: \['psp'\] are train_encoder variants too"):
        evaluated_variants(params)
    params.evaluate.released = {"clcae_released": str(tmp_path / "FFHQ_Inversion.pt")}
    with pytest.raises(InputError, match=r"FFHQ_Inversion\.pt: encoder file not found \(evaluate\.released\.clcae_rel"):
        load_variant(params, "clcae_released", G, "cpu")


def test_the_released_contrastive_models_serve_as_the_frozen_aligner(tiny_world, tmp_path):
    """train_encoder.common.aligner: [image, latent] loads the released files converted, centred on
    G(w_avg) and G's latent_avg, and embeds as the aligner they came from; training reads the files the
    list names ([aligner.pt] = the default); a missing file, a size the encoder does not see or a
    third file is named."""
    from clcae.errors import InputError
    from clcae.inversion import average_image, load_any_aligner
    from clcae.io import CheckpointError

    G = tiny_generator()
    torch.manual_seed(3)
    ours = Aligner(AlignerConfig(image_size=32, num_layers=18, width=4, style_dim=16, embed_dim=16, heads=2,
                                 ff_dim=32)).eval()
    image_state, latent_state = official_states(ours)   # the released files' layout
    files = [str(tmp_path / "best_model_image.pt"), str(tmp_path / "best_model_latent.pt")]
    torch.save({"state_dict": image_state, "opts": {}}, files[0])
    torch.save(latent_state, files[1])
    released = load_any_aligner(files, G, 32)
    ours.set_averages(average_image(G, 32), G.latent_avg)
    x, w = torch.rand(3, 3, 32, 32) * 2 - 1, torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(released.embed_image(x), ours.embed_image(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(released.embed_latent(w), ours.embed_latent(w), atol=1e-6, rtol=0)
    with pytest.raises(CheckpointError, match=r"best_model_latent\.pt: the aligner embeds 32 px .* sees 64 px"):
        load_any_aligner(files, G, 64)

    def trained(out: str, **common) -> dict:
        te.run(tiny_params(tiny_world, tmp_path / out, steps=2, **common), "clcae")
        return load_encoder(tmp_path / out / "encoder" / "clcae" / "encoder.pt").state_dict()

    default = trained("d")                                                          # []: train_aligner's
    named = trained("n", aligner=[str(tiny_world / "aligner" / "aligner.pt")])       # the same file, named
    on_released = trained("r", aligner=files)
    assert all(torch.equal(v, named[k]) for k, v in default.items())
    assert not all(torch.equal(v, on_released[k]) for k, v in default.items())      # L_align read the pair
    with pytest.raises(InputError, match=r"absent\.pt: aligner file not found \(train_encoder\.variants\.clcae\.aligner\)"):
        te.run(tiny_params(tiny_world, tmp_path / "m", steps=2, aligner=[files[0], str(tmp_path / "absent.pt")]),
               "clcae")
    from clcae.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train_encoder\.common\.aligner: \[\] .* got 3 files"):
        tiny_params(tiny_world, tmp_path / "x", aligner=files + files[:1])


@pytest.mark.slow
def test_compiled_encoder_trains_as_the_eager_one(tiny_world, tmp_path):
    """compile: true (torch.compile, inductor on CPU here) gives the eager run's encoder to float tolerance."""
    eager = te.run(tiny_params(tiny_world, tmp_path / "eager", steps=2, log_every=1), "clcae")
    compiled = te.run(tiny_params(tiny_world, tmp_path / "compiled", steps=2, log_every=1, compile=True), "clcae")
    a = load_encoder(tmp_path / "eager" / "encoder" / "clcae" / "encoder.pt").state_dict()
    b = load_encoder(tmp_path / "compiled" / "encoder" / "clcae" / "encoder.pt").state_dict()
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, atol=1e-4, rtol=1e-4, msg=key)
    assert compiled["test"]["f"]["mse"] == pytest.approx(eager["test"]["f"]["mse"], rel=1e-3)


def test_psp_variant_has_no_f_and_no_align(tiny_world, tmp_path):
    metrics = te.run(tiny_params(tiny_world, tmp_path, variants={"psp": {"align": 0.0, "w_attention": False,
                                                                          "f_attention": False, "use_f": False,
                                                                          "w_loss": False}}), "psp")
    assert set(metrics["test"]) == {"w", "wplus"}
    live = tmp_path / "reports" / "psp" / "live" / "plots" / "metrics" / "train"
    assert (live / "l2" / "wplus.tsv").exists() and not (live / "align.tsv").exists()
    assert not (live / "l2" / "w.tsv").exists()  # pSp trains on G(w+) alone (w_loss: false)
    assert not (live / "freg.tsv").exists()


def test_encoder_overfits_eight_images():
    """Eight images the generator can make: the F-space MSE of the trained encoder drops 10x."""
    G = tiny_generator().requires_grad_(False)
    torch.manual_seed(3)
    with torch.no_grad():
        target = G(torch.randn(8, 16)).clamp(-1, 1)  # [8, 3, 32, 32]
    cfg = build(Params, {"train_encoder": {"common": {**TINY_ENCODER, "perceptual": 0, "identity": 0, "align": 0,
                                                      "feature_blend": "constant", "hflip": 0.0, "noise": "const"}}}
                ).train_encoder.variant("clcae")
    torch.manual_seed(0)
    encoder = te.build_encoder(cfg, G, 32).train()
    step = te.TrainStep(encoder, G, InversionLoss(InversionLossConfig(perceptual=0, identity=0, align=0)),
                        cfg, 32, steps_per_epoch=1)
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-3)

    def f_mse():
        return (invert(encoder, G, target).image_f - target).pow(2).mean().item()

    before = f_mse()
    for i in range(150):
        loss, _ = step(target, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert f_mse() < before / 10


def test_resume_continues_exactly(tiny_world, tmp_path, monkeypatch):
    full = te.run(tiny_params(tiny_world, tmp_path / "a"), "clcae")
    full_state = load_encoder(tmp_path / "a" / "encoder" / "clcae" / "encoder.pt").state_dict()

    params = tiny_params(tiny_world, tmp_path / "b")
    real_lr_at = te.lr_at

    def dying_lr_at(step, *args, **kw):
        if step == 5:  # killed after the step-4 resume point, one step into the next stretch
            raise KeyboardInterrupt
        return real_lr_at(step, *args, **kw)

    monkeypatch.setattr(te, "lr_at", dying_lr_at)
    with pytest.raises(KeyboardInterrupt):
        te.run(params, "clcae")
    monkeypatch.setattr(te, "lr_at", real_lr_at)
    resumed = te.run(params, "clcae")
    resumed_state = load_encoder(tmp_path / "b" / "encoder" / "clcae" / "encoder.pt").state_dict()
    for key, value in full_state.items():
        torch.testing.assert_close(resumed_state[key], value, atol=1e-6, rtol=0, msg=key)
    assert resumed["test"]["f"]["mse"] == pytest.approx(full["test"]["f"]["mse"], rel=1e-5)
    curve = (tmp_path / "b" / "reports" / "clcae" / "live" / "plots" / "metrics" / "train" / "total.tsv").read_text()
    assert [line.split("\t")[0] for line in curve.splitlines()] == ["step", "2", "4", "6"]


def test_sigterm_saves_a_resume_point_and_the_rerun_ends_where_an_uninterrupted_run_does(tiny_world, tmp_path,
                                                                                          monkeypatch):
    """With dropout on (the RNG state must travel too): SIGTERM at step 3 saves at step 3, exits as
    TrainingInterrupted, and the resumed run's weights equal an uninterrupted run's."""
    import signal

    from clcae.training import TrainingInterrupted

    full = te.run(tiny_params(tiny_world, tmp_path / "a", dropout=0.1), "clcae")
    params = tiny_params(tiny_world, tmp_path / "b", dropout=0.1)
    real_lr_at = te.lr_at

    def pre_empted(step, *args, **kw):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a cluster's pre-emption during step 2 -> 3
        return real_lr_at(step, *args, **kw)

    monkeypatch.setattr(te, "lr_at", pre_empted)
    with pytest.raises(TrainingInterrupted, match="step 3"):
        te.run(params, "clcae")
    monkeypatch.setattr(te, "lr_at", real_lr_at)
    resumed = te.run(params, "clcae")
    a = load_encoder(tmp_path / "a" / "encoder" / "clcae" / "encoder.pt").state_dict()
    b = load_encoder(tmp_path / "b" / "encoder" / "clcae" / "encoder.pt").state_dict()
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, atol=1e-6, rtol=0, msg=key)
    assert resumed["test"]["wplus"]["mse"] == pytest.approx(full["test"]["wplus"]["mse"], rel=1e-5)


def test_invert_refuses_another_generator(tiny_world, tmp_path):
    te.run(tiny_params(tiny_world, tmp_path, steps=1), "clcae")
    encoder = load_encoder(tmp_path / "encoder" / "clcae" / "encoder.pt")
    other = Generator(32, 24, 2, channels={4: 16, 8: 16, 16: 8, 32: 8})
    with pytest.raises(ValueError, match="style_dim: encoder 16, generator 24"):
        invert(encoder, other, torch.zeros(1, 3, 32, 32))


def test_invert_resizes_any_size_and_batches(tiny_world, tmp_path):
    te.run(tiny_params(tiny_world, tmp_path, steps=1), "clcae")
    encoder, G = load_encoder(tmp_path / "encoder" / "clcae" / "encoder.pt"), tiny_generator()
    images = torch.randint(0, 256, (5, 3, 96, 96), dtype=torch.uint8)
    whole = invert(encoder, G, images, batch_size=5)
    parts = invert(encoder, G, images, batch_size=2)
    assert whole.image_f.shape == (5, 3, 32, 32) and whole.wplus.shape == (5, 8, 16)
    torch.testing.assert_close(parts.image_f, whole.image_f, atol=1e-5, rtol=0)
    assert not whole.w.requires_grad and not torch.is_inference_mode_enabled()


class HalvesStep(te.TrainStep):
    """One process doing what two DDP ranks do: each half of the batch through the encoder alone
    (BatchNorm statistics per rank), the loss over the whole batch (rank r holds rows r::2)."""

    def __call__(self, x, step):
        halves = [self.net(x[r::2]) for r in range(2)]
        out = type(halves[0])(*[None if parts[0] is None else torch.cat(parts) for parts in zip(*halves)])
        x = torch.cat([x[0::2], x[1::2]])
        images, f_gen = te.render(self.G, out, self.image_size, self.cfg.feature_layer, self.blend(step),
                                  return_features=True)
        return self.loss_fn(x, images, out.w, out.f, f_gen)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tiny_world, tmp_path, monkeypatch):
    """The real entry point under torchrun: 2 CPU ranks keep identical replicas and end where one
    process doing both ranks' halves ends (gathered align negatives, averaged gradients)."""
    import yaml

    # one process doing both halves draws one stream of flips and noise, two ranks two: both off here
    params = tiny_params(tiny_world, tmp_path / "ddp", steps=3, hflip=0.0, noise="const")
    blocks = {k: _asdict(getattr(params, k)) for k in ("shared", "world", "train_aligner", "train_encoder")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(blocks))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "stages" / "train_encoder.py"), "--variant", "clcae",
                           "--params", str(tmp_path / "params.yaml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "reports" / "clcae" / "metrics.json").read_text())
    assert ddp["world_size"] == 2 and ddp["replicas_identical"] is True

    monkeypatch.setattr(te, "TrainStep", HalvesStep)
    te.run(tiny_params(tiny_world, tmp_path / "one", steps=3, hflip=0.0, noise="const"), "clcae")
    # parameters only: DDP keeps rank 0's BatchNorm running statistics (broadcast_buffers)
    a = dict(load_encoder(tmp_path / "ddp" / "encoder" / "clcae" / "encoder.pt").named_parameters())
    b = dict(load_encoder(tmp_path / "one" / "encoder" / "clcae" / "encoder.pt").named_parameters())
    assert a.keys() == b.keys()
    for key, value in b.items():
        torch.testing.assert_close(a[key], value, atol=1e-5, rtol=1e-4, msg=key)


PRE_EMPTED_RANKS = """
import hashlib, os, runpy, signal, sys
import torch
import clcae.pipeline.train_encoder as te

stop_at, real_lr_at, real_train = int(os.environ.get("STOP_AT", "-1")), te.lr_at, te.train

def lr_at(step, *args, **kw):   # rank 0 is pre-empted during step STOP_AT
    if step == stop_at and os.environ["RANK"] == "0":
        os.kill(os.getpid(), signal.SIGTERM)
    return real_lr_at(step, *args, **kw)

def train(*args, **kw):         # each rank's RNG state at the end, as a hash
    try:
        return real_train(*args, **kw)
    finally:
        with open(os.environ["RNG_OUT"] + os.environ["RANK"], "w") as f:
            f.write(hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest())

te.lr_at, te.train = lr_at, train
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_two_ranks_draw_their_own_dropout_and_resume_each_stream(tiny_world, tmp_path):
    """Under torchrun with dropout: the ranks end on different RNG states (their own masks), and a run
    pre-empted on rank 0 at step 3 resumes every rank's stream: its weights equal an uninterrupted
    2-rank run's."""
    import yaml

    (tmp_path / "wrapper.py").write_text(PRE_EMPTED_RANKS)

    def torchrun(out: str, **env):
        params = tiny_params(tiny_world, tmp_path / out, steps=5, dropout=0.1)
        blocks = {k: _asdict(getattr(params, k)) for k in ("shared", "world", "train_aligner", "train_encoder")}
        (tmp_path / f"{out}.yaml").write_text(yaml.safe_dump(blocks))
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               str(tmp_path / "wrapper.py"), str(ROOT / "stages" / "train_encoder.py"), "--variant",
                               "clcae", "--params", str(tmp_path / f"{out}.yaml")], cwd=tmp_path,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "RNG_OUT": str(tmp_path / f"{out}-rng"),
                                   **env}, capture_output=True, text=True, timeout=400)

    whole = torchrun("whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert (tmp_path / "whole-rng0").read_text() != (tmp_path / "whole-rng1").read_text()
    cut = torchrun("cut", STOP_AT="2")
    assert cut.returncode != 0 and "stopped by SIGTERM at step 3" in cut.stderr, cut.stderr[-3000:]
    resumed = torchrun("cut")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_encoder(tmp_path / "whole" / "encoder" / "clcae" / "encoder.pt").state_dict()
    b = load_encoder(tmp_path / "cut" / "encoder" / "clcae" / "encoder.pt").state_dict()
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, atol=1e-6, rtol=0, msg=key)
    assert (tmp_path / "cut-rng1").read_text() == (tmp_path / "whole-rng1").read_text()


def _asdict(obj):
    import dataclasses

    return dataclasses.asdict(obj)


def test_bad_inputs_print_one_line_and_exit_1(tiny_world, tmp_path, capsys):
    """A missing aligner or world, or an unknown variant: `error: ...` and exit 1, no traceback."""
    import yaml

    from clcae.pipeline import stage_main

    def stage(variant, **changes):
        params = tiny_params(tiny_world, tmp_path)
        blocks = {k: _asdict(getattr(params, k)) for k in ("shared", "world", "train_aligner", "train_encoder")}
        for block, values in changes.items():
            blocks[block].update(values)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(blocks))
        with pytest.raises(SystemExit) as exit_:
            stage_main(lambda p: te.run(p, variant), ["--params", str(tmp_path / "params.yaml")])
        err = capsys.readouterr().err
        return exit_.value.code, err

    code, err = stage("clcae", train_aligner={"out_dir": str(tmp_path / "nowhere")})
    assert code == 1 and err.count("\n") == 1 and "aligner.pt: aligner file not found (run `dvc repro train_aligner`" in err
    code, err = stage("clcae", world={"out_dir": str(tmp_path / "noworld")})
    assert code == 1 and err.count("\n") == 1 and "world_cnn.pt" in err and "dvc repro world" in err
    code, err = stage("e4e")
    assert code == 1 and err == "error: train_encoder.variants: no variant 'e4e' (known: clcae, psp)\n"
