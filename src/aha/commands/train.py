"""`aha train RECIPE [key=value ...]`: RL post-training (GRPO, Dr. GRPO, DAPO, RLOO, REINFORCE++)."""

from __future__ import annotations

import argparse

from aha.commands.recipe_args import add_recipe_arguments, resolve

HELP = "RL post-training: GRPO, Dr. GRPO, DAPO, RLOO, REINFORCE++ (full or LoRA)"
DESCRIPTION = """RL post-training from a YAML recipe plus dotted overrides.

examples:
  aha train recipes/kk_grpo_tiny.yaml
  aha train recipes/kk_grpo_tiny.yaml algo.advantage=rloo rollout.temperature=0.8 steps=50
  aha train resume=runs/train-20261122-101500          # continue from the newest checkpoint
  aha train --help-config                              # every key, its type, default and meaning
  aha train recipes/tiny/rea_rl.yaml model.path=M      # REA-RL: online revision (rollout.revision.*)

The run directory (run.out_dir, default runs/train-<date>-<time>) receives config.yaml,
metrics.jsonl, run.log, rollouts/step_XXXXX.jsonl, eval/val_step_XXXXX.jsonl and checkpoints/.
Ctrl-C writes a checkpoint of the last finished step before stopping."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_recipe_arguments(p)


def run(args: argparse.Namespace) -> int:
    from aha.train.config import TrainConfig

    cfg = resolve(args, TrainConfig)
    if cfg is None:
        return 0
    from aha.runs import remove_unstarted_runs
    from aha.train.grpo import train

    with remove_unstarted_runs():  # a failed start leaves no empty run folder
        path = train(cfg)
    print(f"run directory: {path}")
    return 0
