"""Reading the pipeline's metrics files and writing markdown tables (the reports and the README).

The report stages read only what earlier stages wrote; a missing file names the stage to run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from clcae.errors import InputError


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: not found (run `dvc repro` for the stage that writes it)")
    return json.loads(path.read_text())


def read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: not found (run `dvc repro evaluate`)")
    return pd.read_csv(path)


def fmt(x, digits: int = 4) -> str:
    """A figure for a table: 4 significant digits, scientific below 1e-3, ``-`` for none/NaN."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
