"""aha eval: results files, pass@k layout, and resuming without duplicated samples."""

from __future__ import annotations

import json

import pytest

from aha.cli import main
from aha.eval.runner import build_results, evaluate, results_markdown
from aha.rollout.base import Completion, SamplingParams

from .toy_task import ToyTask


class ScriptedGenerator:
    """Answers correctly for even sample indices, wrongly otherwise; can fail after a number of calls."""

    def __init__(self, examples, fail_after=None):
        self.examples = {tuple(e.prompt[0]["content"].encode()): e for e in examples}
        self.calls = 0
        self.fail_after = fail_after
        self.by_prompt = []

    def generate(self, prompts, params):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        out = []
        for i, p in enumerate(prompts):
            answer = self.lookup[tuple(p)]
            for j in range(params.n):
                word = answer if j % 2 == 0 else "nope"
                out.append(Completion(i, j, [5] * (3 + j), f"<think>wait, let me check</think><answer>{word}</answer>",
                                      "stop"))
        return out


class FakeTokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return messages[-1]["content"]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text.encode())}


def make(task, fail_after=None):
    gen = ScriptedGenerator(list(task.examples("test")), fail_after)
    gen.lookup = {tuple(ex.prompt[-1]["content"].encode()): ex.answer for ex in task.examples("test")}
    return gen


def test_results_files_and_figures(tmp_path):
    task = ToyTask(6)
    examples = list(task.examples("test"))
    params = SamplingParams(temperature=1.0, n=4, max_new_tokens=8)
    results = evaluate(None, FakeTokenizer(), task, examples, params, tmp_path, batch_prompts=4,
                       generator=make(task), label="toy", show_progress=False)
    # every problem: samples 0 and 2 right, 1 and 3 wrong -> pass@1 = 0.5, pass@2 = 1 - C(2,2)/C(4,2) = 5/6
    assert results["accuracy"] == pytest.approx(0.5)
    assert results["pass_at_k"]["2"] == pytest.approx(5 / 6)
    assert results["pass_at_k"]["4"] == pytest.approx(1.0)
    assert results["n_samples"] == 4 and results["sampling"]["temperature"] == 1.0
    assert set(results["buckets"]) == {"even", "odd"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["accuracy"] == pytest.approx(0.5) and "pass_at_k" in saved and "buckets" in saved
    rows = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and rows[0]["reflections"] == 2  # "wait" and "let me check"
    md = (tmp_path / "results.md").read_text()
    assert "| Avg |" in md.replace("  ", " ") or "Avg" in md
    assert "pass@k" in md and "n = 4 samples" in md


def test_resume_after_interruption_does_not_duplicate(tmp_path):
    task = ToyTask(8)
    examples = list(task.examples("test"))
    params = SamplingParams(temperature=1.0, n=2, max_new_tokens=8)
    with pytest.raises(KeyboardInterrupt):
        evaluate(None, FakeTokenizer(), task, examples, params, tmp_path, batch_prompts=3,
                 generator=make(task, fail_after=2), show_progress=False)
    partial = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(partial) == 12  # two chunks of three problems were written before the interruption
    gen = make(task)
    results = evaluate(None, FakeTokenizer(), task, examples, params, tmp_path, batch_prompts=3, generator=gen,
                       show_progress=False)
    rows = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and len({(r["id"], r["sample"]) for r in rows}) == 16
    assert gen.calls == 1  # only the last chunk was sampled again
    assert results["overall"]["problems"] == 8


def test_changed_settings_refuse_to_mix(tmp_path):
    task = ToyTask(2)
    ex = list(task.examples("test"))
    evaluate(None, FakeTokenizer(), task, ex, SamplingParams(n=2), tmp_path, generator=make(task),
             show_progress=False)
    from aha.errors import AhaError

    with pytest.raises(AhaError, match="other settings"):
        evaluate(None, FakeTokenizer(), task, ex, SamplingParams(n=3), tmp_path, generator=make(task),
                 show_progress=False)


def test_build_results_from_hand_made_records():
    records = [{"id": "a", "bucket": "2ppl", "correct": True, "format_ok": True, "completion": "x", "num_tokens": 10},
               {"id": "a", "bucket": "2ppl", "correct": False, "format_ok": True, "completion": "x", "num_tokens": 20},
               {"id": "b", "bucket": "3ppl", "correct": False, "format_ok": False, "completion": "wait",
                "num_tokens": 30},
               {"id": "b", "bucket": "3ppl", "correct": False, "format_ok": True, "completion": "y", "num_tokens": 40}]
    r = build_results(records, {"n": 2, "temperature": 1.0})
    assert r["accuracy"] == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert r["buckets"]["2ppl"]["accuracy"] == 0.5 and r["buckets"]["3ppl"]["accuracy"] == 0.0
    assert r["bucket_avg"] == pytest.approx(0.25)
    assert r["pass_at_k"]["2"] == pytest.approx(0.5)
    assert r["overall"]["format_rate"] == pytest.approx(0.75)
    assert r["overall"]["length_mean"] == pytest.approx(25.0)
    assert "| 2ppl" in results_markdown(r) or "2ppl" in results_markdown(r)


def test_eval_cli_on_a_tiny_model(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(tiny_model_dir), "--task", "tests.toy_task:ToyTask", "--task-option",
                 "count=3", "--max-new-tokens", "6", "--n", "2", "--temperature", "1.0", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["n_samples"] == 2 and results["overall"]["problems"] == 3
    assert list(results["pass_at_k_curve"]) == ["1", "2"]
    assert results["pass_at_k_curve"]["1"] == pytest.approx(results["accuracy"])
    assert (out / "plots" / "pass_at_k_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "plots" / "pass1_histogram.png").is_file()
    assert main(["eval", "--model", str(tiny_model_dir), "--n", "2", "--out", str(out)]) == 2
    assert "greedy" in capsys.readouterr().err
