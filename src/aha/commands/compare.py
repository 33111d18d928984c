"""`aha compare EVAL_A EVAL_B [...]`: side-by-side evaluations, paired differences, new abilities."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "compare evaluations on the same data: per-bucket table, paired differences, new abilities"
DESCRIPTION = """Compare `aha eval` output folders; the first is the baseline.

example:  aha compare runs/eval-base runs/eval-grpo --out runs/compare-grpo

Prints (and with --out writes compare.md and compare.json): per-bucket accuracy side by side, the
difference to the baseline with 95% paired-bootstrap intervals, new abilities (never solved by the
baseline in n samples, solved at least once by the other) and regressions, per bucket."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("evals", nargs="+", metavar="EVAL_DIR", help="evaluation folders; the first is the baseline")
    p.add_argument("--out", default=None, help="folder for compare.md and compare.json")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def run(args: argparse.Namespace) -> int:
    from aha.eval.compare import compare, compare_markdown, load_eval

    report = compare([load_eval(p) for p in args.evals], seed=args.seed)
    text = compare_markdown(report)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(text)
        (out / "compare.json").write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    return 0
