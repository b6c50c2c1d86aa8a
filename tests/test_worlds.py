"""Worlds: the judges behind one interface (procfaces and ffhq), and the image sets they hand over."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_path, fixture_seeded_state
from PIL import Image

from clcae.config import Params
from clcae.data import FolderImages, TensorImages, resize, resize_u8
from clcae.images import to_float
from clcae.nets.irse import Backbone
from clcae.pipeline.world import write_train_shards
from clcae.scoring import identity_column, score_reconstructions
from clcae.shards import ShardImages
from clcae.worlds import World, load_world
from clcae.worlds.ffhq import judges
from clcae.worlds.ffhq.world import FFHQWorld
from clcae.worlds.procfaces import procfaces as pf
from clcae.worlds.procfaces import world_cnn as wc
from clcae.worlds.procfaces.world import ProcFacesWorld


def frozen(world: World) -> bool:
    return all(not m.training and not any(p.requires_grad for p in m.parameters()) for m in world.judges())


def assert_differentiable(world: World, fn, size: int) -> None:
    x = torch.rand(2, 3, size, size, requires_grad=True)
    fn(x * 2 - 1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for m in world.judges() for p in m.parameters())


# ----------------------------------------------------------------------------- procfaces


@pytest.fixture(scope="module")
def procfaces_dir(tmp_path_factory):
    """A world stage's outputs in miniature: a tiny world CNN, 2 train shards, a test PNG folder."""
    out = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    cnn = wc.WorldCNN(widths=(8, 8, 16, 16, 16), emb_dim=16)
    faces = pf.render(pf.decode(pf.sample_latents(8, torch.Generator().manual_seed(0))))
    cnn.train()(faces)  # BatchNorm statistics away from their init
    cnn.attr_mean.copy_(torch.linspace(-1, 1, 7))
    wc.save_world_cnn(cnn.eval(), out / "world_cnn.pt")
    images, u, pid, labels = pf.render_split("train", 5, 2, seed=0)
    write_train_shards(images, u, pid, labels, out / "train", shard_size=6)
    test, tu, tpid, tlabels = pf.render_split("test", 3, 2, seed=0)
    pf.write_png_folder(test, pf.labels_frame(tu, tpid, tlabels), out / "test")
    return out, images, pid, labels, test, tlabels


@pytest.fixture(scope="module")
def procfaces_world(procfaces_dir):
    params = Params()
    params.world.out_dir = str(procfaces_dir[0])
    return load_world(params, "cpu")


def test_load_world_procfaces_names_and_frozen_judges(procfaces_world):
    world = procfaces_world
    assert isinstance(world, ProcFacesWorld) and not isinstance(world, torch.nn.Module)
    assert (world.name, world.image_size) == ("procfaces", 64)
    assert (world.identity_name, world.perceptual_name, world.features_name) == (
        "world_id", "world_perceptual", "world_pooled")
    assert world.attribute_names == pf.ATTRIBUTES
    assert frozen(world) and world.device == torch.device("cpu")


def test_procfaces_judges_are_the_world_cnn(procfaces_world, procfaces_dir):
    world, test = procfaces_world, procfaces_dir[4]
    cnn = wc.load_world_cnn(procfaces_dir[0] / "world_cnn.pt")
    x, y = to_float(test[:4]), to_float(torch.cat([test[4:6], test[2:4]]))
    with torch.no_grad():
        emb = world.identity(x)
        assert emb.shape == (4, 16)
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
        torch.testing.assert_close((emb * world.identity(x.clone())).sum(1), torch.ones(4))  # same image: cos 1
        torch.testing.assert_close(emb, cnn.identity(x))
        d = world.perceptual(x, y)
        assert torch.equal(world.perceptual(x, x), torch.zeros(4))
        assert d.shape == (4,) and (d[:2] > 0).all() and torch.equal(d[2:], torch.zeros(2))  # rows 2, 3 are shared
        torch.testing.assert_close(d, wc.perceptual_distance(cnn, x, y))
        attrs = world.attributes(x)
        assert attrs.shape == (4, 7)
        torch.testing.assert_close(attrs, cnn.attributes(x))
        torch.testing.assert_close(world.features(x), cnn.pooled(x))
        described = world.describe(x)   # one trunk pass, the same three readouts
        for name, value in (("identity", emb), ("attributes", attrs), ("features", world.features(x))):
            torch.testing.assert_close(described[name], value)
        # uint8 images and other sizes: converted to [-1, 1] and resized (antialiased) to 64
        torch.testing.assert_close(world.identity(test[:4]), emb)
        big = F.interpolate(x, size=96, mode="bilinear", antialias=True, align_corners=False)
        torch.testing.assert_close(world.identity(big), cnn.identity(resize(big, 64)))
    for fn in (world.identity, world.attributes, world.features, lambda x: world.perceptual(x, x.flip(0))):
        assert_differentiable(world, fn, 64)
    with pytest.raises(ValueError, match=r"square images \[B, 3, H, H\]"):
        world.identity(torch.zeros(2, 3, 64, 48))


def test_procfaces_images_from_the_world_stage(procfaces_world, procfaces_dir):
    world = procfaces_world
    _, images, pid, labels, test, tlabels = procfaces_dir
    train = world.train_images(64)
    assert len(train) == 10 and train.names[:2] == ["train/000000", "train/000001"]
    assert torch.equal(train.batch(torch.arange(10)), images)  # across the two shards, in order
    assert list(train.labels.columns) == ["person_id", *pf.ATTRIBUTES]
    np.testing.assert_array_equal(train.labels["person_id"].to_numpy(), pid.numpy())
    np.testing.assert_allclose(train.labels[pf.ATTRIBUTES].to_numpy(), labels.numpy(), rtol=1e-6)
    small = world.train_images(32)
    idx = torch.tensor([7, 0, 3])
    assert torch.equal(small.batch(idx), torch.stack([small[i] for i in idx]))
    assert torch.equal(small.batch(idx), resize_u8(images[idx], 32))
    test_set = world.test_images(64)
    assert isinstance(test_set, FolderImages) and test_set.names[0] == "000000.png"
    assert torch.equal(test_set.batch(torch.arange(6)), test)  # PNG is lossless
    np.testing.assert_allclose(test_set.labels[pf.ATTRIBUTES].to_numpy(), tlabels.numpy(), rtol=1e-6)
    assert isinstance(train, ShardImages) and small.data is train.data  # one set of maps, any size


def test_procfaces_missing_outputs_name_the_dvc_target(tmp_path):
    params = Params()
    params.world.out_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"world_cnn\.pt.*dvc repro world"):
        load_world(params, "cpu")
    world = ProcFacesWorld(wc.WorldCNN(widths=(8, 8, 16, 16, 16), emb_dim=16), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train.*dvc repro world"):
        world.train_images(64)
    with pytest.raises(FileNotFoundError, match=r"test.*dvc repro world"):
        world.test_images(64)


# ----------------------------------------------------------------------------- image sets


def test_tensor_images_batch_equals_getitem_and_checks_input():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8, generator=g)
    ds = TensorImages(images)
    assert len(ds) == 5 and ds.names == [f"{i:06d}" for i in range(5)] and ds.labels is None
    idx = torch.tensor([4, 1, 1])
    assert torch.equal(ds.batch(idx), images[idx]) and torch.equal(ds[-1], images[4])
    down = TensorImages(images, size=6)
    assert torch.equal(down.batch(idx), torch.stack([down[int(i)] for i in idx]))
    by_hand = F.interpolate(images[idx].float(), size=6, mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(down.batch(idx), by_hand.round().to(torch.uint8))
    flat = torch.full((1, 3, 12, 12), 77, dtype=torch.uint8)  # a flat image stays flat at any size
    assert torch.equal(TensorImages(flat, size=5)[0], torch.full((3, 5, 5), 77, dtype=torch.uint8))
    with pytest.raises(IndexError, match="out of range for 5"):
        ds[5]
    labelled = TensorImages(images, labels=pd.DataFrame({"k": range(5)}), size=6)
    sub = labelled.subset([4, 2])
    assert len(sub) == 2 and sub.names == ["000004", "000002"] and sub.labels["k"].tolist() == [4, 2]
    assert torch.equal(sub.batch(torch.tensor([1, 0])), labelled.batch(torch.tensor([2, 4])))
    assert torch.equal(sub[-1], labelled[2]) and len(labelled.subset(range(3))) == 3
    with pytest.raises(ValueError, match="uint8"):
        TensorImages(images.float())
    with pytest.raises(ValueError, match="2 names for 5"):
        TensorImages(images, names=["a", "b"])


def test_folder_images_formats_crop_and_unreadable_files(tmp_path):
    g = np.random.default_rng(0)
    rgb = g.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    rows, cols = np.meshgrid(np.arange(16) * 16, np.arange(16) * 8, indexing="ij")
    ramp = np.stack([rows, cols, np.full((16, 16), 90)], axis=2).astype(np.uint8)  # smooth: JPEG keeps it close
    Image.fromarray(ramp).save(tmp_path / "b.JPG", quality=95)
    gray = g.integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "c.png")
    wide = g.integers(0, 256, (16, 24, 3), dtype=np.uint8)  # 16 rows x 24 columns
    Image.fromarray(wide).save(tmp_path / "d.png")
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "e.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\): broken\.png"):
        ds = FolderImages(tmp_path, 16)
    assert ds.names == ["a.png", "b.JPG", "c.png", "d.png", "e.png"] and ds.skipped[0][0] == "broken.png"
    chw = lambda a: torch.from_numpy(np.array(a)).permute(2, 0, 1)
    assert torch.equal(ds[0], chw(rgb))
    on_white = (rgb.astype(np.float64) * 128 + 255 * 127) / 255  # alpha 128 composited on white, as photos are
    assert (ds[4].double() - chw(on_white)).abs().max() <= 1
    with Image.open(tmp_path / "b.JPG") as im:
        assert torch.equal(ds[1], chw(np.asarray(im.convert("RGB"))))
    assert (ds[1].int() - chw(ramp).int()).abs().float().mean() < 3  # JPEG is lossy, not wrong
    assert torch.equal(ds[2], torch.from_numpy(gray)[None].expand(3, 16, 16))
    assert torch.equal(ds[3], chw(wide[:, 4:20]))  # centre crop
    assert torch.equal(ds.batch(torch.tensor([3, 0])), torch.stack([ds[3], ds[0]]))
    assert ds.labels is None
    with pytest.warns(UserWarning):
        half = FolderImages(tmp_path, 8)
    assert half[0].shape == (3, 8, 8) and torch.equal(half[0], resize_u8(chw(rgb)[None], 8)[0])


def test_folder_images_labels_and_errors(tmp_path):
    for name in ("x.png", "y.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("file,smile\ny.png,0.5\nx.png,-1\n")
    ds = FolderImages(tmp_path, 4)
    assert ds.labels["file"].tolist() == ["x.png", "y.png"] and ds.labels["smile"].tolist() == [-1, 0.5]
    (tmp_path / "labels.csv").write_text("file,smile\ny.png,0.5\n")
    with pytest.raises(ValueError, match=r"no labels for 1 image.*x\.png"):
        FolderImages(tmp_path, 4)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        FolderImages(tmp_path / "absent", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no readable"):
        FolderImages(tmp_path / "empty", 4)


# ----------------------------------------------------------------------------- ffhq


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds a randomly initialised AlexNet under torchvision's file name
    (only ``features.*``, the part LPIPS uses; the classifier would add 230 MB)."""
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    torch.save(state, home / "hub" / "checkpoints" / judges.ALEXNET_FILE)
    return home, state


@pytest.fixture
def lpips_net(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home[0]))
    return judges.load_lpips_alex()


def tiny_ffhq_world(lpips_net, **kwargs) -> FFHQWorld:
    torch.manual_seed(0)
    return FFHQWorld(Backbone(112, 18, "ir_se", width=8, embed_dim=16).eval(), lpips_net, **kwargs)


def test_missing_alexnet_says_where_torchvision_expects_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(FileNotFoundError) as err:
        judges.load_lpips_alex()
    message = str(err.value)   # the same words on every machine: stage metrics record them
    assert "torchvision's cache, torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth" in message
    assert "TORCH_HOME" in message and "ffhq.lpips_alexnet" in message and str(tmp_path) not in message
    assert not (tmp_path / "empty_home").exists()  # nothing was downloaded
    # through load_world: the same message once ArcFace is found
    arcface = tmp_path / "model_ir_se50.pth"
    torch.save(Backbone(112, 18, "ir_se", width=8, embed_dim=16).state_dict(), arcface)
    params = Params()
    params.shared.world, params.ffhq.arcface = "ffhq", str(arcface)
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        load_world(params, "cpu")
    params.ffhq.arcface = str(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match=r"absent\.pth: arcface missing.*model_ir_se50.*fetch it from "
                                                r"https://drive.*put it at .*absent\.pth \(or set ffhq\.arcface\)"):
        load_world(params, "cpu")
    (tmp_path / "page.pth").write_text("<html><body>Google Drive can't scan this file for viruses</body></html>")
    params.ffhq.arcface = str(tmp_path / "page.pth")
    with pytest.raises(FileNotFoundError, match=r"page\.pth: arcface corrupt: it is an HTML page"):
        load_world(params, "cpu")


def test_lpips_reads_the_alexnet_file_and_is_a_distance(lpips_net, torch_home):
    state = torch_home[1]
    assert torch.equal(lpips_net.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(lpips_net.net.slice5, "10").bias, state["features.10.bias"])
    linear = torch.load(judges.lpips_linear_path(), map_location="cpu")  # LPIPS's calibrated layers, from the package
    assert torch.equal(lpips_net.lin4.model[1].weight, linear["lin4.model.1.weight"])
    world = tiny_ffhq_world(lpips_net)
    assert (world.name, world.image_size, world.perceptual_name, world.identity_name) == (
        "ffhq", 256, "lpips", "arcface_id")
    assert frozen(world)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        assert torch.equal(world.perceptual(x, x), torch.zeros(2))
        d = world.perceptual(x, y)
        assert d.shape == (2,) and (d > 0).all()
        # scored at 256 px, as pSp scores it
        torch.testing.assert_close(d, lpips_net(resize(x, 256), resize(y, 256)).flatten())
    assert_differentiable(world, lambda x: world.perceptual(x, x.flip(0)), 64)
    bad = torch_home[0] / "bad_alexnet.pth"
    torch.save({"features.0.weight": state["features.0.weight"]}, bad)
    with pytest.raises(ValueError, match=r"bad_alexnet\.pth.*features\.3\.weight"):
        judges.load_lpips_alex(bad)


def test_ffhq_identity_matches_the_arcface_fixture(lpips_net, torch_home, tmp_path, monkeypatch):
    expected = torch.load(fixture_path("irse50_expected.pt"))
    manifest = json.loads(fixture_path("irse50_manifest.json").read_text())
    torch.save(fixture_seeded_state(manifest["keys"]), tmp_path / "model_ir_se50.pth")
    monkeypatch.setenv("TORCH_HOME", str(torch_home[0]))
    params = Params()
    params.shared.world, params.ffhq.arcface = "ffhq", str(tmp_path / "model_ir_se50.pth")
    world = load_world(params, "cpu")
    assert isinstance(world, FFHQWorld) and world.features_name == "arcface_embedding"
    x = expected["input_256"]
    with torch.no_grad():
        emb = world.identity(x)
        torch.testing.assert_close(emb, expected["features"], atol=1e-5, rtol=0)
        # 512 px: average-pooled to 256 first, which undoes a nearest 2x upsampling exactly
        torch.testing.assert_close(world.identity(x.repeat_interleave(2, 2).repeat_interleave(2, 3)), emb,
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(world.features(x), emb)  # no Inception here: ArcFace features


def test_ffhq_tiny_identity_attributes_and_folders(lpips_net, tmp_path):
    world = tiny_ffhq_world(lpips_net)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        emb = world.identity(x)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    assert_differentiable(world, world.identity, 256)
    assert world.attribute_names == []
    with pytest.raises(RuntimeError, match="no attribute classifier.*ffhq.attribute_classifier"):
        world.attributes(x)

    torch.manual_seed(0)
    clf = judges.AttributeClassifier("resnet18", ["smile", "age"], input_size=32).eval()
    judges.save_attribute_classifier(clf, tmp_path / "attrs.pt")
    loaded = judges.load_attribute_classifier(tmp_path / "attrs.pt")
    world = tiny_ffhq_world(lpips_net, classifier=loaded, train_dir=tmp_path / "train", test_dir=tmp_path / "nope")
    assert world.attribute_names == ["smile", "age"] and frozen(world)
    with torch.no_grad():
        a = world.attributes(x)
        assert a.shape == (2, 2)
        # by hand: [-1, 1] -> [0, 1] -> 32 px -> ImageNet normalisation -> the ResNet
        mean, std = torch.tensor(judges.IMAGENET_MEAN)[:, None, None], torch.tensor(judges.IMAGENET_STD)[:, None, None]
        torch.testing.assert_close(a, clf.net((resize((x + 1) / 2, 32) - mean) / std))
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt.*not an attribute classifier"):
        judges.load_attribute_classifier(tmp_path / "other.pt")

    (tmp_path / "train").mkdir()
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(tmp_path / "train" / "0.png")
    train = world.train_images(8)
    assert torch.equal(train[0], torch.full((3, 8, 8), 200, dtype=torch.uint8))
    with pytest.raises(FileNotFoundError, match=r"nope.*ffhq\.test_dir"):
        world.test_images(8)


def test_ffhq_folders_skip_files_that_do_not_decode_and_name_them(lpips_net, tmp_path):
    """A truncated PNG has a valid header (FolderImages' check passes) but does not decode; a text
    file saved as .jpg has none: both are skipped, named, and the rest is served in order."""
    folder = tmp_path / "celebahq"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((30, 40, 3), 50 * i, np.uint8)).save(folder / f"{i}.png")
    whole = (folder / "2.png").read_bytes()
    (folder / "2.png").write_bytes(whole[:len(whole) // 2])
    (folder / "9.jpg").write_text("<html>404 Not Found</html>")
    world = tiny_ffhq_world(lpips_net, test_dir=folder)
    with pytest.warns(UserWarning) as caught:
        test = world.test_images(8)
    messages = " ".join(str(w.message) for w in caught)
    assert "9.jpg" in messages and "2.png" in messages and "do not decode" in messages
    assert test.names == ["0.png", "1.png", "3.png"]
    assert sorted(name for name, _ in test.skipped) == ["2.png", "9.jpg"]
    assert test.batch(torch.arange(3))[:, 0, 0, 0].tolist() == [0, 50, 150]
    for i in (0, 1, 3):
        (folder / f"{i}.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"celebahq: none of its 1 images decodes, e.g. 2.png \(.*truncated"):
        world.test_images(8)


def test_inception_features_when_its_weights_are_present(lpips_net, tmp_path):
    torch.manual_seed(0)
    state = judges.InceptionPool().net.state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # as torchvision's file
    torch.save(state, tmp_path / judges.INCEPTION_FILE)
    net = judges.load_inception(tmp_path / judges.INCEPTION_FILE)
    world = tiny_ffhq_world(lpips_net, inception=net)
    assert world.features_name == "inception_v3_imagenet_pool" and frozen(world)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        f = world.features(x)
        assert f.shape == (1, 2048)
        torch.testing.assert_close(f, net.net(resize(x, 299)))  # [-1, 1] fed as is: Google's normalisation
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth.*Inception-v3"):
        judges.load_inception(tmp_path / "other.pth")


def test_metrics_and_editing_never_import_worlds():
    """DESIGN.md: the judges are passed in; world code is reached only through load_world."""
    import ast

    from conftest import ROOT

    for folder in ("metrics", "editing"):
        for path in (ROOT / "clcae" / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                assert not any(n.startswith("clcae.worlds") for n in names), f"{path} imports {names}"


# ----------------------------------------------------------------------------- scoring


def naive_scores(world, rec, target):
    """What one space's scores are, each judge called on its own (the reference for the shared passes)."""
    rec = rec.clamp(-1, 1)
    return ({"mse": ((rec - target) ** 2).mean((1, 2, 3)) / 4, world.perceptual_name: world.perceptual(rec, target),
             identity_column(world): (world.identity(rec) * world.identity(target)).sum(1)}, world.features(rec))


def count_calls(module: torch.nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_scores_judge_the_target_once_and_every_space_in_one_pass(procfaces_world, procfaces_dir):
    world, test = procfaces_world, procfaces_dir[4]
    target = to_float(test[:3])
    g = torch.Generator().manual_seed(1)
    recs = {s: (target + 0.4 * torch.randn(target.shape, generator=g)) for s in ("w", "wplus", "f")}  # some beyond [-1, 1]
    passes = count_calls(world.cnn.stem)
    scored = score_reconstructions(world, recs, target, ["mse"])
    assert len(passes) == 2   # the target, then the three spaces' 9 renders together (was 3 per space)
    assert list(scored) == ["w", "wplus", "f"]
    for space, rec in recs.items():
        cols, feats = scored[space]
        want_cols, want_feats = naive_scores(world, rec, target)
        assert list(cols) == ["mse", "world_perceptual", "world_id_similarity"]
        for name, want in want_cols.items():
            torch.testing.assert_close(cols[name], want, atol=1e-5, rtol=1e-5, msg=f"{space} {name}")
        torch.testing.assert_close(feats, want_feats, atol=1e-5, rtol=1e-5)
    assert scored["w"][0]["mse"].min() > 0 and scored["w"][0]["world_perceptual"].min() > 0
    same = score_reconstructions(world, {"w": target}, target, ["mse"], target_id=world.identity(target))["w"][0]
    torch.testing.assert_close(same["world_perceptual"], torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(same["world_id_similarity"], torch.ones(3))


def test_ffhq_judge_runs_arcface_once_for_identity_and_features(lpips_net):
    world = tiny_ffhq_world(lpips_net)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    arcface = count_calls(world.id_encoder)
    with torch.no_grad():
        judged = world.judge(x, perceptual=False, features=True)
        assert len(arcface) == 1 and judged.perceptual is None
        torch.testing.assert_close(judged.features, world.identity(x))   # no Inception: ArcFace gives the features
        arcface.clear()
        described = world.describe(x)
        assert len(arcface) == 1 and set(described) == {"identity", "features"}
        torch.testing.assert_close(described["features"], described["identity"])
        torch.testing.assert_close(described["identity"], judged.identity)
        scored = score_reconstructions(world, {"wplus": y, "f": x}, x, ["mse"])
    cols, feats = scored["wplus"]
    torch.testing.assert_close(cols["lpips"], world.perceptual(y, x))   # the world's perceptual distance is LPIPS
    torch.testing.assert_close(cols[identity_column(world)], (world.identity(y) * world.identity(x)).sum(1))
    torch.testing.assert_close(scored["f"][0]["lpips"], torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(feats, world.identity(y))


def test_shared_channels_last_loads_the_judges_nhwc_with_the_same_readouts(procfaces_dir):
    """load_world with shared.channels_last: the world CNN's conv weights in channels_last, its
    readouts (describe, perceptual) those of the NCHW world up to float rounding."""
    params = Params()
    params.world.out_dir = str(procfaces_dir[0])
    nchw = load_world(params, "cpu")
    params.shared.channels_last = True
    nhwc = load_world(params, "cpu")
    convs = [m.weight for m in nhwc.cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not any(m.weight.is_contiguous(memory_format=torch.channels_last)
                   for m in nchw.cnn.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    x = procfaces_dir[4][:6]
    with torch.no_grad():
        a, b = nchw.describe(x), nhwc.describe(x)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(nhwc.perceptual(x, x.flip(0)), nchw.perceptual(x, x.flip(0)), rtol=1e-4, atol=1e-6)
