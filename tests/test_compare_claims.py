"""seeds/compare_claims.py: verdicts side by side, moved ones marked."""
import importlib.util

import pandas as pd
from conftest import ROOT


def load():
    spec = importlib.util.spec_from_file_location("compare_claims", ROOT / "seeds" / "compare_claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_marks_the_moved_verdicts_and_keeps_rows_of_one_side():
    cc = load()
    row = {"claim": "c", "a": "clcae F", "b": "psp W+", "diff": -1.0, "low": -2.0, "high": -0.5}
    before = pd.DataFrame([{**row, "metric": "mse", "verdict": "holds"},
                           {**row, "metric": "ssim", "verdict": "holds"},
                           {**row, "metric": "gone", "verdict": "reversed"}])
    after = pd.DataFrame([{**row, "metric": "mse", "verdict": "holds"},
                          {**row, "metric": "ssim", "high": 0.5, "verdict": "inconclusive"}])
    merged = cc.compare(before, after).set_index("metric")
    assert merged.moved.to_dict() == {"mse": False, "ssim": True, "gone": True}
    assert cc.cell(merged.loc["ssim"], "after") == "-1 [-2, 0.5] inconclusive"
    assert cc.cell(merged.loc["gone"], "after") == "-"
