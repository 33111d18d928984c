"""`aha demo`: the offline Knights-and-Knaves pipeline (solver traces -> SFT -> GRPO -> evaluation)."""

from __future__ import annotations

import argparse
import textwrap

from aha.config import format_help
from aha.demo import DemoSettings, red, terminal_summary

HELP = ("offline demo: a from-scratch model learns K&K by SFT on a few reflective traces, then GRPO with the "
        "verifier only (about 20 min)")
DESCRIPTION = """Seed 000's premise in miniature on a CPU, with no downloads: traces are scarce, problems with
a verifier are not. Generate puzzles -> tokenizer + tiny Qwen2 -> a few timed SFT steps (the run's
estimated duration) -> SFT on a fixed set of teacher_budget reflective traces (the solver's, standing
in for a teacher's samples) -> evaluate -> GRPO on puzzles without traces (Logic-RL reward, the
verifier only) -> evaluate -> control: SFT continued on the same traces for GRPO's time, as a step
count -> evaluate -> paired comparison on the same held-out puzzles -> curves -> results.json and
REPORT.md. A stage cut short (a time guard, a crash) or SFT at the accuracy floor makes the run
invalid: it stops, says why in red, writes "valid": false and exits with 1.

  aha demo                   # full run, about 20 minutes on 2 cores
  aha demo --quick           # every stage on tiny budgets (about 2-3 minutes): plumbing, not quality
  aha demo --out DIR         # default runs/demo-<date>-<time>
  aha demo --set grpo_lr=1e-4 --set grpo_steps=150   # change any setting below
  aha demo --set teacher_budget=1000                  # SFT (and the control) on 1,000 traces
  aha demo --grpo-from runs/demo-A --set grpo_kl_coef=0 --out runs/demo-A-nokl
                             # GRPO stage only, from demo A's SFT model, compared with it

Settings (--set KEY=VALUE, values read like recipe overrides; what was measured on the way to the
defaults: docs/demo/SETTINGS.md):
{settings}""".format(settings=textwrap.indent(format_help(DemoSettings), "  "))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output folder (default runs/demo-<date>-<time>)")
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks that every stage runs")
    p.add_argument("--seed", type=int, default=0, help="seed for data, model and sampling (default 0)")
    p.add_argument("--grpo-from", default=None, metavar="DEMO_DIR",
                   help="run only the GRPO stage, from this finished demo's SFT model, and compare it with that "
                        "model on the same held-out puzzles (puzzle settings must match that demo's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one demo setting (repeatable); see the list above")
    p.add_argument("--help-config", action="store_true", help="list every setting with its type, default and "
                   "meaning, then exit")


def settings_from_args(seed: int, pairs: list[str], quick: bool = False) -> DemoSettings:
    """DemoSettings from `--seed`, `--quick` and the `--set KEY=VALUE` pairs (a --set wins over both)."""
    from aha.config import load_config
    from aha.demo import QUICK

    quick_pairs = [f"{k}={v}" for k, v in QUICK.items()] if quick else []
    return load_config(DemoSettings, None, [f"seed={seed}", *quick_pairs, *pairs])


def run(args: argparse.Namespace) -> int:
    if args.help_config:
        print(format_help(DemoSettings))
        return 0
    from aha.demo import run_demo
    from aha.runs import default_run_dir

    settings = settings_from_args(args.seed, args.set, quick=args.quick)
    out = args.out or default_run_dir("demo")
    summary = run_demo(out, settings=settings, grpo_from=args.grpo_from)
    print()
    print(terminal_summary(summary))
    print(f"\nreport: {out}/{'compare.md' if args.grpo_from and summary['valid'] else 'REPORT.md'}")
    if not summary["valid"]:
        print(red(f"INVALID RUN, not a result: {summary['reason']}"))
        return 1
    return 0
