"""Token costs in evaluations and REA-RL's token-savings report, by hand."""

from __future__ import annotations

import json

import pytest

from aha.cli import main
from aha.eval.runner import budget_verdicts, build_results
from aha.eval.token_savings import budget_summary, token_savings, token_summary
from aha.rollout.base import Completion
from aha.tasks import get_task


def rec(i, bucket, tokens, correct, text="", budgets=None):
    r = {"id": str(i), "bucket": bucket, "sample": 0, "num_tokens": tokens, "correct": correct,
         "completion": text, "format_ok": True}
    if budgets:
        r["budgets"] = budgets
    return r


def test_token_summary_by_hand():
    records = [rec(0, "easy", 100, True, "<think>wait, check</think>"), rec(1, "easy", 300, False),
               rec(2, "hard", 200, True, "<think>But no.\nWait.</think>")]
    s = token_summary(records)
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["tokens_mean"] == pytest.approx(200.0)  # (100 + 300 + 200) / 3
    assert s["tokens_per_correct"] == pytest.approx(300.0)  # 600 tokens / 2 correct answers
    assert s["correct_tokens_mean"] == pytest.approx(150.0)
    # reflections: "wait, check" chain once; "But" and "Wait" on two lines: twice -> 3 over 600 tokens
    assert s["reflections_mean"] == pytest.approx(1.0)
    assert s["reflections_per_1k"] == pytest.approx(5.0)
    assert s["reflection_rate"] == pytest.approx(2 / 3)
    assert token_summary([rec(0, "a", 10, False)])["tokens_per_correct"] is None


def test_token_savings_ratios_and_budgets():
    base = [rec(0, "easy", 400, True, budgets={"100": {"correct": False, "num_tokens": 100}}),
            rec(1, "hard", 800, True, budgets={"100": {"correct": False, "num_tokens": 100}})]
    new = [rec(0, "easy", 100, True, budgets={"100": {"correct": True, "num_tokens": 100}}),
           rec(1, "hard", 500, False, budgets={"100": {"correct": False, "num_tokens": 100}})]
    assert budget_summary(new) == {"100": {"accuracy": 0.5, "tokens_mean": 100.0, "samples": 2}}
    report = token_savings([("base", base), ("rea", new)])
    m = report["models"]["rea"]
    assert report["baseline"] == "base"
    assert m["token_ratio"] == pytest.approx(100 * 300 / 600)  # mean 300 vs 600 tokens -> 50%
    assert m["bucket_token_ratio"] == pytest.approx({"easy": 25.0, "hard": 62.5})
    assert m["budget_token_ratio"] == {"100": pytest.approx(100.0)}
    assert report["models"]["base"]["token_ratio"] == pytest.approx(100.0)


def test_budget_verdicts_rejudge_cut_responses(tiny_model_dir):
    from aha.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    task = get_task("arithmetic", levels="1", train_size=10, test_size=5)
    ex = next(iter(task.examples("train")))
    text = f"<think>long reasoning here and more</think><answer>{ex.answer}</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    c = Completion(0, 0, ids, tok.decode(ids, skip_special_tokens=True), "stop")
    verdict = task.verify(c.text, ex)
    assert verdict.correct
    out = budget_verdicts(task, tok, c, ex, verdict, [3, len(ids), 10_000])
    # cut to 3 tokens there is no answer; at or above its length the full verdict stands
    assert out == {"3": {"correct": False, "num_tokens": 3}, str(len(ids)): {"correct": True, "num_tokens": len(ids)},
                   "10000": {"correct": True, "num_tokens": len(ids)}}
    results = build_results([{**rec(0, "all", len(ids), True, c.text), "budgets": out}], {})
    assert results["budgets"]["3"]["accuracy"] == 0.0 and results["tokens"]["tokens_mean"] == len(ids)


def test_compare_prints_the_token_savings_table(tmp_path, capsys):
    for name, lengths in (("base", [400, 800]), ("rea", [100, 500])):
        folder = tmp_path / name
        folder.mkdir()
        rows = [rec(i, b, n, True) for i, (b, n) in enumerate(zip(["easy", "hard"], lengths))]
        (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "rea"), "--out", str(tmp_path / "cmp"),
                 "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "## Token savings" in out
    savings = out.split("## Token savings")[1]
    row = savings.split("| rea ")[1].split("\n")[0]
    assert [c.strip() for c in row.split("|")][1:5] == ["1.000", "300.0", "50.0", "300.0"]
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert report["token_savings"]["models"]["rea"]["bucket_token_ratio"]["easy"] == pytest.approx(25.0)
