"""params.yaml validation: errors name the key path."""
from dataclasses import dataclass, field
from typing import Literal

import pytest

from clcae.config import Params, build, load_params, param
from clcae.errors import ConfigError


@dataclass
class Inner:
    lr: float = param(1e-4, gt=0)
    steps: int = param(10, ge=1)
    mode: Literal["a", "b"] = "a"
    layers: list[int] = field(default_factory=lambda: [1, 2])
    out: str | None = None


@dataclass
class Outer:
    train_encoder: Inner = field(default_factory=Inner)


def test_defaults_and_coercion():
    cfg = build(Outer, {"train_encoder": {"lr": 1, "layers": [3], "out": "x"}})
    assert cfg.train_encoder.lr == 1.0 and isinstance(cfg.train_encoder.lr, float)
    assert cfg.train_encoder.layers == [3] and cfg.train_encoder.steps == 10


@pytest.mark.parametrize("block,message", [
    ({"lr": "fast"}, "train_encoder.lr: expected a float, got 'fast'"),
    ({"steps": 2.5}, "train_encoder.steps: expected an int, got 2.5"),
    ({"steps": True}, "train_encoder.steps: expected an int, got True"),
    ({"steps": 0}, "train_encoder.steps: must be >= 1, got 0"),
    ({"lr": 0}, "train_encoder.lr: must be > 0, got 0.0"),
    ({"mode": "c"}, "train_encoder.mode: expected one of ['a', 'b'], got 'c'"),
    ({"layers": [1, "x"]}, "train_encoder.layers[1]: expected an int, got 'x'"),
    ({"lrr": 1}, "train_encoder.lrr: unknown key"),
])
def test_errors_name_the_key(block, message):
    with pytest.raises(ConfigError) as err:
        build(Outer, {"train_encoder": block})
    assert message in str(err.value)


def test_unknown_block_and_file_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("shared:\n  seed: 1\nnot_a_stage: {}\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not_a_stage: unknown key"):
        load_params(path)
    path.write_text("shared: {seed: -1}\n")
    with pytest.raises(ConfigError, match=r"shared.seed: must be >= 0"):
        load_params(path)
    path.write_text("shared: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


@pytest.mark.parametrize("name", ["params.yaml", "configs/ffhq.yaml"])
def test_shipped_configs_are_valid(name):
    from conftest import ROOT
    assert isinstance(load_params(ROOT / name), Params)


@pytest.mark.parametrize("name", ["params.yaml", "configs/ffhq.yaml"])
def test_shipped_configs_have_every_block_the_pipelines_interpolate(name):
    """dvc.yaml and seeds/dvc.yaml read blocks of params.yaml with ${...}: a config copied over
    params.yaml (README: paper scale) must have them all, or DVC cannot even parse the project."""
    import re

    import yaml
    from conftest import ROOT

    from clcae import seeds

    pipelines = (ROOT / "dvc.yaml").read_text() + (ROOT / "seeds/dvc.yaml").read_text()
    interpolated = set(re.findall(r"\$\{(\w+)\.", pipelines)) - {"item"}
    interpolated |= set(re.search(r"params.yaml:([\w,]+)", pipelines).group(1).split(","))   # seeds/dvc.yaml's vars
    assert {"shared", "train_encoder", "seeds"} <= interpolated
    assert interpolated <= set(yaml.safe_load((ROOT / name).read_text()))
    seeds.check(load_params(ROOT / name))   # its seeds' variants are among its variants
