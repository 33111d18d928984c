"""Reading public K&K, Logic-RL and aha record files; errors name the file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aha.errors import AhaError
from aha.tasks.knights_knaves.loader import load_puzzles, write_records
from aha.tasks.knights_knaves.puzzle import puzzle_id

FIXTURE = Path("/work/shared/data/kk/3ppl_test.parquet")
STATEMENTS = ("(('not', ('telling-truth', 2)), ('or', ('telling-truth', 1), ('lying', 2)), "
              "('<=>', ('telling-truth', 1), ('lying', 1)))")
QUIZ = ("You meet 3 inhabitants: Amelia, Penelope, and Evelyn. Amelia said that Evelyn is not a knight. "
        "Penelope said, \"Penelope is a knight or Evelyn is a knave\". "
        "Evelyn said, \"Penelope is a knight if and only if Penelope is a knave\". "
        "So who is a knight and who is a knave?")
FORMAT = "(1) Amelia is a knight\n(2) Penelope is a knight\n(3) Evelyn is a knave"
PUBLIC = {"quiz": QUIZ, "names": ["Amelia", "Penelope", "Evelyn"], "solution": [True, True, False],
          "solution_text": "Amelia is a knight, Penelope is a knight, and Evelyn is a knave.",
          "solution_text_format": FORMAT, "statements": STATEMENTS, "index": 7,
          "cot_head": "...", "cot_repeat_steps": [], "cot_foot": "..."}
# Logic-RL's preprocessing: only the rendered prompt and the ground truth
LOGIC_RL = {"data_source": "kk_logic", "ability": "logic",
            "prompt": [{"role": "user",
                        "content": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        f"<|im_start|>user\n{QUIZ}\n<|im_end|>\n<|im_start|>assistant\n<think>"}],
            "reward_model": {"style": "rule", "ground_truth": {"solution_text_format": FORMAT,
                                                               "statements": STATEMENTS}},
            "extra_info": {"split": "train", "index": 3}}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_public_record(tmp_path):
    [p] = load_puzzles(write_jsonl(tmp_path / "pub.jsonl", [PUBLIC]))
    assert p.names == ("Amelia", "Penelope", "Evelyn") and p.solution == (True, True, False)
    assert p.quiz == QUIZ and p.answer == FORMAT and p.bucket == "3ppl" and p.n_solutions == 1
    assert p.extra["index"] == 7
    assert p.id == puzzle_id(p.names, p.statements)  # content-based when the record has no id


def test_logic_rl_record_recovers_quiz_names_and_solution(tmp_path):
    [p] = load_puzzles(write_jsonl(tmp_path / "lrl.jsonl", [LOGIC_RL]))
    assert p.quiz == QUIZ  # cut out of the ChatML-rendered prompt
    assert p.names == ("Amelia", "Penelope", "Evelyn") and p.solution == (True, True, False)
    assert p.extra["index"] == 3
    # the same puzzle in both shapes has the same id
    [q] = load_puzzles(write_jsonl(tmp_path / "pub.jsonl", [PUBLIC]))
    assert p.id == q.id


def test_logic_rl_base_template_prompt(tmp_path):
    content = f"A conversation...\n\nUser:{QUIZ}\nAssistant: <think>"
    rec = dict(LOGIC_RL, prompt=[{"role": "user", "content": content}])
    [p] = load_puzzles(write_jsonl(tmp_path / "base.jsonl", [rec]))
    assert p.quiz == QUIZ


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture not present")
def test_shipped_logic_rl_parquet():
    puzzles = load_puzzles(FIXTURE)
    assert len(puzzles) == 100 and all(p.n == 3 and p.n_solutions == 1 for p in puzzles)
    assert puzzles[0].names == ("Amelia", "Penelope", "Evelyn")
    assert puzzles[0].quiz.startswith("A very special island")


def test_parquet_round_trip_and_own_ids(tmp_path):
    rec = dict(PUBLIC, id="my-id-1", depth=2, width=2, trace="<think>x</think>\n<answer>y</answer>")
    write_records(tmp_path / "a.parquet", [rec, dict(PUBLIC, id="my-id-2", names=["Al", "Pe", "Ev"])])
    a, b = load_puzzles(tmp_path / "a.parquet")
    assert (a.id, b.id) == ("my-id-1", "my-id-2") and b.names == ("Al", "Pe", "Ev")
    assert a.extra["depth"] == 2


def test_duplicates_are_skipped_but_id_clashes_fail(tmp_path):
    assert len(load_puzzles(write_jsonl(tmp_path / "dup.jsonl", [PUBLIC, PUBLIC]))) == 1
    clash = [dict(PUBLIC, id="x"), dict(PUBLIC, id="x", names=["Al", "Pe", "Ev"])]
    with pytest.raises(AhaError, match="line 2: id 'x' already used"):
        load_puzzles(write_jsonl(tmp_path / "clash.jsonl", clash))


# (record or raw line, message fragment naming the field)
BAD = [
    (dict(PUBLIC, statements="(('lying', 5),)"), "field 'statements'"),                 # wrong count / index
    (dict(PUBLIC, statements="import os"), "field 'statements': not a Python literal"),
    (dict(PUBLIC, solution=[True, True, True]), "field 'solution' does not satisfy"),   # not a solution
    (dict(PUBLIC, solution=[1, 1, 0]), "field 'solution' must be a list of true/false"),
    (dict(PUBLIC, names=["Amelia", "Amelia", "Evelyn"]), "field 'names' repeats"),
    (dict(PUBLIC, names=["Amelia", "Evelyn"]), "field 'names' has 2 names for 3 statements"),
    ({k: v for k, v in PUBLIC.items() if k != "statements"}, "missing field 'statements'"),
    ({"statements": STATEMENTS}, "needs 'names' and 'solution', or 'solution_text_format'"),
    (dict(LOGIC_RL, reward_model={"ground_truth": {"statements": STATEMENTS,
                                                   "solution_text_format": "Amelia"}}),
     "field 'reward_model.ground_truth.solution_text_format': line 1"),
    (dict(PUBLIC, id=""), "field 'id'"),
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
]


@pytest.mark.parametrize("record, message", BAD)
def test_malformed_records_name_file_line_and_field(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    line = record if isinstance(record, str) else json.dumps(record)
    path.write_text(json.dumps(PUBLIC) + "\n\n" + line + "\n")  # the bad record is on line 3
    with pytest.raises(AhaError) as err:
        load_puzzles(path)
    assert f"{path}, line 3" in str(err.value) and message in str(err.value)


def test_file_level_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(AhaError, match="no records"):
        load_puzzles(tmp_path / "empty.jsonl")
    with pytest.raises(AhaError, match="does not exist"):
        load_puzzles(tmp_path / "missing.jsonl")
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(AhaError, match="unsupported file type '.txt'; use .jsonl"):
        load_puzzles(tmp_path / "x.txt")
    (tmp_path / "x.csv").write_text("a\n")  # CSV is read (issue 19); a header alone holds no records
    with pytest.raises(AhaError, match="no records"):
        load_puzzles(tmp_path / "x.csv")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(AhaError, match="cannot read parquet"):
        load_puzzles(tmp_path / "broken.parquet")


def test_parquet_errors_name_the_row(tmp_path):
    write_records(tmp_path / "bad.parquet", [PUBLIC, dict(PUBLIC, solution=[False, False, False])])
    with pytest.raises(AhaError, match=r"bad.parquet, row 2: field 'solution' does not satisfy"):
        load_puzzles(tmp_path / "bad.parquet")
