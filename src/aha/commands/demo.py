"""`aha demo`: the offline Knights-and-Knaves pipeline (solver traces -> SFT -> GRPO -> evaluation)."""

from __future__ import annotations

import argparse
import textwrap

from aha.config import format_help
from aha.demo import DemoSettings, red

HELP = "offline demo: a from-scratch model learns K&K by SFT on reflective traces, then GRPO (about 20 min)"
DESCRIPTION = """Seed 000's pipeline in miniature on a CPU, with no downloads:
generate puzzles -> tokenizer + tiny Qwen2 -> SFT on reflective solver traces -> evaluate -> GRPO
(Logic-RL reward) -> evaluate -> control: SFT continued for GRPO's wall time -> evaluate ->
paired comparison on the same held-out puzzles -> plots -> results.json and REPORT.md.

  aha demo                   # full run, about 20 minutes on 2 cores
  aha demo --quick           # every stage on tiny budgets (about 2-3 minutes): plumbing, not quality
  aha demo --out DIR         # default runs/demo-<date>-<time>
  aha demo --set grpo_lr=1e-4 --set grpo_steps=150   # change any setting below
  aha demo --grpo-from runs/demo-A --set grpo_kl_coef=0 --out runs/demo-A-nokl
                             # GRPO stage only, from demo A's SFT model, compared with it

Settings (--set KEY=VALUE, values read like recipe overrides; the defaults are the README's run;
what was measured on the way to them: docs/demo/SETTINGS.md):
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
    st = summary["stages"]
    print("\nstage            accuracy   95% CI")
    for name in (n for n in ("untrained", "sft", "sft_continued", "grpo") if n in st):
        print(f"{name:<16} {st[name]['accuracy']:.3f}      [{st[name]['ci_low']:.3f}, {st[name]['ci_high']:.3f}]")
    print(f"\nreport: {out}/{'compare.md' if args.grpo_from and summary['valid'] else 'REPORT.md'}")
    if not summary["valid"]:
        print(red(f"INVALID RUN, not a result: {summary['reason']}"))
        return 1
    return 0
