"""`aha sft RECIPE [key=value ...]`: supervised fine-tuning with the loss on responses only."""

from __future__ import annotations

import argparse

from aha.commands.recipe_args import add_recipe_arguments, resolve

HELP = "supervised fine-tuning on chat JSONL or a task's solver traces (loss on responses only)"
DESCRIPTION = """Supervised fine-tuning from a YAML recipe plus dotted overrides.

Data: data.files = JSONL of {"messages": [...]} (last turn is the assistant's) or
{"prompt": ..., "response": ...}; or data.task = a task whose examples carry teacher traces
(e.g. knights-knaves). Batches are packed by token budget (batch_tokens).
Optimizer and schedule: the optim section shared with `aha train` (optim.lr, optim.warmup_steps,
optim.schedule, ...; SFT's defaults: lr 1e-3, 50 warmup steps, cosine to 0.1 x lr over `steps`).

examples:
  aha sft recipes/kk_sft_nano.yaml
  aha sft model.path=models/tiny data.files=[pairs.jsonl] steps=200 optim.lr=1e-3
  aha sft --help-config

Writes RUN_DIR/model (a Hugging Face folder, or a LoRA adapter folder), metrics.jsonl with
train/loss, val/loss, tokens_per_s and lr, and resumable checkpoints (resume=RUN_DIR)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_recipe_arguments(p)


def run(args: argparse.Namespace) -> int:
    from aha.train.sft import SftConfig

    cfg = resolve(args, SftConfig)
    if cfg is None:
        return 0
    from aha.runs import remove_unstarted_runs
    from aha.train.sft import sft

    with remove_unstarted_runs():  # a failed start leaves no empty run folder
        path = sft(cfg)
    print(f"run directory: {path}\nmodel: {path / 'model'}")
    return 0
