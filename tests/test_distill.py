"""Distill keeps only verified answers and reports the acceptance rate a seeded fake teacher implies."""

from __future__ import annotations

import json
import random

from aha.config import load_config
from aha.rollout.base import Completion
from aha.train.distill import DistillConfig, distill

from .toy_task import ToyTask


class HalfRightTeacher:
    """Answers each sample correctly with probability 1/2 (seeded), always well formed."""

    def __init__(self, task: ToyTask, split: str):
        self.examples = list(task.examples(split))
        self.produced_correct = 0

    def generate(self, prompts, params):
        rng = random.Random(params.seed)
        out = []
        for i, _ in enumerate(prompts):
            for j in range(params.n):
                right = rng.random() < 0.5
                word = self.examples[self.offset + i].answer if right else "wrong"
                self.produced_correct += right
                out.append(Completion(i, j, [1] * (j + 3), f"<think>try {j}</think><answer>{word}</answer>", "stop"))
        return out


def test_keeps_only_verified_and_reports_acceptance(tmp_path):
    cfg = load_config(DistillConfig, None, ["task=tests.toy_task:ToyTask", "task_options={count: 8}", "n=6",
                                            "batch_prompts=8", "max_per_prompt=2", f"run.out_dir={tmp_path / 'd'}"])
    teacher = HalfRightTeacher(ToyTask(8), "train")
    teacher.offset = 0
    path = distill(cfg, generator=teacher, tokenizer=_FakeTokenizer())
    rows = [json.loads(line) for line in (path / "sft.jsonl").read_text().splitlines()]
    examples = {ex.id: ex for ex in ToyTask(8).examples("train")}
    assert rows, "some samples must be kept"
    for row in rows:  # every kept response is right for its own prompt
        assert f"<answer>{examples[row['id']].answer}</answer>" in row["response"]
        assert row["prompt"] == examples[row["id"]].prompt
    per_prompt = {}
    for row in rows:
        per_prompt[row["id"]] = per_prompt.get(row["id"], 0) + 1
    assert max(per_prompt.values()) <= 2  # the cap per prompt holds
    report = json.loads((path / "report.json").read_text())
    assert report["overall"]["samples"] == 48
    assert report["overall"]["correct"] == teacher.produced_correct
    assert abs(report["overall"]["acceptance_rate"] - teacher.produced_correct / 48) < 1e-12
    assert 0.25 < report["overall"]["acceptance_rate"] < 0.75  # right about half the time
    assert set(report["buckets"]) == {"even", "odd"}
    assert "acceptance" in (path / "report.md").read_text()


def test_solver_teacher_uses_task_traces_and_dedupes(tmp_path):
    cfg = load_config(DistillConfig, None, ["task=tests.toy_task:ToyTask", "teacher.kind=solver", "n=3",
                                            "max_per_prompt=3", f"run.out_dir={tmp_path / 'd'}"])
    path = distill(cfg)
    rows = [json.loads(line) for line in (path / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == 8  # three identical traces per prompt collapse to one
    report = json.loads((path / "report.json").read_text())
    assert report["overall"]["acceptance_rate"] == 1.0


class _FakeTokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return " ".join(m["content"] for m in messages)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 50 for c in text]}
