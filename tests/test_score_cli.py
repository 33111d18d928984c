"""`aha score` end to end (in-process) and the reusable scoring functions."""

from __future__ import annotations

import json

import pytest

from aha.cli import main
from aha.errors import AhaError
from aha.eval.scoring import Sample, format_summary, read_completions, score_samples, summarize


@pytest.fixture()
def data_file(tmp_path):
    path = tmp_path / "kk.jsonl"
    assert main(["data", "knights-knaves", "--people", "2-3", "--count", "4", "--seed", "7",
                 "--split", "test", "--traces", "reflective", "--out", str(path)]) == 0
    return path


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_end_to_end(tmp_path, data_file, capsys):
    recs = _records(data_file)  # 2ppl, 3ppl interleaved
    lines = []
    for r in recs:  # two samples per puzzle: the teacher trace (right) and a malformed guess
        lines.append({"id": r["id"], "completion": r["trace"]})
        lines.append({"id": r["id"], "completion": r["solution_text_format"], "model": "m"})
    # one extra sample on the first 2ppl puzzle: well formed but with the first role flipped
    flipped = recs[0]["trace"].replace("(1) " + recs[0]["names"][0] + " is a knight",
                                       "(1) " + recs[0]["names"][0] + " is a knave")
    if flipped == recs[0]["trace"]:
        flipped = recs[0]["trace"].replace("(1) " + recs[0]["names"][0] + " is a knave",
                                           "(1) " + recs[0]["names"][0] + " is a knight")
    lines.append({"id": recs[0]["id"], "text": flipped})
    comps = tmp_path / "completions.jsonl"
    comps.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "scores.json"
    capsys.readouterr()
    assert main(["score", "--task", "knights-knaves", "--data", str(data_file), "--completions", str(comps),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2ppl" in printed and "3ppl" in printed and "overall" in printed
    result = json.loads(out.read_text())
    buckets = result["summary"]["buckets"]
    # 2ppl: 4 traces right, 4 bare answers (no tags: nothing parsed), 1 flipped
    # -> 4 / 9 correct, 5 / 9 well formed
    assert buckets["2ppl"]["n"] == 9 and buckets["2ppl"]["accuracy"] == pytest.approx(4 / 9)
    assert buckets["2ppl"]["format_rate"] == pytest.approx(5 / 9)
    assert buckets["3ppl"] == {"n": 8, "problems": 4, "accuracy": 0.5, "strict_accuracy": 0.5,
                               "format_rate": 0.5, "partial": 0.5}
    assert result["summary"]["overall"]["n"] == 17
    samples = result["samples"]
    assert samples[1]["error"] == "no <answer> block" and samples[1]["model"] == "m"
    assert [s["sample"] for s in samples if s["id"] == recs[0]["id"]] == [0, 1, 2]
    assert samples[-1]["correct"] is False and samples[-1]["partial"] == pytest.approx(0.5)


@pytest.mark.parametrize("content, message", [
    ('{"id": "nope", "completion": "x"}\n', "line 1: unknown id 'nope'"),
    ('\n{"id": 1, "completion": "x"\n', "line 2: invalid JSON"),
    ('{"completion": "x"}\n', "line 1: missing field 'id'"),
    ('{"id": "a"}\n', "line 1: missing field 'completion'"),
    ('{"id": "a", "completion": 3}\n', "line 1: field 'completion' must be a string"),
    ("\n\n", "the completions file is empty"),
])
def test_score_errors_name_the_line(tmp_path, data_file, capsys, content, message):
    comps = tmp_path / "c.jsonl"
    comps.write_text(content)
    assert main(["score", "--task", "knights-knaves", "--data", str(data_file),
                 "--completions", str(comps)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_score_with_task_options_and_bad_data(tmp_path, data_file, capsys):
    rec = _records(data_file)[0]
    comps = tmp_path / "c.jsonl"
    comps.write_text(json.dumps({"id": rec["id"], "completion": rec["trace"][len("<think>"):]}) + "\n")
    assert main(["score", "--task", "knights-knaves", "--data", str(data_file), "--completions", str(comps),
                 "--task-option", "think_preopened=true"]) == 0
    assert "1.000" in capsys.readouterr().out
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["score", "--task", "knights-knaves", "--data", str(empty), "--completions", str(comps)]) == 2
    assert "no records" in capsys.readouterr().err


def test_summarize_and_table_by_hand():
    records = [
        {"id": "a", "bucket": "10ppl", "correct": True, "format_ok": True, "partial": 1.0},
        {"id": "b", "bucket": "2ppl", "correct": True, "format_ok": False, "partial": 1.0},
        {"id": "b", "bucket": "2ppl", "correct": False, "format_ok": True, "partial": 0.5},
    ]
    s = summarize(records)
    assert list(s["buckets"]) == ["2ppl", "10ppl"]  # natural order
    assert s["buckets"]["2ppl"] == {"n": 2, "problems": 1, "accuracy": 0.5, "strict_accuracy": 0.0,
                                    "format_rate": 0.5, "partial": 0.75}
    assert s["overall"]["accuracy"] == pytest.approx(2 / 3)
    assert s["bucket_mean_accuracy"] == pytest.approx(0.75)  # unweighted over buckets: (0.5 + 1) / 2
    table = format_summary(s)
    assert "2ppl" in table.splitlines()[2] and "bucket mean" in table


def test_score_samples_api(tmp_path, data_file):
    from aha.tasks import get_task

    task = get_task("knights-knaves", data=[str(data_file)])
    examples = list(task.examples("test"))
    records, summary = score_samples(task, examples, [Sample(examples[0].id, examples[0].meta["trace"])])
    assert records[0]["correct"] and summary["overall"]["n"] == 1
    with pytest.raises(AhaError, match="unknown id"):
        score_samples(task, examples, [Sample("zzz", "")])
    comps = tmp_path / "c.jsonl"
    comps.write_text(json.dumps({"id": "q", "response": "r"}) + "\n")
    assert read_completions(comps)[0].text == "r"


def test_score_report_shares_eval_reporting(tmp_path, data_file):
    recs = _records(data_file)
    lines = [{"id": r["id"], "completion": r["trace"]} for r in recs]
    lines += [{"id": r["id"], "completion": "no idea"} for r in recs]
    comps = tmp_path / "completions.jsonl"
    comps.write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = tmp_path / "report"
    assert main(["score", "--task", "knights-knaves", "--data", str(data_file), "--completions", str(comps),
                 "--report", str(report)]) == 0
    results = json.loads((report / "results.json").read_text())
    # each puzzle: one right (the trace), one wrong -> pass@1 = 0.5, pass@2 = 1
    assert results["accuracy"] == pytest.approx(0.5) and results["pass_at_k"]["2"] == pytest.approx(1.0)
    assert set(results["buckets"]) == {"2ppl", "3ppl"}
    assert "Reflection" in (report / "results.md").read_text()


def test_task_option_values_are_yaml_scalars_and_empty_means_empty():
    from aha.commands.score import parse_options

    assert parse_options(["system_prompt=", "people=2-3", "count=3", "think_preopened=true"]) == {
        "system_prompt": "", "people": "2-3", "count": 3, "think_preopened": True}
