"""`aha distill RECIPE [key=value ...]`: teacher sampling + rejection filtering into SFT data."""

from __future__ import annotations

import argparse

from aha.commands.recipe_args import add_recipe_arguments, resolve

HELP = "sample a teacher, keep verified answers (rejection sampling), write an SFT dataset and a report"
DESCRIPTION = """Distillation data by rejection sampling.

examples:
  aha distill teacher.model.path=models/teacher task=knights-knaves task_options="{data: [kk.jsonl]}" n=8
  aha distill teacher.kind=solver task=knights-knaves task_options="{people: '2-3', count: 5000}"
  aha distill --help-config

Writes RUN_DIR/sft.jsonl ({id, prompt, response} per kept sample; `aha sft data.files=[...]` reads
it), report.json and report.md (acceptance rate per bucket, lengths, reflection-phrase frequency)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_recipe_arguments(p)


def run(args: argparse.Namespace) -> int:
    from aha.train.distill import DistillConfig

    cfg = resolve(args, DistillConfig, resume_key=None)
    if cfg is None:
        return 0
    from aha.runs import remove_unstarted_runs
    from aha.train.distill import distill

    with remove_unstarted_runs():  # a failed start leaves no empty run folder
        path = distill(cfg)
    print((path / "report.md").read_text())
    print(f"data: {path / 'sft.jsonl'}")
    return 0
