"""Reports (issue 19, item 10): aligned text tables, several bucket fields in one report, honest
settings and sample counts for completions produced elsewhere."""

from __future__ import annotations

import json

import pytest

from aha.eval.scoring import format_summary, summarize


def _rec(i, bucket, correct, groups=None):
    r = {"id": str(i), "bucket": bucket, "correct": correct, "format_ok": True, "partial": float(correct)}
    if groups:
        r["groups"] = groups
    return r


ALIGNMENT_CASES = [
    # (bucket names) the text table's columns must line up whatever their length
    (["2ppl", "3ppl"]),  # short names, as before
    (["Intermediate Algebra", "Counting & Probability"]),  # MATH subjects: longer than 12 characters
    (["hard graduate", "post-graduate or harder"]),  # GPQA level labels
]


@pytest.mark.parametrize("names", ALIGNMENT_CASES)
def test_text_table_stays_aligned(names):
    records = [_rec(i, name, i % 2 == 0) for i, name in enumerate(names * 2)]
    table = format_summary(summarize(records)).splitlines()
    rows = [line for line in table if not line.startswith(("-", "bucket mean"))]
    # every row (header, buckets, overall) has the same length: the columns line up
    assert len({len(line) for line in rows}) == 1, table
    for name in names:
        assert any(line.startswith(name + " ") for line in rows)


def test_two_bucket_fields_give_two_tables():
    records = [_rec(1, "level 1", True, {"level": "level 1", "subject": "Algebra"}),
               _rec(2, "level 1", False, {"level": "level 1", "subject": "Intermediate Algebra"}),
               _rec(3, "level 5", True, {"level": "level 5", "subject": "Algebra"})]
    s = summarize(records)
    assert list(s["by"]) == ["level", "subject"]
    assert s["by"]["subject"]["Algebra"]["accuracy"] == 1.0
    assert s["by"]["level"]["level 1"]["accuracy"] == 0.5
    text = format_summary(s)
    assert text.splitlines()[0].startswith("level ") and "\nsubject " in text
    assert "Intermediate Algebra" in text


def test_task_bucket_by_two_fields(tmp_path):
    from aha.errors import AhaError
    from aha.tasks import get_task

    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "answer": "2", "level": "Level 3", "type": "Algebra"}) + "\n")
    ex = next(get_task("math", data=[str(path)], bucket_by="level,subject").examples("test"))
    assert ex.bucket == "level 3" and ex.meta["groups"] == {"level": "level 3", "subject": "Algebra"}
    ex = next(get_task("math", data=[str(path)], bucket_by=["subject", "level"]).examples("test"))
    assert ex.bucket == "Algebra" and list(ex.meta["groups"]) == ["subject", "level"]
    ex = next(get_task("math", data=[str(path)], bucket_by="subject").examples("test"))
    assert "groups" not in ex.meta  # one field: as before
    with pytest.raises(AhaError, match="bucket_by must name fields"):
        get_task("math", data=[str(path)], bucket_by="level,colour")


def _kk_records(counts):
    # counts: samples per problem; each problem's first sample is right
    out = []
    for p, n in enumerate(counts):
        for k in range(n):
            out.append({"id": f"p{p}", "bucket": "3ppl", "sample": k, "correct": k == 0, "format_ok": True,
                        "partial": float(k == 0), "completion": "x"})
    return out


HEADLINE_CASES = [
    # (sampling settings, samples per problem, fragments the results.md headline must hold / must not hold)
    ({"source": "out.jsonl", "task": "math"}, [1, 1, 1],
     ["completions from out.jsonl", "decoding settings not recorded", "n = 1 sample each"],
     ["greedy", "max None"]),  # `aha score`: produced elsewhere (was "greedy, max None new tokens")
    ({"source": "out.jsonl", "task": "math"}, [4, 4, 2],
     ["samples per problem: 4 (2 problems), 2 (1 problem)"], ["n = 2 samples each"]),  # uneven counts
    ({"n": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 256, "seed": 0}, [4, 4],
     ["n = 4 samples each", "temperature 1.0", "max 256 new tokens"], []),  # `aha eval`: as before
    ({"n": 1, "temperature": 0.0, "max_new_tokens": 64, "seed": 0}, [1, 1],
     ["greedy", "max 64 new tokens"], []),  # greedy evaluation: as before
]


@pytest.mark.parametrize("sampling, counts, present, absent", HEADLINE_CASES)
def test_results_headline(sampling, counts, present, absent):
    from aha.eval.runner import build_results, results_markdown

    results = build_results(_kk_records(counts), sampling)
    text = results_markdown(results)
    headline = text.split("## ")[0]
    for fragment in present:
        assert fragment in headline, headline
    for fragment in absent:
        assert fragment not in headline, headline
    assert results["samples_per_problem"] == {str(n): counts.count(n) for n in set(counts)}


def test_report_has_a_table_per_bucket_field():
    from aha.eval.runner import build_results, results_markdown

    records = [{"id": f"p{i}", "bucket": f"level {1 + i % 2}", "sample": 0, "correct": i % 3 == 0,
                "format_ok": True, "partial": 0.0, "completion": "x",
                "groups": {"level": f"level {1 + i % 2}", "subject": ["Algebra", "Intermediate Algebra"][i % 2]}}
               for i in range(6)]
    results = build_results(records, {"source": "c.jsonl"})
    assert set(results["by"]) == {"level", "subject"}
    assert set(results["by"]["subject"]) == {"Algebra", "Intermediate Algebra"}
    text = results_markdown(results)
    assert "## Accuracy per level" in text and "## Accuracy per subject" in text
    assert "Intermediate Algebra" in text


def test_score_command_with_two_bucket_fields(tmp_path, capsys):
    from aha.cli import main

    data = tmp_path / "math.jsonl"
    rows = [{"unique_id": f"p{i}", "problem": f"q{i}", "answer": str(i), "level": f"Level {1 + i % 2}",
             "type": ["Algebra", "Counting & Probability"][i % 2]} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    comps = tmp_path / "c.jsonl"
    comps.write_text("".join(json.dumps({"id": f"p{i}", "completion": f"\\boxed{{{i if i < 3 else 9}}}"}) + "\n"
                             for i in range(4)))
    report = tmp_path / "report"
    assert main(["score", "--task", "math", "--data", str(data), "--completions", str(comps),
                 "--task-option", "bucket_by=level,subject", "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "Counting & Probability" in printed and printed.splitlines()[0].startswith("level ")
    md = (report / "results.md").read_text()
    assert "## Accuracy per level" in md and "## Accuracy per subject" in md
    assert "max None" not in md and "completions from" in md
