"""synthesize: deterministic by seed, resumable by shard, never takes a half-written shard."""
import hashlib

import pytest
import torch

import clcae.pipeline.synthesize as syn
from clcae.nets.stylegan2 import Generator
from clcae.pipeline.synthesize import PairSpec, synthesize
from clcae.shards import load_pairs, pairs_manifest


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    G = Generator(32, 16, 2, channels={4: 16, 8: 16, 16: 8, 32: 8}).eval()
    G.latent_avg.copy_(G.mapping(torch.randn(1000, 16)).mean(0))
    return G


def spec(**kw):
    base = dict(generator="g.pt", n_pairs=50, shard_size=16, truncation=0.8, noise_mode="random",
                resolution=32, seed=3)
    return PairSpec(**{**base, **kw})


def test_pairs_are_generator_outputs(G, tmp_path):
    s = spec(noise_mode="const", truncation=1.0)
    synthesize(G, s, tmp_path, batch_size=7, progress=False)
    images, w, stats = load_pairs(tmp_path)
    assert images.shape == (50, 3, 32, 32) and images.dtype == torch.uint8 and w.shape == (50, 16)
    z = syn.shard_latents(3, 0, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(w[:16], G.mapping(z), atol=1e-5, rtol=0)
        expected = G.synthesis(w[:16, None].expand(-1, G.n_latent, -1))
    assert ((images[:16].float() / 127.5 - 1) - expected.clamp(-1, 1)).abs().max() <= 1 / 127.5 + 1e-6
    torch.testing.assert_close(stats["w_avg"], G.latent_avg)
    assert stats["image_avg"].shape == (1, 3, 32, 32)


def test_deterministic_by_seed(G, tmp_path):
    synthesize(G, spec(), tmp_path / "a", batch_size=10, progress=False)
    synthesize(G, spec(), tmp_path / "b", batch_size=10, progress=False)
    synthesize(G, spec(seed=4), tmp_path / "c", batch_size=10, progress=False)
    a, b, c = (load_pairs(tmp_path / k) for k in "abc")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_resume_after_interruption(G, tmp_path, monkeypatch):
    synthesize(G, spec(), tmp_path / "full", batch_size=10, progress=False)
    calls = {"n": 0}
    real_save = syn.save_torch

    def dying_save(obj, path):
        if str(path).endswith(".pt") and "shard_" in str(path):
            calls["n"] += 1
            if calls["n"] == 3:  # killed while writing the third shard: leave a half file behind
                (path.parent / f".{path.name}.tmpdead").write_bytes(b"half a shard")
                raise KeyboardInterrupt
        return real_save(obj, path)

    monkeypatch.setattr(syn, "save_torch", dying_save)
    with pytest.raises(KeyboardInterrupt):
        synthesize(G, spec(), tmp_path / "resumed", batch_size=10, progress=False)
    assert len(list((tmp_path / "resumed").glob("shard_*.pt"))) == 2
    monkeypatch.setattr(syn, "save_torch", real_save)
    counts = synthesize(G, spec(), tmp_path / "resumed", batch_size=10, progress=False)
    assert counts["rendered_now"] == 50 - 32  # only the missing shards
    full, resumed = load_pairs(tmp_path / "full"), load_pairs(tmp_path / "resumed")
    assert torch.equal(full[0], resumed[0]) and torch.equal(full[1], resumed[1])
    index = torch.cat([torch.load(p)["index"] for p in sorted((tmp_path / "resumed").glob("shard_*.pt"))])
    assert torch.equal(index, torch.arange(50))  # no duplicated or missing pairs


def test_changed_spec_discards_old_shards(G, tmp_path):
    synthesize(G, spec(), tmp_path, batch_size=10, progress=False)
    counts = synthesize(G, spec(truncation=0.5), tmp_path, batch_size=10, progress=False)
    assert counts["rendered_now"] == 50


def test_new_generator_at_the_same_path_discards_old_shards(G, tmp_path):
    """`dvc repro` after replacing the checkpoint file must not keep the old generator's pairs."""
    ckpt = tmp_path / "g.pt"
    ckpt.write_bytes(b"generator one")
    first = spec(generator_sha256=syn.file_sha256(ckpt))
    assert first.generator_sha256 == hashlib.sha256(b"generator one").hexdigest()
    synthesize(G, first, tmp_path / "pairs", batch_size=10, progress=False)
    assert pairs_manifest(tmp_path / "pairs")["generator_sha256"] == first.generator_sha256
    ckpt.write_bytes(b"generator two")
    counts = synthesize(G, spec(generator_sha256=syn.file_sha256(ckpt)), tmp_path / "pairs", batch_size=10,
                        progress=False)
    assert counts["rendered_now"] == 50


def test_resized_pairs(G, tmp_path):
    synthesize(G, spec(resolution=16, n_pairs=8), tmp_path, progress=False)
    images, _, stats = load_pairs(tmp_path)
    assert images.shape[-1] == 16 and stats["image_avg"].shape[-1] == 16


@pytest.mark.slow
def test_two_nodes_render_disjoint_shards_and_the_same_pairs(G, tmp_path):
    """The stage under two torchrun launches that rendezvous as two nodes (--nnodes 2, one CPU rank
    each, gloo): rank r writes shards r, r + 2, ...; the pairs equal one process's, byte for byte."""
    import json
    import os
    import socket
    import subprocess
    import sys

    import yaml
    from conftest import ROOT

    from clcae.nets.stylegan2 import save_generator

    save_generator(G, tmp_path / "g.pt")
    blocks = {"shared": {"seed": 3, "device": "cpu", "generator": str(tmp_path / "g.pt")},
              "synthesize": {"n_pairs": 50, "shard_size": 16, "batch_size": 10, "out_dir": str(tmp_path / "two"),
                             "report_dir": str(tmp_path / "report")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(blocks))
    with socket.socket() as sock:   # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(r),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
                               str(ROOT / "stages" / "synthesize.py"), "--params", str(tmp_path / "params.yaml")],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["n_shards"] == 4
    assert metrics["rendered_now"] == 50   # summed over the ranks: each shard rendered once
    one = spec(generator=str(tmp_path / "g.pt"), truncation=1.0, noise_mode="const")
    synthesize(G, one, tmp_path / "one", batch_size=10, progress=False)
    a, b = load_pairs(tmp_path / "one"), load_pairs(tmp_path / "two")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
