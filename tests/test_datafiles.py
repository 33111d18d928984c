"""aha.tasks.datafiles.read_rows: every kind of local source through one function, with `--split` respected."""

from __future__ import annotations

import csv
import json

import pytest

from aha.cli import main
from aha.errors import AhaError
from aha.tasks import get_task
from aha.tasks.datafiles import read_rows

ROWS = [{"question": "What is 1+1?", "answer": "2"}, {"question": "What is 2+2?", "answer": "4"}]


def _write_jsonl(path):
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")


def _write_json(path):
    path.write_text(json.dumps({"data": ROWS}), encoding="utf-8")


def _write_csv(path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["question", "answer"])
        w.writeheader()
        w.writerows(ROWS)


def _dataset():
    import datasets

    return datasets.Dataset.from_dict({k: [r[k] for r in ROWS] for k in ("question", "answer")})


def _write_parquet(path):
    _dataset().to_parquet(str(path))


def _write_arrow(path):
    # an .arrow file as save_to_disk writes it
    _dataset().save_to_disk(str(path.parent / "tmp_saved"))
    (path.parent / "tmp_saved" / "data-00000-of-00001.arrow").rename(path)


def _write_saved(path):
    _dataset().save_to_disk(str(path))


SOURCES = [
    # (file or folder name, writer)
    ("rows.jsonl", _write_jsonl),  # aha's own format
    ("rows.json", _write_json),  # a JSON object holding a "data" list
    ("rows.csv", _write_csv),  # CSV (GPQA ships as CSV; it used to be read as JSONL)
    ("rows.parquet", _write_parquet),  # parquet, through `datasets`
    ("rows.arrow", _write_arrow),  # an Arrow file
    ("saved", _write_saved),  # a folder written by Dataset.save_to_disk
]


@pytest.mark.parametrize("name, writer", SOURCES, ids=[n for n, _ in SOURCES])
def test_every_local_source_reads_the_same_rows(tmp_path, name, writer):
    path = tmp_path / name
    writer(path)
    rows = read_rows(str(path))
    assert [r.data for r in rows] == ROWS
    assert rows[0].where.startswith(str(path))
    # and a task reads it as data
    task = get_task("math", data=[str(path)])
    assert [e.answer for e in task.examples("test")] == ["2", "4"]


def _splits():
    import datasets

    return datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"question": ["train q"], "answer": ["1"]}),
        "test": datasets.Dataset.from_dict({"question": ["test q1", "test q2"], "answer": ["2", "3"]}),
    })


def _write_snapshot(root):
    # the layout of ~/.cache/huggingface/hub/datasets--openai--gsm8k: snapshots/<hash>/<config>/<split>-*.parquet
    snap = root / "datasets--org--toy" / "snapshots" / "0123abcd"
    (snap / "main").mkdir(parents=True)
    for split, ds in _splits().items():
        ds.to_parquet(str(snap / "main" / f"{split}-00000-of-00001.parquet"))
    return snap


SPLIT_CASES = [
    # (how the source is written, path suffix to read, split asked, questions expected)
    ("saved_dict", "", "test", ["test q1", "test q2"]),  # DatasetDict.save_to_disk, split test
    ("saved_dict", "", "train", ["train q"]),  # ... split train
    ("snapshot", "", "test", ["test q1", "test q2"]),  # a hub-cache snapshot folder
    ("snapshot_repo", "", "train", ["train q"]),  # the datasets--org--name folder: newest snapshot
]


@pytest.mark.parametrize("kind, suffix, split, expected", SPLIT_CASES)
def test_split_is_respected(tmp_path, kind, suffix, split, expected):
    if kind == "saved_dict":
        path = tmp_path / "saved"
        _splits().save_to_disk(str(path))
    elif kind == "snapshot":
        path = _write_snapshot(tmp_path)
    else:
        _write_snapshot(tmp_path)
        path = tmp_path / "datasets--org--toy"
    assert [r.data["question"] for r in read_rows(str(path), split)] == expected
    task = get_task("math", data=[str(path)])
    assert len(list(task.examples(split))) == len(expected)


def test_data_command_respects_split(tmp_path, capsys):
    path = tmp_path / "saved"
    _splits().save_to_disk(str(path))
    out = tmp_path / "out.jsonl"
    assert main(["data", "math", "--from", str(path), "--split", "test", "--out", str(out)]) == 0
    assert [json.loads(line)["question"] for line in out.read_text().splitlines()] == ["test q1", "test q2"]


ERROR_CASES = [
    # (what to create, split, message fragment)
    ("missing", "train", "does not exist"),  # no such file
    ("saved_dict", "validation", "no split 'validation'; it has: train, test"),  # unknown split, listed
    ("empty_folder", "train", "cannot read this folder as a dataset"),  # a folder without data
    ("bad_parquet", "train", "cannot read parquet"),  # a corrupt file
    ("bad_jsonl", "train", "line 2: invalid JSON"),  # JSONL errors keep their line number
]


@pytest.mark.parametrize("kind, split, message", ERROR_CASES)
def test_clear_one_line_errors(tmp_path, kind, split, message):
    if kind == "missing":
        path = tmp_path / "nope.parquet"
    elif kind == "saved_dict":
        path = tmp_path / "saved"
        _splits().save_to_disk(str(path))
    elif kind == "empty_folder":
        path = tmp_path / "empty"
        path.mkdir()
    elif kind == "bad_parquet":
        path = tmp_path / "bad.parquet"
        path.write_bytes(b"not parquet at all")
    else:
        path = tmp_path / "bad.jsonl"
        path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(AhaError) as info:
        read_rows(str(path), split)
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------ GPQA as CSV

GPQA_COLUMNS = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3",
                "Explanation", "Subdomain", "High-level domain", "Writer's Difficulty Estimate", "Record ID"]
GPQA_ROWS = [
    ["Which genotype is heterozygous?\nPick one.", "Bb Bb", "BB BB", "bb bb", "BB bb",
     "Both loci carry\ntwo alleles.", "Genetics", "Biology",
     "Hard graduate level (could be a question on a hard graduate exam for PhD students in the domain)", "rec1"],
    ["What is 2+2?", "4", "3", "5", "22", "", "Arithmetic", "Math",
     "Easy undergraduate level (could be a question on a hard undergraduate exam for students majoring in the subject)",
     "rec2"],
]


def _write_gpqa(path, columns=GPQA_COLUMNS, rows=GPQA_ROWS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return str(path)


def test_gpqa_csv_converts_and_reads_back(tmp_path, capsys):
    src = _write_gpqa(tmp_path / "gpqa_diamond.csv")
    out = tmp_path / "gpqa.jsonl"
    assert main(["data", "multiple-choice", "--from", src, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 multiple-choice problems" in printed
    assert "level: easy undergraduate (1), hard graduate (1)" in printed  # short labels, not sentences
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first["id"] == "rec1" and first["question"] == "Which genotype is heterozygous?\nPick one."
    assert sorted(first["choices"]) == sorted(["Bb Bb", "BB BB", "bb bb", "BB bb"])
    assert first["choices"]["ABCD".index(first["answer"])] == "Bb Bb"
    assert first["solution"] == "Both loci carry\ntwo alleles."
    # the task reads the CSV and the converted file alike, bucketed by the short level labels
    for data in (src, str(out)):
        task = get_task("multiple-choice", data=[data], bucket_by="level")
        examples = list(task.examples("test"))
        assert [e.bucket for e in examples] == ["hard graduate", "easy undergraduate"]
        ex = examples[0]
        assert task.verify("\\boxed{Bb Bb}", ex).correct
        assert not task.verify("\\boxed{BB BB}", ex).correct


def test_gpqa_csv_missing_column_is_named(tmp_path, capsys):
    columns = [c for c in GPQA_COLUMNS if c != "Question"]
    src = _write_gpqa(tmp_path / "broken.csv", columns, [r[1:] for r in GPQA_ROWS])
    assert main(["data", "multiple-choice", "--from", src, "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "broken.csv, row 1: field 'question' is missing" in err and "'Question'" in err
