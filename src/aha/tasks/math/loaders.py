"""Reading math datasets (any source aha.tasks.datafiles.read_rows reads) into aha's record form.

Every loader yields plain dicts in one schema, which is also what `aha data gsm8k|math|aime|amc`
writes:

    {"id": str, "question": str, "answer": str,            # always
     "accepted": [str, ...],                               # when several answers count as right
     "solution": str, "level": int, "subject": str,        # when the data has them
     "year": int, "contest": str, "number": int, "url": str,
     "choices": [str, ...]}                                # multiple choice only

Column names differ between public copies (`question` vs `problem`, `type` vs `subject`), so each
field is looked up under a list of usual names, and a user can name the column for any field with
`fields={"question": "Problem"}`. A record that lacks a required field, or holds the wrong kind of
value in it, raises AhaError naming the file, the line (or record number) and the field.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aha.errors import AhaError
from aha.tasks.datafiles import FILE_SUFFIXES, RawRecord, is_local_path, read_rows  # noqa: F401  (re-exported)
from aha.tasks.math.extract import last_boxed

# field -> the column names tried in order when the user did not name one
ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "gsm8k": {
        "id": ("id", "unique_id"),
        "question": ("question", "problem", "query", "input"),
        "answer": ("answer", "final_answer"),
        "solution": ("solution", "rationale"),
    },
    "math": {
        "id": ("unique_id", "id"),
        "question": ("problem", "question"),
        "answer": ("answer", "final_answer", "expected_answer"),
        "solution": ("solution",),
        "level": ("level", "difficulty"),
        "subject": ("subject", "type", "category"),
        "year": ("year",),
    },
    "competition": {
        "id": ("id", "unique_id"),
        "question": ("question", "problem"),
        "answer": ("answer", "expected_answer"),
        "solution": ("solution",),
        "year": ("year",),
        "contest": ("contest",),
        "number": ("problem_number", "number"),
        "url": ("url", "link"),
        "level": ("level",),
        "subject": ("subject",),
    },
    "choice": {
        "id": ("id", "unique_id", "Record ID"),
        "question": ("question", "Question", "problem"),
        "choices": ("choices", "options"),
        "answer": ("answer", "label", "answerKey", "correct_letter"),
        "correct": ("Correct Answer", "correct_answer"),
        "incorrect": ("Incorrect Answer 1", "incorrect_answers"),
        "solution": ("solution", "Explanation", "explanation"),
        "subject": ("subject", "High-level domain", "category"),
        "level": ("level", "Writer's Difficulty Estimate"),
    },
}

LETTERS = "ABCDEFGHIJ"


# ------------------------------------------------------------------------------------- reading


def read_file(path: str | Path) -> list[RawRecord]:
    """All records of one local data file or dataset folder (see aha.tasks.datafiles.read_rows)."""
    return read_rows(path)


def read_source(name: str, split: str = "train", config: str | None = None) -> list[RawRecord]:
    """A local file or folder, or else a `datasets` name (see aha.tasks.datafiles.read_rows)."""
    return read_rows(name, split, config)


# ------------------------------------------------------------------------------------ fields


def check_fields(kind: str, fields: dict[str, str] | None) -> dict[str, str]:
    """Validate a user's `fields` mapping (aha field -> column name) for a record kind."""
    fields = dict(fields or {})
    valid = ALIASES[kind]
    for key, column in fields.items():
        if key not in valid:
            raise AhaError(f"unknown field {key!r} for {kind} data; fields: {', '.join(valid)}")
        if not isinstance(column, str) or not column:
            raise AhaError(f"field {key!r} must name a column (a non-empty string), got {column!r}")
    return fields


def _get(rec: RawRecord, kind: str, key: str, fields: dict[str, str], required: bool = False) -> Any:
    if key in fields:
        column = fields[key]
        if column not in rec.data or rec.data[column] is None:
            if required:
                raise AhaError(f"{rec.where}: field {key!r} (column {column!r}) is missing")
            return None
        return rec.data[column]
    for column in ALIASES[kind][key]:
        if rec.data.get(column) is not None:
            return rec.data[column]
    if required:
        tried = ", ".join(repr(c) for c in ALIASES[kind][key])
        raise AhaError(f"{rec.where}: field {key!r} is missing (looked for columns {tried}; "
                       f"name yours with fields={{{key!r}: 'column'}} or --field {key}=column)")
    return None


def _text(rec: RawRecord, key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise AhaError(f"{rec.where}: field {key!r} must be text or a number, got {type(value).__name__}")
    s = answer_text(value)
    if not s.strip():
        raise AhaError(f"{rec.where}: field {key!r} is empty")
    return s.strip()


def answer_text(value: Any) -> str:
    """An answer as text: `142.0` -> "142", `0.5` -> "0.5", strings unchanged."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _int(rec: RawRecord, key: str, value: Any, pattern: str = r"(-?\d+)") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise AhaError(f"{rec.where}: field {key!r} must be a number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = re.search(pattern, value)
        if m:
            return int(m.group(1))
        if re.sub(r"^(?i:level)\s*", "", value.strip()).lower() in ("?", "", "unknown", "none"):
            return None  # MATH has a few "Level ?" problems
    raise AhaError(f"{rec.where}: field {key!r} must be an integer, got {value!r}")


def _optional_text(rec: RawRecord, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise AhaError(f"{rec.where}: field {key!r} must be text, got {type(value).__name__}")
    s = str(value).strip()
    return s or None


def problem_id(question: str) -> str:
    """A stable id for a problem without one: a hash of its text."""
    return hashlib.sha1(question.encode("utf-8")).hexdigest()[:12]


_CALCULATOR = re.compile(r"<<[^<>]*>>")
# Art of Problem Solving page names: "2022_AMC_12A_Problems", "2024_AIME_I_Problems", "2023_AIME_II"
_AOPS_NAME = re.compile(r"(\d{4})[ _](AMC|AIME)[ _](\d+[AB]?|I{1,2})(?![A-Za-z0-9])")
_AOPS_PROBLEM = re.compile(r"Problem[ _](\d+)")
_AIME_ID = re.compile(r"^(\d{4})-(I{1,2})-(\d+)$")


def _base(rec: RawRecord, kind: str, fields: dict[str, str]) -> dict[str, Any]:
    question = _text(rec, "question", _get(rec, kind, "question", fields, required=True))
    raw_id = _get(rec, kind, "id", fields)
    out: dict[str, Any] = {"id": _optional_text(rec, "id", raw_id) or problem_id(question), "question": question}
    return out


def normalize_record(rec: RawRecord, kind: str, fields: dict[str, str] | None = None) -> dict[str, Any]:
    """One raw record in aha's schema (see the module docstring). kind: gsm8k, math, competition, choice."""
    fields = fields or {}
    if kind == "gsm8k":
        return _gsm8k(rec, fields)
    if kind == "math":
        return _math(rec, fields)
    if kind == "competition":
        return _competition(rec, fields)
    if kind == "choice":
        return _choice(rec, fields)
    raise ValueError(f"unknown record kind {kind!r}")


def _gsm8k(rec: RawRecord, fields: dict[str, str]) -> dict[str, Any]:
    out = _base(rec, "gsm8k", fields)
    answer = _text(rec, "answer", _get(rec, "gsm8k", "answer", fields, required=True))
    solution = _optional_text(rec, "solution", _get(rec, "gsm8k", "solution", fields))
    if "####" in answer:
        # the public files hold "reasoning ... #### 72" in one column
        reasoning, _, final = answer.rpartition("####")
        final = final.strip()
        if not final:
            raise AhaError(f"{rec.where}: field 'answer' has nothing after '####'")
        solution = solution or _CALCULATOR.sub("", reasoning).strip() or None
        answer = final
    out["answer"] = answer.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+", answer) else answer
    if solution:
        out["solution"] = solution
    return out


def _math(rec: RawRecord, fields: dict[str, str]) -> dict[str, Any]:
    out = _base(rec, "math", fields)
    solution = _optional_text(rec, "solution", _get(rec, "math", "solution", fields))
    answer = _get(rec, "math", "answer", fields)
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        boxed = last_boxed(solution) if solution else None
        if boxed is None:
            raise AhaError(f"{rec.where}: field 'answer' is missing and the solution has no \\boxed{{}} answer")
        answer = boxed
    out["answer"] = _text(rec, "answer", answer)
    if solution:
        out["solution"] = solution
    level = _int(rec, "level", _get(rec, "math", "level", fields))
    if level is not None:
        out["level"] = level
    subject = _optional_text(rec, "subject", _get(rec, "math", "subject", fields))
    if subject:
        out["subject"] = subject
    year = _int(rec, "year", _get(rec, "math", "year", fields))
    if year is not None:
        out["year"] = year
    return out


# "080 or 081 (both were accepted)": AIME 2022 II problem 8 had two accepted answers
_ALTERNATIVES = re.compile(r"^\s*([^\s()]+)\s+or\s+([^\s()]+)\s*(?:\((?:both )?(?:were |are )?accepted\))?\s*$")


def _competition(rec: RawRecord, fields: dict[str, str]) -> dict[str, Any]:
    out = _base(rec, "competition", fields)
    answer = _get(rec, "competition", "answer", fields, required=True)
    if isinstance(answer, list) and answer:
        accepted = [_text(rec, "answer", a) for a in answer]
    else:
        text = _text(rec, "answer", answer)
        m = _ALTERNATIVES.match(text)
        accepted = [m.group(1), m.group(2)] if m else [text]
    out["answer"] = accepted[0]
    if len(accepted) > 1:
        out["accepted"] = accepted
    for key in ("solution", "subject", "contest", "url"):
        value = _optional_text(rec, key, _get(rec, "competition", key, fields))
        if value:
            out[key] = value
    for key in ("year", "number", "level"):
        value = _int(rec, key, _get(rec, "competition", key, fields))
        if value is not None:
            out[key] = value
    # recover the groupings public copies only encode in an id ("2021-I-1", "2024_AIME_I_Problems/
    # Problem_3") or a url ("2022_AMC_12A_Problems/Problem_1", "2024_AIME_II_Problems/...")
    _set_groupings(out, out["id"])
    _set_groupings(out, out.get("url", ""))
    return out


def _set_groupings(out: dict[str, Any], text: str) -> None:
    """Fill year, contest and number (where not already set) from an AIME/AMC id or url."""
    m = _AIME_ID.match(text)
    if m:
        out.setdefault("year", int(m.group(1)))
        out.setdefault("contest", f"AIME {m.group(2)}")
        out.setdefault("number", int(m.group(3)))
        return
    m = _AOPS_NAME.search(text)
    if m:
        out.setdefault("year", int(m.group(1)))
        out.setdefault("contest", f"{m.group(2)} {m.group(3)}")
        n = _AOPS_PROBLEM.search(text)
        if n:
            out.setdefault("number", int(n.group(1)))


def _choice(rec: RawRecord, fields: dict[str, str]) -> dict[str, Any]:
    out = _base(rec, "choice", fields)
    choices = _get(rec, "choice", "choices", fields)
    answer = _get(rec, "choice", "answer", fields)
    if choices is None:
        correct = _get(rec, "choice", "correct", fields)
        if correct is not None:
            # GPQA style: one correct and several incorrect columns; shuffled per problem (seeded)
            wrong = _get(rec, "choice", "incorrect", fields)
            if isinstance(wrong, list):
                wrong_list = [_text(rec, "incorrect", w) for w in wrong]
            else:
                wrong_list = [_text(rec, "incorrect", rec.data[c]) for c in
                              ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3") if rec.data.get(c)]
                if not wrong_list and wrong is not None:
                    wrong_list = [_text(rec, "incorrect", wrong)]
            if not wrong_list:
                raise AhaError(f"{rec.where}: field 'incorrect' is missing (no wrong options)")
            options = [_text(rec, "correct", correct), *wrong_list]
            order = list(range(len(options)))
            random.Random(out["id"]).shuffle(order)
            choices = [options[i] for i in order]
            answer = LETTERS[order.index(0)]
        elif all(rec.data.get(letter) is not None for letter in "ABCD"):
            choices = [rec.data[letter] for letter in LETTERS if rec.data.get(letter) is not None]
        else:
            raise AhaError(f"{rec.where}: field 'choices' is missing (expected a list, columns A-D, "
                           "or 'Correct Answer' + 'Incorrect Answer N' columns)")
    if isinstance(choices, dict):
        choices = [choices[k] for k in sorted(choices)]
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
        raise AhaError(f"{rec.where}: field 'choices' must be a list of 2 to {len(LETTERS)} options")
    choices = [_text(rec, "choices", c) for c in choices]
    out["choices"] = choices
    if answer is None:
        raise AhaError(f"{rec.where}: field 'answer' is missing")
    out["answer"] = _choice_answer(rec, answer, choices)
    for key in ("subject",):
        value = _optional_text(rec, key, _get(rec, "choice", key, fields))
        if value:
            out[key] = value
    level = _short_label(_optional_text(rec, "level", _get(rec, "choice", "level", fields)))
    if level:
        out["level"] = level
    solution = _optional_text(rec, "solution", _get(rec, "choice", "solution", fields))
    if solution:
        out["solution"] = solution
    return out


def _short_label(text: str | None) -> str | None:
    """A bucket label from a descriptive level: GPQA's "Hard graduate level (could be a question on a
    hard graduate exam for PhD students in the domain)" -> "hard graduate"; short labels unchanged."""
    if text is None or len(text) <= 24:
        return text
    head = re.split(r"\s*[(;:,.]", text, maxsplit=1)[0].strip()
    head = re.sub(r"\s+level\b", "", head, flags=re.IGNORECASE).strip()
    return (head or text)[:40].strip().lower()


def _choice_answer(rec: RawRecord, answer: Any, choices: list[str]) -> str:
    letters = LETTERS[:len(choices)]
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < len(choices):
            return letters[answer]
        raise AhaError(f"{rec.where}: field 'answer' index {answer} is out of range for {len(choices)} choices")
    if isinstance(answer, str):
        s = answer.strip().strip("()").strip()
        if len(s) == 1 and s.upper() in letters:
            return s.upper()
        if s in choices:
            return letters[choices.index(s)]
    raise AhaError(f"{rec.where}: field 'answer' must be a letter ({letters[0]}-{letters[-1]}), an index, "
                   f"or the text of a choice; got {answer!r}")


def normalize_records(records: list[RawRecord], kind: str, fields: dict[str, str] | None = None) -> list[dict]:
    """Normalise records and make their ids unique (a repeated id gets "#2", "#3", ...)."""
    fields = check_fields(kind, fields)
    out = []
    seen: dict[str, int] = {}
    for rec in records:
        row = normalize_record(rec, kind, fields)
        n = seen.get(row["id"], 0) + 1
        seen[row["id"]] = n
        if n > 1:
            row["id"] = f"{row['id']}#{n}"
        out.append(row)
    return out


def load_records(sources: list[str], kind: str, fields: dict[str, str] | None = None, split: str = "train",
                 config: str | None = None) -> list[dict]:
    """Read and normalise every source (files or dataset names) for one split."""
    raw: list[RawRecord] = []
    for name in sources:
        raw.extend(read_source(name, split, config))
    return normalize_records(raw, kind, fields)


def iter_jsonl(rows: list[dict]) -> Iterator[str]:
    """Rows as jsonl lines (UTF-8 kept readable)."""
    for row in rows:
        yield json.dumps(row, ensure_ascii=False)
