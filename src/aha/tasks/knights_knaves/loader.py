"""Reading and writing Knights-and-Knaves record files (JSONL or parquet, chosen by extension).

Three record shapes are read, and may be mixed:
- the public K&K format (K-and-K/knights-and-knaves, mem-kk-logic's generator): `quiz`, `names`,
  `solution`, `solution_text_format`, `statements` (a Python-literal string), `index`, ...;
- Logic-RL's preprocessed parquet: `prompt` (chat messages whose content may be a rendered chat
  template), `reward_model.ground_truth.{solution_text_format, statements}`, `extra_info.index`;
  when `quiz`/`names`/`solution` are absent they are recovered from the prompt and the ground truth;
- aha's own files (`aha data knights-knaves`): the public fields plus `id`, `n_people`, `trace`, ...

Every record is checked: statements parse and are well formed, the names are distinct, and the given
solution satisfies every statement (by the exact solver). A malformed record raises `AhaError`
naming the file, the line (or parquet row) and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aha.errors import AhaError
from aha.tasks.knights_knaves import render
from aha.tasks.knights_knaves.logic import index_of, parse_statements, solutions_mask
from aha.tasks.knights_knaves.puzzle import Puzzle

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_ANSWER_LINE = re.compile(r"^\s*\((\d+)\)\s*(.+?)\s+is\s+an?\s+(knight|knave)\s*\.?\s*$", re.IGNORECASE)
_CHATML_USER = re.compile(r"<\|im_start\|>user\s*\n(.*?)<\|im_end\|>", re.DOTALL)
_BASE_USER = re.compile(r"User:\s*(.*?)\s*\nAssistant:", re.DOTALL)


def file_kind(path: str | Path) -> str:
    """'jsonl' or 'parquet' from the file name; AhaError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise AhaError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .jsonl or .parquet")


def read_records(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) pairs; location is "FILE, line N" (JSONL) or "FILE, row N" (parquet, csv,
    arrow, a `datasets` folder). Any source aha.tasks.datafiles.read_rows reads."""
    from aha.tasks.datafiles import FILE_SUFFIXES, read_rows

    p = Path(path)
    if p.is_file() and p.suffix.lower() not in FILE_SUFFIXES:
        raise AhaError(f"{path}: unsupported file type {p.suffix or '(none)'!r}; "
                       f"use {', '.join(FILE_SUFFIXES)} or a dataset folder")
    for rec in read_rows(path):
        yield rec.where, rec.data


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write records as JSONL or parquet (by extension), creating parent folders."""
    path = Path(path)
    kind = file_kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # one schema for all rows: every key of any record, None where a record lacks it
        keys: dict[str, None] = {}
        for rec in records:
            keys.update(dict.fromkeys(rec))
        rows = [{k: rec.get(k) for k in keys} for rec in records]
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _field(rec: dict[str, Any], *keys: str) -> Any:
    """rec[k1][k2]..., or None when any level is missing."""
    value: Any = rec
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def parse_answer_lines(text: Any, where: str, field: str) -> tuple[list[str], list[bool]]:
    """Names and roles from `(1) Name is a knight` lines; AhaError naming `where` and `field` if malformed."""
    if not isinstance(text, str) or not text.strip():
        raise AhaError(f"{where}: field {field!r} must be a non-empty string")
    names, roles = [], []
    for k, line in enumerate(text.strip().splitlines(), start=1):
        m = _ANSWER_LINE.match(line)
        if not m or int(m.group(1)) != k:
            raise AhaError(f"{where}: field {field!r}: line {k} is not '({k}) NAME is a knight/knave': "
                           f"{line!r:.80}")
        names.append(m.group(2))
        roles.append(m.group(3).lower() == "knight")
    return names, roles


def _quiz_from_prompt(prompt: Any) -> str | None:
    """The puzzle text inside a Logic-RL prompt (ChatML-rendered, base template, or plain messages)."""
    if isinstance(prompt, str):
        contents = [prompt]
    elif isinstance(prompt, list):
        contents = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    else:
        return None
    for content in reversed(contents):
        if not isinstance(content, str):
            continue
        m = _CHATML_USER.search(content) or _BASE_USER.search(content)
        if m:
            return m.group(1).strip()
        if "<|im_start|>" not in content and "Assistant:" not in content and content.strip():
            return content.strip()
    return None


def puzzle_from_record(rec: dict[str, Any], where: str) -> Puzzle:
    """A checked `Puzzle` from one record of any supported shape; `where` prefixes error messages."""
    raw_statements = rec.get("statements")
    field = "statements"
    if raw_statements is None:
        raw_statements = _field(rec, "reward_model", "ground_truth", "statements")
        field = "reward_model.ground_truth.statements"
    if raw_statements is None:
        raise AhaError(f"{where}: missing field 'statements' (or reward_model.ground_truth.statements)")
    try:
        statements = parse_statements(raw_statements)
    except ValueError as exc:
        raise AhaError(f"{where}: field {field!r}: {exc}") from None
    n = len(statements)

    names = rec.get("names")
    solution = rec.get("solution")
    text_format = rec.get("solution_text_format")
    text_field = "solution_text_format"
    if text_format is None:
        text_format = _field(rec, "reward_model", "ground_truth", "solution_text_format")
        text_field = "reward_model.ground_truth.solution_text_format"
    if names is None or solution is None:
        if text_format is None:
            raise AhaError(f"{where}: needs 'names' and 'solution', or 'solution_text_format'")
        parsed_names, parsed_roles = parse_answer_lines(text_format, where, text_field)
        names = parsed_names if names is None else names
        solution = parsed_roles if solution is None else solution
    if not isinstance(names, (list, tuple)) or not all(isinstance(x, str) and x.strip() for x in names):
        raise AhaError(f"{where}: field 'names' must be a list of non-empty strings")
    if len(names) != n:
        raise AhaError(f"{where}: field 'names' has {len(names)} names for {n} statements")
    if len({x.lower() for x in names}) != n:
        raise AhaError(f"{where}: field 'names' repeats a name: {list(names)}")
    if not isinstance(solution, (list, tuple)) or not all(isinstance(x, bool) for x in solution):
        raise AhaError(f"{where}: field 'solution' must be a list of true/false values")
    if len(solution) != n:
        raise AhaError(f"{where}: field 'solution' has {len(solution)} roles for {n} people")

    mask = solutions_mask(statements)
    if not (mask >> index_of(solution)) & 1:
        raise AhaError(f"{where}: field 'solution' does not satisfy the statements")

    quiz = rec.get("quiz")
    if not isinstance(quiz, str) or not quiz.strip():
        quiz = _quiz_from_prompt(rec.get("prompt"))
    names_t = tuple(str(x) for x in names)
    if not quiz:
        quiz = render.quiz_text(names_t, statements, [i for i in range(n)])
    extra: dict[str, Any] = {}
    index = rec.get("index", _field(rec, "extra_info", "index"))
    if isinstance(index, int) and not isinstance(index, bool):
        extra["index"] = index
    for key in ("depth", "width", "split", "seed"):
        if key in rec and rec[key] is not None:
            extra[key] = rec[key]
    rec_id = rec.get("id")
    if rec_id is not None and (not isinstance(rec_id, (str, int)) or isinstance(rec_id, bool)
                               or str(rec_id) == ""):
        raise AhaError(f"{where}: field 'id' must be a non-empty string")
    return Puzzle(names=names_t, statements=statements, solution=tuple(bool(x) for x in solution), quiz=quiz,
                  id=str(rec_id) if rec_id is not None else "", n_solutions=mask.bit_count(), extra=extra)


def load_puzzles(paths: str | Path | list[str | Path]) -> list[Puzzle]:
    """Every puzzle of the given files, in file order; a puzzle whose id appeared before is skipped
    (the same puzzle listed twice), an id reused for a different puzzle is an error."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Puzzle] = []
    seen: dict[str, tuple[str, Puzzle]] = {}
    for path in paths:
        count = 0
        for where, rec in read_records(path):
            puzzle = puzzle_from_record(rec, where)
            count += 1
            if puzzle.id in seen:
                first_where, first = seen[puzzle.id]
                if (first.names, first.statements) != (puzzle.names, puzzle.statements):
                    raise AhaError(f"{where}: id {puzzle.id!r} already used by a different puzzle "
                                   f"at {first_where}")
                continue
            seen[puzzle.id] = (where, puzzle)
            out.append(puzzle)
        if count == 0:
            raise AhaError(f"{path}: the file has no records")
    return out
