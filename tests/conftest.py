from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def fixture_path(name: str) -> Path:
    """Path to a file of ../shared/fixtures, or skip the test with the reason."""
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"compatibility fixture {path} is absent (see ../shared/fixtures/README.md)")
    return path


def fixture_seeded_state(manifest_keys: dict) -> dict:
    """Deterministic stand-in weights of a fixture manifest (../shared/fixtures/seeded_state.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("seeded_state", fixture_path("seeded_state.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.seeded_state(manifest_keys)
