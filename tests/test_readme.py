"""The README's results block is what the committed reports give (clcae/readme.py)."""
import pandas as pd
import pytest
from conftest import ROOT

from clcae import readme


def test_the_readme_results_block_is_the_reports():
    if not (ROOT / "reports" / "reconstruction_intervals.csv").exists():
        pytest.skip("no committed reports in this checkout")
    assert readme.main(["--root", str(ROOT), "--check"]) == 0, "run `python -m clcae.readme` after a rerun"


def test_claims_table_counts_and_marks_verdicts():
    claims = pd.DataFrame({
        "claim": ["c", "c", "d"], "a": ["x F", "x F", "x W"], "b": ["y W+", "y W+", "y W"],
        "metric": ["mse", "ssim", "mse"], "diff": [-0.5, 0.01, 0.2], "low": [-0.6, -0.02, 0.1],
        "high": [-0.4, 0.04, 0.3], "verdict": ["holds", "inconclusive", "reversed"], "n_seeds": [3, 3, 3]})
    table = readme.claims_table(claims)
    rows = table.splitlines()
    assert rows[2] == "| c | x F vs y W+ | mse: -0.5 [-0.6, -0.4] **holds**<br>ssim: 0.01 [-0.02, 0.04] inconclusive |"
    assert rows[3] == "| d | x W vs y W | mse: 0.2 [0.1, 0.3] reversed |"
    assert rows[-1] == "3 comparisons over 3 training seeds: 1 holds, 1 reversed, 1 inconclusive."


def test_replace_block_keeps_the_rest_and_needs_markers():
    text = f"intro\n{readme.START}\nold\n{readme.END}\noutro\n"
    assert readme.replace_block(text, "new") == f"intro\n{readme.START}\nnew\n{readme.END}\noutro\n"
    with pytest.raises(ValueError, match="no <!-- results:start -->"):
        readme.replace_block("no markers", "new")
