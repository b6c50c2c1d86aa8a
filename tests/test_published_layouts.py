"""Every published file the paper pipeline names loads, in its real layout, through the loader the
pipeline uses for it. The stand-ins (tests/published.py) are checked against the layouts recorded
from the publishers' repositories (tests/data/published/layouts.json), then written and loaded."""
import re

import published as P
import pytest
import torch
from conftest import fixture_path

from clcae.worlds.ffhq import assets as A

L = P.LAYOUTS


def skeleton(obj, shapes: bool = True):
    """Nesting, key order, types and dtypes of a loaded file (tensor shapes too when ``shapes``)."""
    if isinstance(obj, torch.Tensor):
        return ("tensor", str(obj.dtype), tuple(obj.shape) if shapes else obj.ndim)
    if isinstance(obj, dict):
        meta = hasattr(obj, "_metadata")
        return (type(obj).__name__, meta, [(k, skeleton(v, shapes)) for k, v in obj.items()])
    return type(obj).__name__


def assert_state(sd: dict, block: dict, where: str) -> None:
    """A state dict against a layouts.json state-dict block: count, ends, key patterns, dtypes, example shapes."""
    got = P.summary(sd)
    for field in ("n_keys", "first_key", "last_key", "key_patterns", "dtypes"):
        if field in block:
            assert got[field] == block[field], f"{where}: {field} {got[field]} != published {block[field]}"
    for key, example in block.get("examples", {}).items():
        assert [list(sd[key].shape), str(sd[key].dtype)] == [example["tensor"], "torch." + example["dtype"]], \
            f"{where}: {key}"


def assert_tensor(t: torch.Tensor, block: dict, where: str) -> None:
    assert list(t.shape) == block["tensor"] and t.dtype == getattr(torch, block["dtype"]), where
    if "stride" in block:
        assert list(t.stride()) == block["stride"], f"{where}: stride {t.stride()}"
    if "contiguous" in block:
        assert t.is_contiguous() == block["contiguous"], f"{where}: contiguous"


def assert_published_layout(name: str, obj) -> None:
    """``obj`` (a build at the real sizes) has the structure layouts.json records for ``name``."""
    s = L[name]["structure"]
    if "state_dict" in s:                                              # a bare state dict
        assert_state(obj, s["state_dict"], name)
        return
    if "tensor" in s:                                                  # a direction
        assert_tensor(obj, s, name)
        return
    assert isinstance(obj, dict) and list(obj) == s["key_order"], f"{name}: top-level keys {list(obj)}"
    for key, block in s["keys"].items():
        where, value = f"{name}.{key}", obj[key]
        if "tensor" in block:
            assert_tensor(value, block, where)
        elif key == "opts":
            assert list(value) == block["keys_per_code_at_HEAD"], where
            assert value["device"] == torch.device("cuda", 0)
        elif key == "iter":
            assert isinstance(value, float)
        elif name == "clcae_encoder":                                  # encoder.* and decoder.*
            assert len(value) == block["n_keys"]
            encoder = {k: v for k, v in value.items() if k.startswith("encoder.")}
            decoder = {k[len("decoder."):]: v for k, v in value.items() if k.startswith("decoder.")}
            assert list(value) == list(encoder) + ["decoder." + k for k in decoder], f"{where}: encoder.* then decoder.*"
            assert_state(encoder, block["encoder.*"], f"{where} encoder.*")
            assert "latent_avg" not in value and block["decoder.*"]["n_keys"] == len(decoder)
            assert skeleton(decoder)[2] == skeleton(P.build("generator", real=True)["g_ema"])[2], f"{where} decoder.*"
        else:
            inner = block.get("state_dict", block)
            if "same_keys_and_shapes_as" in inner:                     # generator.g
                assert skeleton(value) == skeleton(obj[inner["same_keys_and_shapes_as"]]), where
            else:
                assert_state(value, inner, where)


def test_a_writer_and_a_layout_for_every_published_file():
    files = {a.name for a in A.MANIFEST if not a.folder}
    assert set(P.NAMES) == files and set(L) - {"_about"} == files


@pytest.mark.parametrize("name", P.NAMES)
def test_the_writers_make_the_publishers_layout_at_the_real_sizes(name):
    """Compared with layouts.json without allocating: every tensor on the meta device."""
    assert_published_layout(name, P.build(name, real=True))


def test_the_generators_channels_and_the_encoders_published_counts():
    g_ema = P.build("generator", real=True)["g_ema"]
    channels = {4: g_ema["input.input"].shape[1],
                **{2 ** (i + 3): g_ema[f"convs.{2 * i}.conv.weight"].shape[1] for i in range(8)}}
    assert {str(k): v for k, v in channels.items()} == L["generator"]["structure"]["keys"]["g_ema"]["state_dict"][
        "channels_by_resolution"]
    sizes = {k: sum(v.numel() * v.element_size() for v in P.build("generator", real=True)[k].values())
             for k in ("g_ema", "g", "d")}
    evidence = L["generator"]["evidence"]
    assert sizes == {"g_ema": evidence["tensor_bytes_g_ema"], "g": evidence["tensor_bytes_g"],
                     "d": evidence["tensor_bytes_d"]}
    arcface = P.build("arcface", real=True)
    assert sum(v.numel() * v.element_size() for v in arcface.values()) == L["arcface"]["evidence"]["tensor_bytes"]


@pytest.mark.parametrize("name", P.NAMES)
def test_the_written_stand_ins_keep_container_device_and_structure(name, tmp_path):
    """The file: the publisher's container and storage tag; the real file's nesting, key order and
    dtypes, and its shapes where it is written at full size (its byte size then close to the real one)."""
    path = P.write(name, tmp_path / f"{name}.pt")
    layout = L[name]
    assert P.container(path) == layout["container"]
    tag = layout["structure"].get("storage_location_tag") or ("cuda:0" if "'cuda:<rank>'" in layout["notes"] else "cpu")
    assert P.storage_tags(path) == {tag}
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    real = P.build(name, real=True)
    full = name in P.FULL_SIZE
    assert skeleton(loaded, shapes=full) == skeleton(real, shapes=full)
    assert skeleton(loaded) == skeleton(P.build(name))   # what was built is what loads
    if full:
        assert_published_layout(name, loaded)
        # torch >= 2 adds about 0.9 kB of zip records (byteorder, serialization id, alignment) to torch.save files
        assert abs(path.stat().st_size - layout["size"]) < 1024 + 1e-4 * layout["size"], path.stat().st_size


def loaded_file(name, tmp_path):
    path = P.write(name, tmp_path / f"{name}.pt")
    return path, torch.load(path, map_location="cpu", weights_only=True)


def test_generator_loads_with_load_generator(tmp_path):
    from clcae.nets.stylegan2 import load_generator

    path, ckpt = loaded_file("generator", tmp_path)
    G = load_generator(path)
    assert (G.size, G.n_latent, G.style_dim) == (1024, 18, P.SMALL["style_dim"])
    own = G.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ckpt["g_ema"].items())   # g_ema as saved; g and d left alone
    assert torch.equal(G.latent_avg, ckpt["latent_avg"])


def test_arcface_loads_with_load_arcface(tmp_path):
    from clcae.nets.irse import load_arcface

    path, state = loaded_file("arcface", tmp_path)
    net = load_arcface(path)
    own = net.state_dict()
    assert set(own) == set(state) and all(torch.equal(own[k], v) for k, v in state.items())
    assert (net.input_size, net.output_layer[3].out_features) == (112, 512)   # read off the shapes


def test_alexnet_loads_as_the_lpips_trunk(tmp_path):
    from clcae.worlds.ffhq.judges import load_lpips_alex

    path, state = loaded_file("lpips_alexnet", tmp_path)
    net = load_lpips_alex(path)
    trunk = net.net.state_dict()   # lpips' slice1..5 keep torchvision's layer indices
    assert len(trunk) == 10 and all(torch.equal(v, state["features." + k.split(".", 1)[1]]) for k, v in trunk.items())


def test_inception_loads_without_its_batch_counters(tmp_path):
    from clcae.worlds.ffhq.judges import load_inception

    path, state = loaded_file("inception", tmp_path)
    assert not any(k.endswith("num_batches_tracked") for k in state)
    net = load_inception(path).net
    own = net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    counters = [k for k in own if k.endswith("num_batches_tracked")]   # filled in by BatchNorm on load
    assert len(own) == len(state) - 2 + len(counters) and len(counters) == 96   # every entry but fc, + the counters


@pytest.mark.parametrize("name", ["interfacegan_age", "interfacegan_smile"])
def test_age_and_smile_load_as_one_vector(name, tmp_path):
    from clcae.editing.directions import load_direction

    path, t = loaded_file(name, tmp_path)
    d = load_direction(path, 512, n_latent=18)
    assert not d.per_layer and torch.equal(d.vector, t[0]) and abs(float(d.vector.norm()) - 1) < 1e-5


def test_pose_saved_on_cuda_with_18_identical_rows_loads_as_one_vector(tmp_path):
    from clcae.editing.directions import DirectionError, load_direction

    path, t = loaded_file("interfacegan_pose", tmp_path)
    assert t.shape == (1, 18, 512) and P.storage_tags(path) == {"cuda:0"}
    d = load_direction(path, 512, n_latent=18)
    assert not d.per_layer and d.vector.shape == (512,) and torch.equal(d.vector, t[0, 0])
    assert torch.equal(d.delta(1.0, 18), t)   # the edit adds the file's rows, layer by layer
    with pytest.raises(DirectionError, match=r"pose\.pt: direction of dimension 512 .* latent dimension 32"):
        load_direction(path, 32, n_latent=18)


def test_ganspace_pca_loads_with_load_pca(tmp_path):
    from clcae.editing.directions import load_pca

    path, blob = loaded_file("ganspace_pca", tmp_path)
    assert blob["comp"].stride() == (1, 80, 80)   # kept as saved: a transposed block
    basis = load_pca(path, 512)
    assert basis.n_components == 80 and torch.equal(basis.comp, blob["comp"]) and torch.equal(basis.mean, blob["mean"])
    assert torch.allclose(basis.direction(3).vector, blob["comp"][3, 0] * blob["std"][3])


@pytest.fixture
def generator(tmp_path):
    from clcae.nets.stylegan2 import load_generator

    return load_generator(P.write("generator", tmp_path / "stylegan2-ffhq-config-f.pt"))


def test_the_released_encoder_loads_with_load_any_encoder_and_keeps_its_weights(tmp_path, generator):
    """What evaluate does with evaluate.released: the file converted key by key, checked against G."""
    from clcae.inversion import load_any_encoder
    from clcae.nets.encoder import convert_official_encoder

    path, ckpt = loaded_file("clcae_encoder", tmp_path)
    encoder = load_any_encoder(path, generator)
    own, state = encoder.state_dict(), ckpt["state_dict"]
    converted = convert_official_encoder(state, str(path))
    assert set(own) - set(converted) == {"image_avg", "w_avg"}   # not in the file: both from G
    assert all(torch.equal(own[k], v) for k, v in converted.items())
    d = P.SMALL["style_dim"]
    q, k, v = (state["encoder.cross_attention.17.multihead_attn.in_proj_weight"][i * d:(i + 1) * d] for i in range(3))
    block = encoder.w_blocks[17].attn
    assert torch.equal(block.q_proj.weight, q) and torch.equal(block.k_proj.weight, k) and torch.equal(block.v_proj.weight, v)
    assert torch.equal(encoder.w_avg, generator.latent_avg) and encoder.image_avg.abs().sum() > 0   # centred on G
    assert encoder.cfg.n_latent == 18 and encoder.cfg.feature_layer == 5   # opts['idx_k'] None: layer 5


def test_the_released_contrastive_models_load_with_load_any_aligner(tmp_path, generator):
    """What train_encoder does when train_encoder.common.aligner names the pair."""
    from clcae.inversion import load_any_aligner
    from clcae.nets.aligner import convert_official_aligner

    image, image_ckpt = loaded_file("clcae_aligner_image", tmp_path)
    latent, latent_ckpt = loaded_file("clcae_aligner_latent", tmp_path)
    aligner = load_any_aligner([str(image), str(latent)], generator, 256)
    own = aligner.state_dict()
    converted = convert_official_aligner(image_ckpt["state_dict"], latent_ckpt["state_dict"])
    assert set(own) - set(converted) == {"image_avg", "w_avg"}
    assert all(torch.equal(own[k], v) for k, v in converted.items())
    assert aligner.logit_scale.shape == () and aligner.cfg.embed_dim == P.SMALL["embed"]


def test_the_manifest_describes_each_file_as_published():
    """A stated shape is the file's, a dict's keys are named, a file saved on a GPU says so."""
    for asset in A.MANIFEST:
        if asset.folder:
            continue
        s = L[asset.name]["structure"]
        stated = [[int(n) for n in m.split(", ")] for m in re.findall(r"\[(\d+(?:, \d+)*)\]", asset.what)]
        if "tensor" in s:
            assert stated[:1] == [s["tensor"]], f"{asset.name}: {asset.what!r} states {stated}, the file is {s['tensor']}"
            if s["storage_location_tag"] != "cpu":
                assert s["storage_location_tag"] in asset.what, asset.what
        elif "key_order" in s:
            for key in s["key_order"]:
                shape = s["keys"][key].get("tensor")
                named = f"'{key}': {shape}" if shape else f"'{key}'"
                assert named in asset.what, f"{asset.name}: {asset.what!r} does not name {named}"
        else:
            assert not stated, f"{asset.name}: {asset.what!r}"


# ----------------------------------------------------------------------------- the reference fixtures


def test_the_key_lists_equal_the_reference_fixtures():
    """Where ../shared/fixtures is present: the writers' key lists, key by key and in order, are
    those of the manifests made with the reference implementations."""
    import json

    def spec_of(manifest: dict):
        return [(k, tuple(shape), getattr(torch, dtype)) for k, (shape, dtype) in manifest.items()]

    irse = json.loads(fixture_path("irse50_manifest.json").read_text())["keys"]
    assert P.arcface_spec(P.REAL["width"]) == spec_of(irse)
    encoder = json.loads(fixture_path("clcae_ffhq_encoder_manifest.json").read_text())["keys"]
    encoder.pop("latent_avg")   # the manifest's extra: taken from the generator file at inference
    z = P.REAL
    assert P.clcae_encoder_spec(z["width"], z["style_dim"], z["ff"], z["channels"][16]) == spec_of(encoder)
    aligner = json.loads(fixture_path("clcae_ffhq_aligner_manifest.json").read_text())
    assert P.aligner_image_spec(z["width"], z["embed"]) == spec_of(aligner["image_encoder_keys"])
    assert P.aligner_latent_spec(z["style_dim"], z["ff"], z["embed"]) == spec_of(aligner["latent_encoder_keys"])
    tiny = torch.load(fixture_path("stylegan2_rosinality_tiny64.pt"), map_location="cpu", weights_only=True)["g_ema"]
    spec = P.generator_spec({4: 64, 8: 64, 16: 48, 32: 32, 64: 32}, 64, n_mlp=4, size=64)
    assert spec == [(k, tuple(v.shape), v.dtype) for k, v in tiny.items()]
    assert list(P.state(spec)._metadata) == [m for m in tiny._metadata if m not in ("style.0", "upsamples")]
    written = P.state(spec)   # the kernels as rosinality makes them
    assert all(torch.equal(written[k], tiny[k]) for k in tiny if k.endswith("kernel"))
