"""Reading math data files into aha's record form: formats, field names, groupings, bad records."""

from __future__ import annotations

import json

import pytest

from aha.errors import AhaError
from aha.tasks.math.loaders import load_records, problem_id, read_file


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


GSM8K_ROW = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
              "altogether in April and May.\n#### 72",
}


def test_gsm8k_answer_line_is_split_from_the_reasoning(tmp_path):
    (row,) = load_records([write_jsonl(tmp_path / "g.jsonl", [GSM8K_ROW])], "gsm8k")
    assert row["answer"] == "72"
    # the calculator annotations <<...>> are removed from the reasoning
    assert row["solution"] == ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips "
                               "altogether in April and May.")
    # no id column: the id is a hash of the question, the same on every load
    assert row["id"] == problem_id(GSM8K_ROW["question"]) and len(row["id"]) == 12


def test_gsm8k_thousands_in_the_answer_line(tmp_path):
    rows = load_records([write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "x\n#### 1,200"}])], "gsm8k")
    assert rows[0]["answer"] == "1200"


def test_math_records(tmp_path):
    rows = [
        # answer only in the solution's box; "Level 5" and "type" as in the public MATH files
        {"problem": "Compute $1+1$.", "solution": "We get $\\boxed{2}$.", "level": "Level 5", "type": "Algebra"},
        # explicit answer, MATH-500 style columns
        {"problem": "Find $x$.", "solution": "...", "answer": "\\frac{1}{2}", "level": 2, "subject": "Prealgebra",
         "unique_id": "test/prealgebra/1.json"},
        # "Level ?" exists in MATH: no level rather than an error
        {"problem": "Odd one.", "answer": "3", "level": "Level ?"},
    ]
    a, b, c = load_records([write_jsonl(tmp_path / "m.jsonl", rows)], "math")
    assert (a["answer"], a["level"], a["subject"]) == ("2", 5, "Algebra")
    assert (b["id"], b["answer"], b["level"], b["subject"]) == ("test/prealgebra/1.json", "\\frac{1}{2}", 2,
                                                                "Prealgebra")
    assert "level" not in c


def test_competition_groupings_from_ids_and_urls(tmp_path):
    rows = [
        {"id": "2022-II-8", "question": "q1", "answer": "080 or 081 (both were accepted)", "year": 2022},
        {"id": 5, "problem": "q2", "answer": 142.0,
         "url": "https://artofproblemsolving.com/wiki/index.php/2022_AMC_12A_Problems/Problem_1"},
    ]
    aime, amc = load_records([write_jsonl(tmp_path / "c.jsonl", rows)], "competition")
    # two accepted answers: the first is the reference, both are kept
    assert (aime["answer"], aime["accepted"]) == ("080", ["080", "081"])
    assert (aime["year"], aime["contest"], aime["number"]) == (2022, "AIME II", 8)
    # a float answer becomes an integer string; year, contest and number come from the url
    assert (amc["id"], amc["answer"], amc["year"], amc["contest"], amc["number"]) == ("5", "142", 2022, "AMC 12A", 1)


def test_field_mapping(tmp_path):
    path = write_jsonl(tmp_path / "own.jsonl", [{"Problem": "What is 2+3?", "Final": 5, "Year": "2020"}])
    (row,) = load_records([path], "competition", {"question": "Problem", "answer": "Final", "year": "Year"})
    assert (row["question"], row["answer"], row["year"]) == ("What is 2+3?", "5", 2020)


def test_json_and_parquet_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "a", "question": "1+1?", "answer": "2"}, {"id": "b", "question": "2+2?", "answer": "4"}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "obj.json").write_text(json.dumps({"data": rows}))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    for name in ("list.json", "obj.json", "t.parquet"):
        loaded = load_records([str(tmp_path / name)], "competition")
        assert [(r["id"], r["answer"]) for r in loaded] == [("a", "2"), ("b", "4")], name


def test_repeated_ids_are_made_unique(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "question": "a", "answer": "1"},
                                              {"id": 1, "question": "b", "answer": "2"}])
    assert [r["id"] for r in load_records([path], "competition")] == ["1", "1#2"]


def test_choice_records(tmp_path):
    rows = [
        # a list of choices and a letter
        {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": "B"},
        # an index as the answer
        {"question": "3+3?", "choices": ["6", "7"], "answer": 0},
        # the answer given as the text of a choice, choices as columns A-D
        {"question": "1+1?", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "2"},
        # GPQA style: one correct and three incorrect columns, shuffled by a per-record seed
        {"Question": "Which is prime?", "Correct Answer": "7", "Incorrect Answer 1": "4",
         "Incorrect Answer 2": "6", "Incorrect Answer 3": "8", "Record ID": "rec1"},
    ]
    path = write_jsonl(tmp_path / "mc.jsonl", rows)
    a, b, c, d = load_records([path], "choice")
    assert (a["answer"], b["answer"], c["answer"]) == ("B", "A", "B")
    assert c["choices"] == ["1", "2", "3", "4"]
    assert sorted(d["choices"]) == ["4", "6", "7", "8"]
    assert d["choices"][ord(d["answer"]) - ord("A")] == "7"
    # the shuffle is the same on every load
    assert load_records([path], "choice")[3]["choices"] == d["choices"]


BAD_RECORDS = [
    # (file content, error message parts)
    ('{"question": "q", "answer": "1"}\n{not json}\n', ["bad.jsonl, line 2", "invalid JSON"]),  # broken line
    ('{"question": "q", "answer": "1"}\n\n{"question": "q2"}\n', ["bad.jsonl, line 3", "'answer'"]),  # missing field
    ('{"question": "q", "answer": {"v": 1}}\n', ["bad.jsonl, line 1", "'answer'", "dict"]),  # wrong type
    ('{"question": "", "answer": "1"}\n', ["line 1", "'question'", "empty"]),  # empty text
    ('{"question": "q", "answer": "1", "year": "soon"}\n', ["line 1", "'year'", "integer"]),  # bad integer
    ('[1, 2]\n', ["line 1", "expected a JSON object"]),  # not an object
]


@pytest.mark.parametrize("content, parts", BAD_RECORDS)
def test_malformed_records_name_file_line_and_field(tmp_path, content, parts):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(AhaError) as info:
        load_records([str(path)], "competition")
    for part in parts:
        assert part in str(info.value)


def test_mapped_column_missing_and_unknown_field(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(AhaError, match=r"x.jsonl, line 1: field 'question' \(column 'Problem'\) is missing"):
        load_records([path], "competition", {"question": "Problem"})
    with pytest.raises(AhaError, match="unknown field 'questoin'"):
        load_records([path], "competition", {"questoin": "q"})


def test_missing_file():
    with pytest.raises(AhaError, match="does not exist"):
        read_file("/nonexistent/data.jsonl")
    with pytest.raises(AhaError, match="does not exist"):
        load_records(["./nope.jsonl"], "gsm8k")


GROUPING_CASES = [
    # (record, expected (year, contest, number))
    ({"id": "2024_AIME_I_Problems/Problem_3", "problem": "q", "answer": "5"}, (2024, "AIME I", 3)),  # AIME id (was: none)
    ({"id": "2024_AIME_II_Problems/Problem_15", "problem": "q", "answer": "5"}, (2024, "AIME II", 15)),  # AIME II
    ({"id": 60, "problem": "q", "answer": "5",
      "url": "https://artofproblemsolving.com/wiki/index.php/2023_AIME_II_Problems/Problem_7"}, (2023, "AIME II", 7)),  # AIME url
    ({"id": "2021-I-1", "problem": "q", "answer": "5"}, (2021, "AIME I", 1)),  # aha's own id form, as before
    ({"id": 1, "problem": "q", "answer": 1.0,
      "url": "https://artofproblemsolving.com/wiki/index.php/2023_AMC_10B_Problems/Problem_12"}, (2023, "AMC 10B", 12)),  # AMC url
    ({"id": "2024_AIME_I_Problems/Problem_3", "problem": "q", "answer": "5", "year": 1999},
     (1999, "AIME I", 3)),  # a field in the file wins over the id
    ({"id": "x2024_AIMEE_I", "problem": "q", "answer": "5"}, (None, None, None)),  # not a contest name
]


@pytest.mark.parametrize("record, expected", GROUPING_CASES)
def test_groupings_from_aime_and_amc_names(tmp_path, record, expected):
    (row,) = load_records([write_jsonl(tmp_path / "c.jsonl", [record])], "competition")
    assert (row.get("year"), row.get("contest"), row.get("number")) == expected


def test_aime_table_has_year_buckets(tmp_path):
    from aha.tasks import get_task

    rows = [{"id": f"{y}_AIME_I_Problems/Problem_{n}", "problem": f"q{y}{n}", "answer": "1"}
            for y in (2023, 2024) for n in (1, 2)]
    task = get_task("aime", data=[write_jsonl(tmp_path / "a.jsonl", rows)])
    assert sorted({e.bucket for e in task.examples("test")}) == ["2023", "2024"]
