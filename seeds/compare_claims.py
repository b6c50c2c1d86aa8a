"""The across-seed claims of this checkout against a git revision's: one row per comparison.

    python seeds/compare_claims.py REV [reports/seeds/claims.csv]

prints a Markdown table (A vs B, metric, difference [95% interval] and verdict before and after,
"(moved)" where the verdict changed) and the verdict counts: what a closing note or a lab log
quotes when a code change reruns the seed pipeline.
"""
from __future__ import annotations

import argparse
import io
import subprocess

import pandas as pd

KEYS = ["claim", "a", "b", "metric"]


def compare(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """The two claims tables side by side (suffixes ``_before`` / ``_after``), ``moved`` where the verdict changed."""
    merged = before.merge(after, on=KEYS, suffixes=("_before", "_after"), how="outer")
    merged["moved"] = merged.verdict_before != merged.verdict_after
    return merged


def cell(row, side: str) -> str:
    if pd.isna(row[f"verdict_{side}"]):
        return "-"
    return f"{row['diff_' + side]:.3g} [{row['low_' + side]:.3g}, {row['high_' + side]:.3g}] {row['verdict_' + side]}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev", help="the git revision whose claims are 'before'")
    ap.add_argument("path", nargs="?", default="reports/seeds/claims.csv")
    args = ap.parse_args(argv)
    before = pd.read_csv(io.StringIO(subprocess.check_output(["git", "show", f"{args.rev}:{args.path}"], text=True)))
    after = pd.read_csv(args.path)
    merged = compare(before, after)
    print(f"| A vs B | metric | before ({args.rev}) | after |")
    print("|---|---|---|---|")
    for _, row in merged.iterrows():
        print(f"| {row.a} vs {row.b} | {row.metric} | {cell(row, 'before')} | {cell(row, 'after')}"
              f"{' (moved)' if row.moved else ''} |")
    print(f"\nbefore: {before.verdict.value_counts().to_dict()}, after: {after.verdict.value_counts().to_dict()}, "
          f"moved: {int(merged.moved.sum())} of {len(merged)}")


if __name__ == "__main__":
    main()
