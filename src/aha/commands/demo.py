"""`aha demo`: the offline Knights-and-Knaves pipeline (solver traces -> SFT -> GRPO -> evaluation)."""

from __future__ import annotations

import argparse

HELP = "offline demo: a from-scratch model learns K&K by SFT on reflective traces, then GRPO (about 20 min)"
DESCRIPTION = """Seed 000's pipeline in miniature on a CPU, with no downloads:
generate puzzles -> tokenizer + tiny Qwen2 -> SFT on reflective solver traces -> evaluate -> GRPO
(Logic-RL reward) -> evaluate -> control: SFT continued for GRPO's wall time -> evaluate ->
paired comparison on the same held-out puzzles -> plots -> results.json and REPORT.md.

  aha demo                   # full run, about 20 minutes on 2 cores
  aha demo --quick           # every stage on tiny budgets (about 2-3 minutes): plumbing, not quality
  aha demo --out DIR         # default runs/demo-<date>-<time>
  aha demo --set grpo_lr=1e-4 --set grpo_steps=150   # change any DemoSettings field

Settings (--set KEY=VALUE; defaults are the README's run): people, rl_people, train_count, fill,
test_count, depth, trace_restate, name_pool, quiz_style, seed, model_size, vocab_size, sft_steps,
sft_max_seconds, sft_lr, sft_warmup_steps, sft_batch_tokens, grpo_steps, grpo_max_seconds, grpo_lr,
grpo_prompts, grpo_samples, grpo_temperature, grpo_iterations, max_new_tokens, eval_max_new_tokens,
continued_sft_lr. Their meaning: src/aha/demo.py (DemoSettings)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output folder (default runs/demo-<date>-<time>)")
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks that every stage runs")
    p.add_argument("--seed", type=int, default=0, help="seed for data, model and sampling (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one demo setting (repeatable); see the list above")


def run(args: argparse.Namespace) -> int:
    from aha.demo import DemoSettings, run_demo
    from aha.runs import default_run_dir

    out = args.out or default_run_dir("demo")
    settings = DemoSettings(seed=args.seed).with_overrides(args.set)
    summary = run_demo(out, quick=args.quick, settings=settings)
    st = summary["stages"]
    print("\nstage            accuracy   95% CI")
    for name in ("untrained", "sft", "sft_continued", "grpo"):
        print(f"{name:<16} {st[name]['accuracy']:.3f}      [{st[name]['ci_low']:.3f}, {st[name]['ci_high']:.3f}]")
    print(f"\nreport: {out}/REPORT.md")
    return 0
