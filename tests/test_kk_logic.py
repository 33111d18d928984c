"""Knights-and-Knaves statement logic: truth tables, the exact solver, statement parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from aha.tasks.knights_knaves.logic import (
    count_solutions,
    depth_of,
    evaluate,
    index_of,
    knight_masks,
    parse_statements,
    people_in,
    solve,
    truth_table,
)

FIXTURES = sorted(Path("/work/shared/data/kk").glob("*ppl_test.parquet"))


def test_knight_masks_match_the_bit_convention():
    # 2 people, assignments k = 0..3: person 0 is a knight in k = 1, 3 (bits 0b1010), person 1 in k = 2, 3
    assert knight_masks(2) == (0b1010, 0b1100)
    # 3 people: person 2 is a knight in k = 4..7
    assert knight_masks(3)[2] == 0b11110000


@pytest.mark.parametrize("stmt, table", [
    (("telling-truth", 0), 0b1010),                                    # knight(0)
    (("lying", 0), 0b0101),                                            # knave(0)
    (("not", ("telling-truth", 1)), 0b0011),                           # not knight(1)
    (("and", ("telling-truth", 0), ("telling-truth", 1)), 0b1000),     # only k = 3
    (("or", ("telling-truth", 0), ("telling-truth", 1)), 0b1110),      # all but k = 0
    (("->", ("telling-truth", 0), ("telling-truth", 1)), 0b1101),      # false at k = 1: 0 knight, 1 knave
    (("<=>", ("telling-truth", 0), ("telling-truth", 1)), 0b1001),     # equal roles: k = 0, 3
])
def test_truth_tables_of_each_operator(stmt, table):
    assert truth_table(stmt, 2) == table


@pytest.mark.parametrize("statements, solutions", [
    # A: "B is a knave"; B: "A and B are both knights" -> A knight, B knave only
    ((("lying", 1), ("and", ("telling-truth", 0), ("telling-truth", 1))), [[True, False]]),
    # A: "A is a knight"; B: "A is a knight": A free, B equals A -> two solutions
    ((("telling-truth", 0), ("telling-truth", 0)), [[False, False], [True, True]]),
    # A: "A is a knave and B is a knight"; B: "B is a knight" (true of either role). A knight would make
    # A's claim false; A knave needs the claim false, so B is a knave -> (knave, knave) only
    ((("and", ("lying", 0), ("telling-truth", 1)), ("telling-truth", 1)), [[False, False]]),
    # A: "A is a knave": a paradox, no solution
    ((("lying", 0), ("telling-truth", 0)), []),
])
def test_solver_on_hand_solved_puzzles(statements, solutions):
    assert solve(statements) == solutions
    assert count_solutions(statements) == len(solutions)


def test_eight_people_enumerate_256_assignments():
    # everyone says "I am a knight": every one of the 2**8 assignments is consistent
    statements = tuple(("telling-truth", i) for i in range(8))
    assert count_solutions(statements) == 256
    # person 0 says "everyone else is a knight", everyone else says "0 is a knave".
    # 0 knight: 1..7 are knights, yet their claim "0 is a knave" is false -> impossible.
    # 0 knave: the others' claim is true, so they are all knights, which makes 0's claim true -> impossible.
    everyone_else = ("and", *(("telling-truth", i) for i in range(1, 8)))
    statements = (everyone_else,) + tuple(("lying", 0) for _ in range(7))
    assert count_solutions(statements) == 0


def test_truth_table_agrees_with_direct_evaluation():
    stmt = ("or", ("and", ("lying", 0), ("telling-truth", 2)),
            ("<=>", ("telling-truth", 1), ("not", ("lying", 2))))
    table = truth_table(stmt, 3)
    for k in range(8):
        roles = [bool((k >> i) & 1) for i in range(3)]
        assert bool((table >> k) & 1) == evaluate(stmt, roles)
        assert index_of(roles) == k


def test_tree_helpers():
    stmt = ("and", ("telling-truth", 3), ("not", ("lying", 1)))
    assert people_in(stmt) == {1, 3}
    assert depth_of(stmt) == 3  # and -> not -> leaf
    assert depth_of(("lying", 0)) == 1


def test_parse_statements_reads_the_public_literal():
    text = ("(('not', ('telling-truth', 2)), ('or', ('telling-truth', 1), ('lying', 2)), "
            "('<=>', ('telling-truth', 1), ('lying', 1)))")
    parsed = parse_statements(text)
    assert parsed[0] == ("not", ("telling-truth", 2))
    assert solve(parsed) == [[True, True, False]]  # the fixture's Amelia / Penelope / Evelyn


@pytest.mark.parametrize("text, message", [
    ("(('telling-truth', 3), ('lying', 0))", "out of range"),          # index 3 with two people
    ("(('xor', ('lying', 0), ('lying', 1)), ('lying', 0))", "unknown operator"),
    ("(('not', ('lying', 0), ('lying', 1)), ('lying', 0))", "one operand"),
    ("(('and', ('lying', 1)), ('lying', 0))", "at least two"),
    ("__import__('os')", "not a Python literal"),                      # never evaluated
    ("()", "non-empty"),
])
def test_parse_statements_rejects_malformed_input(text, message):
    with pytest.raises(ValueError, match=message):
        parse_statements(text)


@pytest.mark.skipif(not FIXTURES, reason="fixture files not present")
def test_solver_reproduces_every_fixture_solution():
    import pyarrow.parquet as pq

    total = 0
    for path in FIXTURES:
        for row in pq.read_table(path, columns=["statements", "solution"]).to_pylist():
            statements = parse_statements(row["statements"])
            assert solve(statements) == [list(row["solution"])], path
            total += 1
    assert total == 100 * len(FIXTURES)
