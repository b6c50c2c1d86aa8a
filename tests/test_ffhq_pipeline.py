"""The paper-scale pipeline (ffhq/dvc.yaml, configs/ffhq.yaml): it parses offline, and every stage runs
on stand-in assets of the right formats and small sizes in a temp repo."""
import json

import published
import pytest
import torch
import yaml
from conftest import ROOT, fixture_path, fixture_seeded_state
from PIL import Image
from test_pipeline import dvc, make_tiny_repo

# the paper's 1024 px, 512-d generator layout with 2-4 channels above 16 px: the released encoder fits
# it (18 x 512, F 512 x 16 x 16) and a CPU renders it (the fixtures ship no 1024 px generator)
DECODER_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 4, 64: 2, 128: 2, 256: 2, 512: 2, 1024: 2}

TINY_FFHQ = {
    "shared": {"device": "cpu"},
    "ffhq": {"verify_checksums": False},   # stand-ins: presence and format, not the published bytes
    "synthesize": {"n_pairs": 16, "shard_size": 8, "batch_size": 8, "launcher": "python"},
    "train_aligner": {"num_layers": 18, "width": 4, "embed_dim": 16, "heads": 2, "ff_dim": 32, "batch_size": 4,
                      "steps": 2, "warmup_steps": 1, "holdout": 4, "eval_every": 1, "checkpoint_every": 1,
                      "loader_workers": 0, "launcher": "python"},
    # one trained variant, one step: at style_dim 512 the 18 map2style heads alone are ~170M parameters
    "train_encoder": {"common": {"num_layers": 18, "width": 4, "heads": 2, "batch_size": 2, "steps": 1,
                                 "log_every": 1, "checkpoint_every": 1, "sample_every": 1, "test_images": 2,
                                 "optimizer": "adam", "loader_workers": 0,
                                 # L_align on the released contrastive models (seeded stand-ins), not the trained one
                                 "aligner": ["assets/ffhq/best_model_image.pt", "assets/ffhq/best_model_latent.pt"]},
                      "variants": {"clcae": {"align": 0.1, "w_attention": True, "f_attention": True, "use_f": True}},
                      "launcher": "python"},
    "fit_directions": {"n_samples": 200, "pca_components": 8, "effect_samples": 8},
    "evaluate": {"test_images": 0, "batch_size": 2, "metrics": ["mse", "l2_psp", "psnr", "ssim", "lpips"]},
    "report": {"n_boot": 200},
}


def merge(base: dict, over: dict) -> dict:
    """``over`` on ``base``, recursively; ``variants`` is replaced whole."""
    return {**base, **{k: merge(base.get(k, {}), v) if isinstance(v, dict) and k != "variants" else v
                       for k, v in over.items()}}


def seeded_in_order(keys: dict) -> dict:
    """The fixtures' seeded weights of a manifest, in the manifest's (the published file's) key order."""
    state = fixture_seeded_state(keys)
    return {k: state[k] for k in keys}


def write_stand_ins(repo, cfg):
    """Generator, seeded ArcFace, AlexNet, the published directions and PCA, the seeded released encoder and
    contrastive models (each in its published file's layout: tests/published.py), photos."""
    from clcae.editing.directions import PCABasis, save_pca
    from clcae.nets.stylegan2 import Generator, save_generator

    torch.manual_seed(1)
    G = Generator(1024, 512, 8, channels=DECODER_CHANNELS).eval()
    G.latent_avg.copy_(G.mapping(torch.randn(500, 512)).mean(0))
    save_generator(G, repo / cfg["shared"]["generator"])
    irse = json.loads(fixture_path("irse50_manifest.json").read_text())["keys"]
    published.save(seeded_in_order(irse), repo / cfg["ffhq"]["arcface"], legacy=True)   # as model_ir_se50.pth
    published.write("lpips_alexnet", repo / cfg["ffhq"]["lpips_alexnet"])
    for name, path in cfg["fit_directions"]["published"].items():   # pose: [1, 18, 512] saved on cuda:0
        published.write(f"interfacegan_{name}", repo / path)
    comp = torch.linalg.qr(torch.randn(512, 80))[0].T[:, None]   # [80, 1, 512] orthonormal
    save_pca(PCABasis(G.latent_avg[None].clone(), comp, torch.linspace(3, 1, 80)), repo / cfg["fit_directions"]["published_pca"])
    encoder = json.loads(fixture_path("clcae_ffhq_encoder_manifest.json").read_text())["keys"]
    state = seeded_in_order({k: v for k, v in encoder.items() if k != "latent_avg"})   # the file has none
    state.update({"decoder." + k: v for k, v in G.state_dict().items() if k != "latent_avg"})
    published.save({"state_dict": state, "opts": published.clcae_opts("inversion"), "iter": 0.4375},
                   repo / cfg["evaluate"]["released"]["clcae_released"], device_tag="cuda:0")
    contrastive = json.loads(fixture_path("clcae_ffhq_aligner_manifest.json").read_text())
    image_file, latent_file = cfg["train_encoder"]["common"]["aligner"]
    image_state = seeded_in_order(contrastive["image_encoder_keys"])
    image_state["logit_scale"] = torch.tensor(2.6593)   # log(1 / 0.07), a 0-dim parameter
    for state, file in ((image_state, image_file), (seeded_in_order(contrastive["latent_encoder_keys"]), latent_file)):
        published.save({"state_dict": state, "opts": published.clcae_opts("contrastive")}, repo / file, device_tag="cuda:0")
    with torch.no_grad():
        faces = G.synthesis(G.mapping(torch.randn(10, 512))[:, None].expand(-1, 18, -1)).clamp(-1, 1)
    faces = ((torch.nn.functional.avg_pool2d(faces, 4) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    for _split, folder, idx in (("train", cfg["ffhq"]["train_dir"], range(6)), ("test", cfg["ffhq"]["test_dir"], range(6, 10))):
        (repo / folder).mkdir(parents=True)
        for i in idx:
            Image.fromarray(faces[i]).save(repo / folder / f"{i:05d}.png")
    broken = (repo / cfg["ffhq"]["test_dir"] / "00006.png").read_bytes()
    (repo / cfg["ffhq"]["test_dir"] / "00099.png").write_bytes(broken[: len(broken) // 2])   # truncated download


def test_paper_config_lists_every_stage_with_its_command():
    out = dvc("repro", "--dry", "--force", "ffhq/dvc.yaml", cwd=ROOT).stdout
    cfg = yaml.safe_load((ROOT / "configs" / "ffhq.yaml").read_text())
    names = ["assets", "synthesize", "train_aligner", *[f"train_encoder@{v}" for v in cfg["train_encoder"]["variants"]],
             "fit_directions", "evaluate", "report"]
    for name in names:
        assert f"'ffhq/dvc.yaml:{name}'" in out
    assert "torchrun --nproc_per_node 8 stages/train_encoder.py --params configs/ffhq.yaml --variant clcae" in out
    assert "ffhq/dvc.yaml" not in dvc("repro", "--dry", "--force", cwd=ROOT).stdout   # not in the default run


def test_every_paper_stage_cmd_points_at_a_stage_script_with_the_paper_params():
    stages = yaml.safe_load((ROOT / "ffhq" / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)   # a foreach stage's template
        script = next(token for token in stage["cmd"].split() if token.startswith("stages/"))
        assert script == f"stages/{name}.py" and (ROOT / script).exists() and script in stage["deps"]
        assert "--params configs/ffhq.yaml" in stage["cmd"] and stage["wdir"] == ".."


def test_the_paper_pipeline_finds_every_published_file_in_its_real_layout(tmp_path, monkeypatch, capsys):
    """Stand-ins of every file of the assets manifest, each in its published layout (tests/published.py;
    their loading: tests/test_published_layouts.py), at the paths of the paper config: `dvc repro --dry`
    plans every stage and the asset check recognises each file (presence and format: they are stand-ins)."""
    from clcae.config import Params, build
    from clcae.worlds.ffhq import assets as A

    repo = make_tiny_repo(tmp_path)
    cfg = merge(yaml.safe_load((ROOT / "configs" / "ffhq.yaml").read_text()), TINY_FFHQ)
    cfg["ffhq"]["inception"] = "assets/ffhq/inception_v3_google-0cc3c7bd.pth"   # not torchvision's cache
    (repo / "configs" / "ffhq.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    params = build(Params, cfg)
    for asset in A.MANIFEST:
        path = repo / A.locate(asset, params)
        assert path.is_relative_to(repo / "assets" / "ffhq") or asset.folder, path
        if asset.folder:
            path.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * i, 90, 160)).save(path / f"{i:05d}.png")
        else:
            published.write(asset.name, path)

    # the assets stage's file deps all there (a missing one fails the dry run: "No such file"), then the plan
    assert "Running stage 'ffhq/dvc.yaml:assets'" in dvc("repro", "--dry", "--single-item", "ffhq/dvc.yaml:assets",
                                                          cwd=repo).stdout
    out = dvc("repro", "--dry", "--force", "ffhq/dvc.yaml", cwd=repo).stdout
    for stage in ("assets", "synthesize", "train_aligner", "train_encoder@clcae", "fit_directions", "evaluate", "report"):
        assert f"Running stage 'ffhq/dvc.yaml:{stage}'" in out
    monkeypatch.chdir(repo)
    capsys.readouterr()
    assert A.main(["check", "--params", "configs/ffhq.yaml"]) == 0
    out = capsys.readouterr().out
    for asset in A.MANIFEST:
        assert f"ok      {A.locate(asset, params)}: {asset.name} " in out, out
    assert f"{len(A.MANIFEST)} of {len(A.MANIFEST)} assets in place (ffhq.verify_checksums: false" in out


@pytest.mark.slow
def test_every_paper_stage_runs_on_stand_in_assets(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))   # no Inception: ArcFace features
    repo = make_tiny_repo(tmp_path)
    cfg = merge(yaml.safe_load((ROOT / "configs" / "ffhq.yaml").read_text()), TINY_FFHQ)
    (repo / "configs" / "ffhq.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (repo / "assets" / "ffhq").mkdir(parents=True, exist_ok=True)
    write_stand_ins(repo, cfg)

    dvc("repro", "ffhq/dvc.yaml", cwd=repo)

    assets = json.loads((repo / "reports/ffhq/assets.json").read_text())
    assert assets["unreadable_images"]["test"] == {"count": 1, "files": ["00099.png"]}
    assert assets["assets"]["clcae_encoder"]["state"] == "unverified" and not assets["checksums_verified"]
    assert json.loads((repo / "reports/ffhq/synthesize/metrics.json").read_text())["n_pairs"] == 16
    assert json.loads((repo / "reports/ffhq/aligner/metrics.json").read_text())["steps"] == 2
    clcae = json.loads((repo / "reports/ffhq/train_encoder/clcae/metrics.json").read_text())
    assert clcae["world"] == "ffhq" and clcae["steps"] == 1 and "arcface_id_similarity" in clcae["test"]["f"]
    assert clcae["unreadable_images"]["test"]["files"] == ["00099.png"]
    directions = json.loads((repo / "data/ffhq/directions/directions.json").read_text())["directions"]
    assert {"age", "smile", "pose", "eye_openness"} <= set(directions)
    pose = torch.load(repo / cfg["fit_directions"]["published"]["pose"], map_location="cpu")   # [1, 18, 512]
    fitted_pose = torch.load(repo / "data/ffhq/directions" / directions["pose"]["file"])
    assert pose.shape == (1, 18, 512) and torch.equal(fitted_pose, pose[:, 0])   # 18 identical rows: one vector
    metrics = json.loads((repo / "reports/ffhq/metrics.json").read_text())
    assert metrics["world"] == "ffhq" and metrics["test_images"] == 4   # the truncated file skipped, named
    assert metrics["unreadable_test_images"] == {"count": 1, "files": ["00099.png"]}
    assert set(metrics["reconstruction"]) == {"clcae", "clcae_released"}
    released = metrics["reconstruction"]["clcae_released"]
    assert set(released) == {"w", "wplus", "f"} and "lpips" in released["f"] and released["f"]["mse"] > 0
    assert "skipped" in metrics["editing"]   # no attribute classifier: reconstruction only, and why
    assert (repo / "reports/ffhq/report.md").exists() and (repo / "reports/ffhq/claims.csv").exists()
    assert dvc("status", "ffhq/dvc.yaml", cwd=repo).stdout.strip() in ("", "Data and pipelines are up to date.")
    assert assets["assets"]["clcae_aligner_latent"]["path"] == "assets/ffhq/best_model_latent.pt"   # checked

    # your own photo through the released encoder, from the command line
    from clcae.cli import main

    monkeypatch.chdir(repo)
    photo = repo / cfg["ffhq"]["test_dir"] / "00007.png"
    assert main(["--params", "configs/ffhq.yaml", "--encoder", "assets/ffhq/FFHQ_Inversion.pt", "invert",
                 str(photo), "--out", "mine", "--no-align"]) == 0   # a stand-in generator picture: no face to find
    latents = torch.load(repo / "mine" / "00007_latents.pt")
    assert latents["wplus"].shape == (18, 512) and latents["f"].shape == (512, 16, 16)
    assert Image.open(repo / "mine" / "00007_f.png").size == (256, 256)   # at the encoder's side, as pSp shows
