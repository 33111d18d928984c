"""aha.jsonl: records are split on "\n" only, so every character str.splitlines() breaks at survives."""

import json

import pytest

from aha.errors import AhaError
from aha.jsonl import iter_json_objects

# every character other than "\n" at which str.splitlines() breaks a line
SPLITLINES_BREAKS = [
    ("\u2028", "LINE SEPARATOR: json.dumps(ensure_ascii=False) writes it raw"),
    ("\u2029", "PARAGRAPH SEPARATOR: also written raw"),
    ("\u0085", "NEXT LINE (NEL): also written raw"),
    ("\x1c", "FILE SEPARATOR: escaped by json.dumps, raw only in hand-made files"),
    ("\x1d", "GROUP SEPARATOR"),
    ("\x1e", "RECORD SEPARATOR"),
    ("\x0b", "vertical tab"),
    ("\x0c", "form feed"),
    ("\r", "carriage return (escaped by json.dumps)"),
]


@pytest.mark.parametrize("char,why", SPLITLINES_BREAKS, ids=[repr(c) for c, _ in SPLITLINES_BREAKS])
def test_separator_inside_a_string_is_kept(tmp_path, char, why):
    path = tmp_path / "rows.jsonl"
    rows = [{"id": "a", "question": f"before{char}after"}, {"id": "b", "question": "plain"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    got = list(iter_json_objects(path))
    assert [rec for _, rec in got] == rows, why
    assert [i for i, _ in got] == [1, 2]


def test_raw_separator_in_text_argument():
    # text passed in directly (not read through Path.read_text's newline translation)
    text = '{"q": "x\u2028y"}\n{"q": "z\u0085w"}\n'
    assert [rec["q"] for _, rec in iter_json_objects("f.jsonl", text)] == ["x\u2028y", "z\u0085w"]


@pytest.mark.parametrize("text,expected", [
    ('{"a": 1}\r\n{"a": 2}\r\n', [1, 2]),    # Windows line ends
    ('{"a": 1}\n\n\n{"a": 2}', [1, 2]),       # blank lines and no final newline
    ('{"a": 1}\n  \n', [1]),                  # trailing whitespace-only line
])
def test_line_ends(text, expected):
    assert [rec["a"] for _, rec in iter_json_objects("f.jsonl", text)] == expected


def test_torn_tail_still_skipped_and_errors_name_the_line():
    text = '{"a": 1}\n{"a": 2}\n{"a": '
    assert len(list(iter_json_objects("log.jsonl", text, allow_torn_tail=True))) == 2
    with pytest.raises(AhaError, match=r"log.jsonl, line 3: invalid JSON"):
        list(iter_json_objects("log.jsonl", text))
    # a torn line followed only by the newline is still the last line
    assert len(list(iter_json_objects("log.jsonl", '{"a": 1}\n{"a"\n', allow_torn_tail=True))) == 1


def test_aha_data_round_trip(tmp_path):
    # what `aha data gsm8k` writes (ensure_ascii=False) is read back by the same parser
    from aha.tasks.math.loaders import iter_jsonl, load_records

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"question": "Tom\u2028has 3\u2029apples\u0085.", "answer": "x #### 3"}) + "\n",
                   encoding="utf-8")
    rows = load_records([str(src)], "gsm8k")
    out = tmp_path / "out.jsonl"
    out.write_text("".join(line + "\n" for line in iter_jsonl(rows)), encoding="utf-8")
    assert "\u2028" in out.read_text(encoding="utf-8")
    again = load_records([str(out)], "gsm8k")
    assert again[0]["question"] == "Tom\u2028has 3\u2029apples\u0085."
    assert again[0]["answer"] == "3"
