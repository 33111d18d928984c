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
baseline in n samples, solved at least once by the other) and regressions, per bucket; and the
new-ability analysis: on the problems the baseline solves in 0 of its n samples, each other
model's unbiased pass@k for k = 1 .. n, overall and per bucket (compare.json "new_ability").
Then REA-RL's token-savings tables (compare.json "token_savings"): accuracy, tokens per response,
token ratio to the baseline (= 100) and tokens per correct answer, overall, per bucket (with
reflection frequency: reflections per response and per 1k tokens by REA-RL's keyword regex) and at
the token budgets the evaluations were re-judged at (aha eval --budgets 8192 16384).
compare.json also holds every evaluation's full pass@k curve and per-problem pass@1 histogram.
With --out, figures too: pass_at_k_curve.png (all evaluations overlaid), pass_at_k_<bucket>.png,
pass_at_k_<field>_<value>.png for a further bucket_by field (bucket_by=level,subject: one per
subject), pass1_histogram.png and new_ability.png."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("evals", nargs="+", metavar="EVAL_DIR", help="evaluation folders; the first is the baseline")
    p.add_argument("--out", default=None, help="folder for compare.md and compare.json")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-plots", action="store_true",
                   help="with --out, skip the PNG figures (pass@k curves overall and per bucket, pass@1 "
                        "histograms, the new-ability curve)")


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
        if not args.no_plots:
            from aha.report.eval_plots import plot_compare

            for path in plot_compare(report, out):
                print(path)
        print(f"wrote {out}")
    return 0
