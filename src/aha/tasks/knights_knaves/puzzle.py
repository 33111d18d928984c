"""One Knights-and-Knaves puzzle and its record form (public K&K fields plus aha's own)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from aha.tasks.knights_knaves import render
from aha.tasks.knights_knaves.logic import Statement


def puzzle_id(names: tuple[str, ...] | list[str], statements: tuple[Statement, ...]) -> str:
    """A stable id from the content: `kk{N}-` plus 10 hex digits of a hash of names and statements.

    Content-based so that the same puzzle has the same id whichever file or position it comes from.
    """
    digest = hashlib.sha1(repr((tuple(names), tuple(statements))).encode("utf-8")).hexdigest()
    return f"kk{len(names)}-{digest[:10]}"


@dataclass
class Puzzle:
    """A puzzle with its unique solution.

    names: the people, in order of introduction; statements[i] is said by names[i].
    statements: one statement tree per person (see `logic`).
    solution: one role per person (True = knight); for a puzzle without exactly one solution, the
        first consistent assignment or the file's own field.
    quiz: the puzzle text shown to the model.
    id: stable identifier (content hash unless the record carried its own).
    n_solutions: number of consistent assignments found by the solver (1 for a well-posed puzzle).
    extra: other fields kept from a record or set by the generator (index, depth, width, split, seed).
    """

    names: tuple[str, ...]
    statements: tuple[Statement, ...]
    solution: tuple[bool, ...]
    quiz: str
    id: str = ""
    n_solutions: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = puzzle_id(self.names, self.statements)

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def bucket(self) -> str:
        return f"{self.n}ppl"

    @property
    def answer(self) -> str:
        return render.solution_text_format(self.names, list(self.solution))

    def to_record(self, trace: str | None = None, trace_style: str | None = None) -> dict[str, Any]:
        """The public K&K record (quiz, names, knight_knave, solution, solution_text,
        solution_text_format, statements as a Python-literal string, index) plus aha's fields (id,
        n_people, n_solutions, the generator settings, and the teacher trace when given)."""
        rec: dict[str, Any] = {
            "quiz": self.quiz,
            "names": list(self.names),
            "knight_knave": {"knight": "knight", "knave": "knave", "a_knight": "a knight",
                             "a_knave": "a knave", "Knight": "Knight", "Knave": "Knave"},
            "solution": [bool(x) for x in self.solution],
            "solution_text": render.solution_text(self.names, list(self.solution)),
            "solution_text_format": self.answer,
            "statements": repr(tuple(self.statements)),
            "index": int(self.extra.get("index", 0)),
            "id": self.id,
            "n_people": self.n,
            "n_solutions": self.n_solutions,
        }
        for key in ("depth", "width", "split", "seed"):
            if key in self.extra:
                rec[key] = self.extra[key]
        if trace is not None:
            rec["trace"] = trace
            rec["trace_style"] = trace_style
        return rec
