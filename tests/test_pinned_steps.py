"""The RL step's numbers are pinned: 12 steps of three fixed tiny runs, recorded once and compared
bitwise, so a restructure of the loop, the log-prob code or the engine cannot change a number unseen.

Each config walks different branches: (a) KL loss against a frozen reference copy, two update passes
in two mini-batches (stored old log-probs); (b) DAPO-style dynamic sampling on a reward that is mostly
flat, token-mean loss with clip-higher, truncated completions masked, KL in the reward, REINFORCE++
whitening and an entropy bonus; (c) LoRA (the reference is the adapter switched off), Dr. GRPO's
advantages and loss. Re-record with `AHA_RECORD_PINNED=1 pytest tests/test_pinned_steps.py`, only
when a change is meant to move the numbers, and say so in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from aha.cli import main
from aha.runs import read_jsonl

PINNED = Path(__file__).parent / "data" / "pinned_grpo_steps.json"
STEPS = 12

COMMON = ["task.name=tests.toy_task:ToyTask", "task.options={count: 8}", f"steps={STEPS}",
          "batch.prompts_per_step=2", "batch.samples_per_prompt=4", "rollout.max_new_tokens=12",
          "rollout.stop=[]", "optim.lr=3e-3", "run.progress=false", "run.seed=7"]

CONFIGS = {
    # reference copy, KL loss term, two passes x two mini-batches (old log-probs in their own forward)
    "kl_two_passes": ["rewards=[{name: 'tests.test_grpo:vowel_share', weight: 1.0}]", "algo.kl_coef=0.04",
                      "algo.num_iterations=2", "batch.mini_batches=2", "batch.micro_batch_size=2"],
    # DAPO-like: correctness is 0 for a random model, so dynamic sampling drops groups and resamples
    "dapo_kl_in_reward": ["rewards=[{name: correctness, weight: 1.0}, {name: 'tests.test_grpo:vowel_share', "
                          "weight: 0.5}]", "algo.dynamic_sampling=true", "algo.max_resample_rounds=2",
                          "algo.loss_agg=token_mean", "algo.clip_high=0.28", "algo.mask_truncated=true",
                          "algo.kl_coef=0.05", "algo.kl_in_reward=true", "algo.advantage=reinforce_pp",
                          "algo.entropy_coef=0.01", "algo.num_iterations=2", "batch.micro_batch_size=4"],
    # LoRA: the reference is the base with the adapter disabled; Dr. GRPO
    "lora_dr_grpo": ["rewards=[{name: 'tests.test_grpo:vowel_share', weight: 1.0}]", "lora.enabled=true",
                     "lora.r=4", "algo.kl_coef=0.1", "algo.advantage=dr_grpo",
                     "algo.loss_agg=seq_mean_token_sum_norm", "batch.micro_batch_size=8", "optim.lr=1e-2"],
}

TIMING = ("time", "seconds", "tokens_per_s")  # wall-clock figures differ run to run


def run_metrics(model_dir: Path, out: Path, extra: list[str]) -> list[dict]:
    torch.set_num_threads(1)
    assert main(["train", f"model.path={model_dir}", f"run.out_dir={out}", *COMMON, *extra]) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_first_twelve_steps_match_the_recorded_numbers_bitwise(name, tmp_path, tiny_model_dir):
    got = run_metrics(tiny_model_dir, tmp_path / name, CONFIGS[name])
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    if os.environ.get("AHA_RECORD_PINNED") == "1":
        recorded = json.loads(PINNED.read_text()) if PINNED.is_file() else {}
        recorded[name] = got
        PINNED.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        pytest.skip("recorded")
    want = json.loads(PINNED.read_text())[name]
    # json round-trips floats exactly (shortest repr), so == here is bitwise equality
    for step, (g, w) in enumerate(zip(got, want), start=1):
        assert sorted(g) == sorted(w), f"step {step}: metric names differ"
        diffs = {k: (g[k], w[k]) for k in w if g[k] != w[k]}
        assert not diffs, f"{name} step {step}: {diffs}"
