"""Markdown tables from per-sample records, checked cell by cell."""

from __future__ import annotations

import math
import re

import pytest

from aha.eval.tables import (
    accuracy_table,
    bucket_accuracy,
    by_bucket,
    markdown_table,
    natural_key,
    problem_accuracy,
    response_stats,
    stats_table,
)


def rec(pid, bucket, correct, tokens=10, text="", fmt=True, finish=None):
    r = {"id": pid, "bucket": bucket, "correct": correct, "num_tokens": tokens, "completion": text, "format_ok": fmt}
    if finish is not None:
        r["finish_reason"] = finish
    return r


def cells(table: str) -> list[list[str]]:
    """Rows of a markdown table as stripped cells (header first, rule line dropped)."""
    lines = [line for line in table.strip().splitlines() if not re.fullmatch(r"\|[-:|]+\|", line)]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]


def test_natural_order():
    names = ["10ppl", "2ppl", "level 10", "level 9", "3ppl"]
    assert sorted(names, key=natural_key) == ["2ppl", "3ppl", "10ppl", "level 9", "level 10"]


def test_problem_accuracy_averages_problems_first():
    # problem a: 1 of 3 correct, problem b: 1 of 1 -> (1/3 + 1) / 2, not 2/4
    records = [rec("a", "x", True), rec("a", "x", False), rec("a", "x", False), rec("b", "x", True)]
    assert problem_accuracy(records) == pytest.approx(2 / 3)
    assert math.isnan(problem_accuracy([]))
    # records without ids: each is its own problem
    assert problem_accuracy([{"correct": True}, {"correct": False}]) == 0.5


def test_accuracy_table_layout_and_unweighted_avg():
    # model A: 2ppl 1.0 (1 problem), 3ppl 0.25 (4 problems), 10ppl 0.5 -> Avg (1 + 0.25 + 0.5) / 3
    a = [rec("p1", "2ppl", True)]
    a += [rec(f"q{i}", "3ppl", i == 0) for i in range(4)]
    a += [rec("r1", "10ppl", True), rec("r2", "10ppl", False)]
    b = {"2ppl": 0.5, "3ppl": 0.75}  # precomputed values, missing 10ppl
    table = accuracy_table({"A": a, "B": b})
    rows = cells(table)
    assert rows[0] == ["Model", "Avg", "2ppl", "3ppl", "10ppl"]
    assert rows[1] == ["A", "0.58", "1.00", "0.25", "0.50"]   # 1.75 / 3 = 0.5833
    assert rows[2] == ["B", "0.62", "0.50", "0.75", "–"]      # Avg over present buckets: 0.625
    assert table.splitlines()[1].startswith("|:")            # first column left-aligned
    assert table.splitlines()[1].endswith(":|")              # numbers right-aligned


def test_accuracy_table_options():
    rows = {"base": {"level 1": 0.5, "level 2": 0.25}, "rl": {"level 1": 0.75, "level 2": 0.125}}
    out = cells(accuracy_table(rows, buckets=["level 2", "level 1"], digits=3, percent=True, bold_best=True,
                               name_header="Run"))
    assert out[0] == ["Run", "Avg", "level 2", "level 1"]
    assert out[1] == ["base", "37.5", "**25.0**", "50.0"]
    assert out[2] == ["rl", "**43.8**", "12.5", "**75.0**"]


def test_bucket_accuracy_and_by_bucket():
    records = [rec("a", "3ppl", True), rec("b", "2ppl", False), {"id": "c", "correct": True}]
    assert list(by_bucket(records)) == ["2ppl", "3ppl", "all"]
    assert bucket_accuracy(records) == {"2ppl": 0.0, "3ppl": 1.0, "all": 1.0}


def count_wait(text: str) -> int:
    return len(re.findall(r"\bwait\b", text, flags=re.IGNORECASE))


def test_response_stats_by_hand():
    records = [
        rec("a", "x", True, tokens=10, text="Wait, let me check. wait.", finish="stop"),   # 2 reflections
        rec("a", "x", False, tokens=20, text="so the answer is 3", finish="length"),      # 0
        rec("b", "x", True, tokens=30, text="Hmm wait", fmt=False, finish="stop"),        # 1
        rec("b", "x", False, tokens=100, text="", finish="stop"),                          # 0
    ]
    s = response_stats(records, count_wait)
    assert s["samples"] == 4 and s["problems"] == 2
    assert s["accuracy"] == 0.5 and s["format_rate"] == 0.75
    assert s["length_mean"] == 40.0
    assert s["length_median"] == 25.0                 # (20 + 30) / 2
    assert s["length_p90"] == pytest.approx(79.0)     # 30 + 0.7 * (100 - 30), linear interpolation
    assert s["truncated_share"] == 0.25
    assert s["reflection_rate"] == 0.5
    assert s["reflections_mean"] == 0.75
    assert s["reflections_per_1k_tokens"] == pytest.approx(3 / 160 * 1000)
    assert s["accuracy_with_reflection"] == 1.0 and s["accuracy_without_reflection"] == 0.0
    # without a counter / finish reasons, those figures are absent
    plain = response_stats([rec("a", "x", True)])
    assert "reflection_rate" not in plain and "truncated_share" not in plain


def test_response_stats_empty_and_strange():
    s = response_stats([])
    assert s["samples"] == 0 and math.isnan(s["accuracy"]) and math.isnan(s["length_mean"])
    # missing completion text and a non-numeric length are tolerated
    odd = [{"id": "a", "correct": True, "completion": None, "num_tokens": "many"}]
    s = response_stats(odd, count_wait)
    assert s["reflection_rate"] == 0.0 and math.isnan(s["length_mean"])


def test_stats_table():
    groups = {
        "2ppl": [rec("a", "2ppl", True, 10, "wait"), rec("b", "2ppl", False, 30, "")],
        "3ppl": [rec("c", "3ppl", True, 50, "ok")],
    }
    rows = cells(stats_table(groups, count_wait))
    assert rows[0][:7] == ["Group", "n", "acc", "format", "len mean", "len median", "len p90"]
    assert "truncated" not in rows[0]   # no finish reasons recorded
    assert rows[1][:7] == ["2ppl", "2", "0.50", "1.00", "20.0", "20.0", "28.0"]
    header = rows[0]
    assert rows[1][header.index("reflect rate")] == "0.50"
    assert rows[2][header.index("acc w/ reflect")] == "–"   # no reflective response in 3ppl
    without = cells(stats_table(groups))
    assert "reflect rate" not in without[0]


def test_markdown_table_shape():
    out = markdown_table(["a", "bb"], [["x", "1"], ["yy", "22"]])
    lines = out.splitlines()
    assert len(lines) == 4 and all(len(line) == len(lines[0]) for line in lines)
