"""aha compare finds planted new abilities and regressions and pairs differences by problem."""

from __future__ import annotations

import json

import pytest

from aha.cli import main
from aha.eval.compare import compare, per_problem


def records(correct_by_id, n=2):
    rows = []
    for pid, c in correct_by_id.items():
        bucket = "2ppl" if pid.startswith("a") else "3ppl"
        for j in range(n):
            rows.append({"id": pid, "bucket": bucket, "sample": j, "correct": j < c})
    return rows


BASE = {"a1": 2, "a2": 0, "a3": 1, "b1": 0, "b2": 0, "b3": 2}
NEW = {"a1": 2, "a2": 1, "a3": 1, "b1": 2, "b2": 0, "b3": 0}  # a2, b1 are new; b3 regressed


def test_new_abilities_and_regressions_are_found():
    report = compare([("base", records(BASE)), ("grpo", records(NEW))], n_boot=200)
    e = report["vs_baseline"]["grpo"]
    assert e["all"]["new_ability_ids"] == ["a2", "b1"]
    assert e["all"]["regression_ids"] == ["b3"]
    assert e["2ppl"]["new_abilities"] == 1 and e["3ppl"]["new_abilities"] == 1 and e["3ppl"]["regressions"] == 1
    # per-problem accuracies: base (1, 0, .5, 0, 0, 1), new (1, .5, .5, 1, 0, 0): mean difference 0.5/6 = 1/12
    assert e["all"]["difference"] == pytest.approx(1 / 12)
    assert e["all"]["ci_low"] <= 1 / 12 <= e["all"]["ci_high"]
    assert report["accuracy"]["base"]["2ppl"] == pytest.approx(0.5)


def test_per_problem_counts():
    p = per_problem(records({"a1": 1}, n=4))
    assert p["a1"] == {"bucket": "2ppl", "n": 4, "correct": 1, "accuracy": 0.25}


def test_cli_writes_report(tmp_path, capsys):
    for name, table in [("base", BASE), ("grpo", NEW)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records(table)))
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "grpo"), "--out", str(tmp_path / "c")]) == 0
    assert "new abilities" in (tmp_path / "c" / "compare.md").read_text()
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "missing")]) == 2
    assert "samples.jsonl" in capsys.readouterr().err
