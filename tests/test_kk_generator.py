"""Knights-and-Knaves generator and English rendering: uniqueness, determinism, split hygiene, shape."""

from __future__ import annotations

import pytest

from aha.cli import main
from aha.errors import AhaError
from aha.tasks.knights_knaves import render
from aha.tasks.knights_knaves.generator import generate_puzzles, generate_split, parse_mix, parse_people
from aha.tasks.knights_knaves.logic import count_solutions, depth_of, is_consistent, people_in


def _operators(stmt):
    """Every (operator, operand count) in a tree."""
    if stmt[0] in ("telling-truth", "lying"):
        return [("leaf", 0)]
    out = [(stmt[0], len(stmt) - 1)]
    for sub in stmt[1:]:
        out += _operators(sub)
    return out


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8])
def test_every_generated_puzzle_has_exactly_one_solution(n):
    puzzles = generate_puzzles(n, 150, seed=11)
    assert len(puzzles) == 150
    for p in puzzles:
        assert count_solutions(p.statements) == 1
        assert is_consistent(p.statements, list(p.solution))
        assert len(set(p.names)) == n and set(p.names) <= set(render.NAMES)
        assert p.answer.count("\n") == n - 1 and p.bucket == f"{n}ppl"
    assert len({p.statements for p in puzzles}) == len(puzzles)  # no duplicate statement sets
    assert len({p.id for p in puzzles}) == len(puzzles)


def test_public_shape_by_default_one_operator_over_leaves():
    for p in generate_puzzles(5, 200, seed=1):
        for i, stmt in enumerate(p.statements):
            assert depth_of(stmt) <= 2
            assert stmt != ("lying", i)  # "I am a knave" is never drawn
            assert all(k <= 2 for _, k in _operators(stmt))


def test_depth_and_width_are_respected_and_used():
    puzzles = generate_puzzles(4, 200, seed=2, depth=3, width=3)
    depths = [depth_of(s) for p in puzzles for s in p.statements]
    widths = [k for p in puzzles for s in p.statements for op, k in _operators(s) if op in ("and", "or")]
    assert max(depths) == 3 and max(widths) == 3
    for p in puzzles:
        assert count_solutions(p.statements) == 1


def test_statement_mix_limits_the_operators():
    # only leaves and "and": no other operator may appear
    puzzles = generate_puzzles(3, 50, seed=0, mix="leaf=1,and=1")
    ops = {op for p in puzzles for s in p.statements for op, _ in _operators(s)}
    assert ops == {"leaf", "and"}


def test_same_seed_same_puzzles_and_prefix_property():
    a = generate_puzzles(4, 60, seed=5)
    b = generate_puzzles(4, 60, seed=5)
    assert [(p.names, p.statements, p.quiz) for p in a] == [(p.names, p.statements, p.quiz) for p in b]
    # a smaller count is a prefix of a larger one; another seed gives other puzzles
    assert [p.id for p in generate_puzzles(4, 20, seed=5)] == [p.id for p in a[:20]]
    assert not {p.statements for p in generate_puzzles(4, 60, seed=6)} >= {p.statements for p in a}


def test_train_excludes_test_statement_sets():
    train, _ = generate_split("2-3", 300, seed=0, split="train", test_count=100)
    test, _ = generate_split("2-3", 100, seed=0, split="test")
    assert {p.statements for p in train}.isdisjoint({p.statements for p in test})
    # sizes are interleaved round-robin so any prefix mixes them
    assert [p.n for p in test[:4]] == [2, 3, 2, 3]


def test_small_puzzle_space_is_reported_not_looped_on():
    # 2 people with depth 2 allow only a few hundred distinct uniquely solvable statement sets
    puzzles, made = generate_split("2", 5000, seed=0, split="train", test_count=100)
    assert made[2] == len(puzzles) < 500


def test_fill_repeats_statement_sets_under_fresh_names_on_train_only():
    distinct = generate_puzzles(2, 10_000, seed=3)  # the whole 2-person space (a few hundred sets)
    filled = generate_puzzles(2, len(distinct) + 50, seed=3, fill=True)
    # the distinct prefix is unchanged by fill, then the sets repeat in order under new names
    assert [p.id for p in filled[:len(distinct)]] == [p.id for p in distinct]
    extra = filled[len(distinct):]
    assert len(extra) == 50 and all(p.extra["repeat"] for p in extra)
    assert [p.statements for p in extra] == [p.statements for p in distinct[:50]]
    assert [p.solution for p in extra] == [p.solution for p in distinct[:50]]
    assert len({p.id for p in filled}) == len(filled)  # ids stay unique ("-r<index>")
    assert sum(p.names != q.names for p, q in zip(extra, distinct)) > 25  # names are drawn again
    # through generate_split: sizes balanced, test untouched and still disjoint, counts report distinct sets
    train, made = generate_split("2-3", 600, seed=3, test_count=100, fill=True)
    test, _ = generate_split("2-3", 100, seed=3, split="test", test_count=100, fill=True)
    assert sum(p.n == 2 for p in train) == 600 and sum(p.n == 3 for p in train) == 600
    assert made[2] < 600 and made[3] == 600
    assert not {p.statements for p in train} & {p.statements for p in test}
    assert not any(p.extra.get("repeat") for p in test)


def test_same_seed_gives_identical_files(tmp_path, capsys):
    for name in ("a.jsonl", "b.jsonl", "a.parquet", "b.parquet"):
        args = ["data", "knights-knaves", "--people", "2-4", "--count", "20", "--seed", "3",
                "--traces", "reflective", "--out", str(tmp_path / name)]
        assert main(args) == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert "wrote 60 puzzles" in capsys.readouterr().out


def test_render_statements_and_quiz():
    names = ["Ada", "Ben", "Cyd"]
    cases = [
        (("telling-truth", 1), "Ben is a knight"),
        (("not", ("lying", 2)), "Cyd is not a knave"),
        (("or", ("lying", 0), ("telling-truth", 1), ("lying", 2)),
         "Ada is a knave or Ben is a knight or Cyd is a knave"),
        (("->", ("telling-truth", 0), ("lying", 1)), "if Ada is a knight then Ben is a knave"),
        (("<=>", ("telling-truth", 0), ("lying", 0)), "Ada is a knight if and only if Ada is a knave"),
        # compound operands are bracketed so deeper trees read unambiguously
        (("and", ("or", ("lying", 0), ("lying", 1)), ("telling-truth", 2)),
         "(Ada is a knave or Ben is a knave) and Cyd is a knight"),
        (("not", ("and", ("lying", 0), ("lying", 1))),
         "it is false that (Ada is a knave and Ben is a knave)"),
    ]
    for stmt, text in cases:
        assert render.statement_text(stmt, names) == text
    quiz = render.quiz_text(names, (("telling-truth", 1), ("lying", 0), ("lying", 1)), [0, 4, 5])
    assert quiz == (f"{render.INTRO} You meet 3 inhabitants: Ada, Ben and Cyd. "
                    'Ada says that Ben is a knight. "Ada is a knave," says Ben. '
                    "According to Cyd, Ben is a knave. "
                    "Who is a knight and who is a knave?")
    assert render.solution_text(names, [True, False, True]) == \
        "Ada is a knight, Ben is a knave, and Cyd is a knight."
    assert render.solution_text_format(names[:2], [False, True]) == "(1) Ada is a knave\n(2) Ben is a knight"


def test_statements_mention_only_puzzle_people():
    for p in generate_puzzles(6, 50, seed=4, depth=3, width=3):
        for stmt in p.statements:
            assert people_in(stmt) <= set(range(6))


@pytest.mark.parametrize("spec, sizes", [
    ("3", [3]),
    ("2-5", [2, 3, 4, 5]),
    ("2,4,6", [2, 4, 6]),
    ("2-3,8", [2, 3, 8]),
    (4, [4]),
])
def test_parse_people(spec, sizes):
    assert parse_people(spec) == sizes


@pytest.mark.parametrize("spec", ["1", "x", "2-40", ""])
def test_parse_people_rejects_bad_specs(spec):
    with pytest.raises(AhaError):
        parse_people(spec)


def test_parse_mix():
    assert parse_mix(None) == {k: 1.0 for k in ("leaf", "not", "and", "or", "->", "<=>")}
    # aliases: imp -> "->", iff -> "<=>"; unnamed kinds get 0
    assert parse_mix("leaf=2, imp=1, iff=0.5") == {"leaf": 2.0, "not": 0.0, "and": 0.0, "or": 0.0, "->": 1.0,
                                                  "<=>": 0.5}
    for bad in ("xor=1", "leaf", "leaf=-1", "leaf=0"):
        with pytest.raises(AhaError):
            parse_mix(bad)
