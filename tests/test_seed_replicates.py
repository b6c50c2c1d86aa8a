"""The seed-replicated claims' params: each seed's run has its own folders; config errors name the key."""
import pytest

from clcae.config import ConfigError, build, Params
from clcae import seed_replicates


def params(**seeds):
    return build(Params, {"seeds": {"seeds": [1, 2], "variants": ["clcae", "psp"], **seeds},
                          "train_encoder": {"variants": {"clcae": {}, "psp": {"use_f": False}, "no_align": {"align": 0.0}}}})


def test_seed_params_move_only_the_seed_and_the_folders():
    p = params()
    q = seed_replicates.seed_params(p, 2)
    assert q.shared.seed == 2 and p.shared.seed == 0   # the default run's params are untouched
    assert q.train_encoder.out_dir == "data/seeds/encoder/seed2"
    assert q.train_encoder.report_dir == "data/seeds/train_encoder/seed2"
    assert q.evaluate.report_dir == "data/seeds/evaluate/seed2"
    assert q.evaluate.metrics_file == "data/seeds/evaluate/seed2/metrics.json"
    assert q.evaluate.variants == ["clcae", "psp"]
    assert q.train_encoder.common == p.train_encoder.common and q.train_encoder.variants == p.train_encoder.variants
    assert q.evaluate.edit_images == p.evaluate.edit_images and q.world == p.world and q.train_aligner == p.train_aligner
    runs = seed_replicates.seed_runs(p)
    assert list(runs) == [0, 1, 2] and str(runs[0]["report"]) == "reports/evaluate"


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"seeds.seeds: 0 is shared.seed"):
        seed_replicates.seed_params(params(seeds=[0, 1]), 1)
    with pytest.raises(ConfigError, match=r"seeds.variants: \['pix2style'\] not among"):
        seed_replicates.seed_params(params(variants=["clcae", "pix2style"]), 1)
    with pytest.raises(ConfigError, match=r"seeds.seeds: no seed 7"):
        seed_replicates.seed_params(params(), 7)
    with pytest.raises(ConfigError, match=r"seeds.variants: no variant 'no_align'"):
        seed_replicates.check(params(), 1, "no_align")
    with pytest.raises(ConfigError, match=r"seeds.seeds: distinct seeds"):
        params(seeds=[1, 1])
