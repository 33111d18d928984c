"""Knights-and-Knaves statements as small logic trees, and an exact bit-parallel solver.

A statement is a nested tuple in the public K&K format (the same one `ast.literal_eval` reads from
the `statements` field of the public files):

    ("telling-truth", i)      person i is a knight
    ("lying", i)              person i is a knave
    ("not", s)
    ("and", s1, s2, ...)      two or more operands
    ("or", s1, s2, ...)
    ("->", a, b)              if a then b
    ("<=>", a, b)             a if and only if b

Person i (0-based) is a knight exactly when their own statement is true. A puzzle with N people has
2**N role assignments; the solver evaluates every statement on all of them at once by representing a
truth table as one Python integer of 2**N bits (bit k is the value under assignment k, where person
i is a knight iff bit i of k is set). An 8-person puzzle is a handful of 256-bit integer operations,
which is faster than numpy arrays at this size and has no size limit other than memory.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from typing import Any

Statement = tuple  # ("telling-truth", i) | ("lying", i) | (op, *operands)

LEAVES = ("telling-truth", "lying")
OPERATORS = ("not", "and", "or", "->", "<=>")
MAX_PEOPLE = 16  # 2**16-bit truth tables are still cheap; beyond that enumeration is the wrong tool


@lru_cache(maxsize=64)
def knight_masks(n: int) -> tuple[int, ...]:
    """For each person i, the 2**n-bit mask of assignments in which person i is a knight."""
    size = 1 << n
    masks = []
    for i in range(n):
        half = 1 << i
        block = ((1 << half) - 1) << half  # 2**(i+1) bits: lower half 0, upper half 1
        # the block repeated 2**(n-i-1) times: multiply by sum_j 2**(j * 2**(i+1))
        repeat = ((1 << size) - 1) // ((1 << (2 * half)) - 1)
        masks.append(block * repeat)
    return tuple(masks)


def full_mask(n: int) -> int:
    """The mask with all 2**n assignments set."""
    return (1 << (1 << n)) - 1


def truth_table(stmt: Statement, n: int) -> int:
    """Bit k of the result is the value of `stmt` under assignment k (see the module docstring)."""
    op = stmt[0]
    if op == "telling-truth":
        return knight_masks(n)[stmt[1]]
    if op == "lying":
        return knight_masks(n)[stmt[1]] ^ full_mask(n)
    if op == "not":
        return truth_table(stmt[1], n) ^ full_mask(n)
    if op == "and":
        out = full_mask(n)
        for sub in stmt[1:]:
            out &= truth_table(sub, n)
        return out
    if op == "or":
        out = 0
        for sub in stmt[1:]:
            out |= truth_table(sub, n)
        return out
    if op == "->":
        return (truth_table(stmt[1], n) ^ full_mask(n)) | truth_table(stmt[2], n)
    if op == "<=>":
        return (truth_table(stmt[1], n) ^ truth_table(stmt[2], n)) ^ full_mask(n)
    raise ValueError(f"unknown operator {op!r}")


def constraint_table(speaker: int, stmt: Statement, n: int) -> int:
    """Assignments where the speaker's role agrees with their statement (knight <=> statement true)."""
    return (knight_masks(n)[speaker] ^ truth_table(stmt, n)) ^ full_mask(n)


def solutions_mask(statements: tuple[Statement, ...] | list[Statement]) -> int:
    """Bitset of all assignments consistent with every statement."""
    n = len(statements)
    out = full_mask(n)
    for i, stmt in enumerate(statements):
        out &= constraint_table(i, stmt, n)
        if not out:
            break
    return out


def count_solutions(statements: tuple[Statement, ...] | list[Statement]) -> int:
    """Number of role assignments consistent with all statements (1 for a well-posed puzzle)."""
    return solutions_mask(statements).bit_count()


def assignment_of(k: int, n: int) -> list[bool]:
    """Assignment number k as a list of roles (True = knight)."""
    return [bool((k >> i) & 1) for i in range(n)]


def index_of(assignment: list[bool] | tuple[bool, ...]) -> int:
    """The inverse of `assignment_of`."""
    return sum(1 << i for i, knight in enumerate(assignment) if knight)


def solve(statements: tuple[Statement, ...] | list[Statement]) -> list[list[bool]]:
    """Every consistent assignment (True = knight), in increasing assignment order."""
    n = len(statements)
    mask = solutions_mask(statements)
    out = []
    while mask:
        low = mask & -mask
        out.append(assignment_of(low.bit_length() - 1, n))
        mask ^= low
    return out


def evaluate(stmt: Statement, roles: list[bool] | tuple[bool, ...]) -> bool:
    """Value of `stmt` under one assignment (True = knight)."""
    op = stmt[0]
    if op == "telling-truth":
        return bool(roles[stmt[1]])
    if op == "lying":
        return not roles[stmt[1]]
    if op == "not":
        return not evaluate(stmt[1], roles)
    if op == "and":
        return all(evaluate(s, roles) for s in stmt[1:])
    if op == "or":
        return any(evaluate(s, roles) for s in stmt[1:])
    if op == "->":
        return (not evaluate(stmt[1], roles)) or evaluate(stmt[2], roles)
    if op == "<=>":
        return evaluate(stmt[1], roles) == evaluate(stmt[2], roles)
    raise ValueError(f"unknown operator {op!r}")


def is_consistent(statements: tuple[Statement, ...] | list[Statement], roles: list[bool]) -> bool:
    """Every person's role agrees with the truth of their statement."""
    return all(bool(roles[i]) == evaluate(s, roles) for i, s in enumerate(statements))


def people_in(stmt: Statement) -> set[int]:
    """Indices of the people a statement mentions."""
    if stmt[0] in LEAVES:
        return {stmt[1]}
    out: set[int] = set()
    for sub in stmt[1:]:
        out |= people_in(sub)
    return out


def depth_of(stmt: Statement) -> int:
    """1 for a leaf, 1 + the deepest operand otherwise."""
    if stmt[0] in LEAVES:
        return 1
    return 1 + max(depth_of(s) for s in stmt[1:])


def validate_statement(stmt: Any, n: int, max_depth: int = 12) -> Statement:
    """Check the shape of a statement tree over n people and return it as nested tuples.

    Raises ValueError with a short description of the first problem found.
    """
    if max_depth <= 0:
        raise ValueError("statement nested too deeply")
    if not isinstance(stmt, (tuple, list)) or not stmt:
        raise ValueError(f"expected a tuple, got {stmt!r:.60}")
    op = stmt[0]
    if op in LEAVES:
        if len(stmt) != 2:
            raise ValueError(f"leaf {tuple(stmt)!r:.60} must have exactly one person index")
        i = stmt[1]
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
            raise ValueError(f"person index {i!r} out of range for {n} people")
        return (op, i)
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r:.30}")
    args = stmt[1:]
    if op == "not" and len(args) != 1:
        raise ValueError("'not' takes one operand")
    if op in ("->", "<=>") and len(args) != 2:
        raise ValueError(f"{op!r} takes two operands")
    if op in ("and", "or") and len(args) < 2:
        raise ValueError(f"{op!r} takes at least two operands")
    return (op, *(validate_statement(a, n, max_depth - 1) for a in args))


def parse_statements(text: Any, n: int | None = None) -> tuple[Statement, ...]:
    """Statements from the public files' Python-literal string (or an already parsed list).

    n: the number of people; defaults to the number of statements (one per person).
    Raises ValueError when the text is not a literal or a statement is malformed.
    """
    value = text
    if isinstance(text, str):
        if len(text) > 100_000:
            raise ValueError("statements string is implausibly long")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise ValueError(f"not a Python literal ({type(exc).__name__})") from None
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError("expected a non-empty tuple of statements, one per person")
    n = len(value) if n is None else n
    if len(value) != n:
        raise ValueError(f"{len(value)} statements for {n} people")
    if n > MAX_PEOPLE:
        raise ValueError(f"{n} people; at most {MAX_PEOPLE} are supported")
    return tuple(validate_statement(s, n) for s in value)
