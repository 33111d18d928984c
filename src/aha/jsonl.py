"""Reading JSONL files of objects with errors that name the file and line (one parser for every
data file aha reads: puzzles, math problems, SFT pairs, completions, run logs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aha.errors import AhaError


def read_text(path: str | Path) -> str:
    """A data file's text; bytes that are not UTF-8 are an AhaError naming the file and line."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = Path(path).read_bytes()[: exc.start].count(b"\n") + 1
        raise AhaError(f"{path}, line {line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None


def iter_json_objects(path: str | Path, text: str | None = None, allow_torn_tail: bool = False
                      ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file.

    text: the file's content, if already read. allow_torn_tail: skip an unparseable last line (a
    log whose writer was killed mid-line) instead of failing.
    Raises AhaError "FILE, line N: invalid JSON (...)" or "...: expected a JSON object, got list".
    """
    if text is None:
        text = read_text(path)
    # records are separated by "\n" only: str.splitlines() would also break inside a string at
    # U+2028, U+2029, U+0085, \x1c-\x1e, \v and \f, which json.dumps(ensure_ascii=False) writes raw
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()  # the final newline (and trailing blank lines) is not a torn record
    for i, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")  # a file written with Windows line ends
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if allow_torn_tail and i == len(lines):
                return
            raise AhaError(f"{path}, line {i}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise AhaError(f"{path}, line {i}: JSON nested too deeply to read; a record is one object of "
                           "fields, not thousands of nested lists") from None
        if not isinstance(rec, dict):
            raise AhaError(f"{path}, line {i}: expected a JSON object, got {type(rec).__name__}")
        yield i, rec
