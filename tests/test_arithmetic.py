"""The offline arithmetic generator: levels, exact traces, seeding, split hygiene, verifier, CLI."""

from __future__ import annotations

import json
import random
import re
from fractions import Fraction

import pytest

from aha.cli import main
from aha.errors import AhaError
from aha.tasks import get_task
from aha.tasks.formatting import check_think_answer, last_answer_block, think_content
from aha.tasks.math.arithmetic import LEVELS, ArithmeticTask, generate, parse_levels

_STEP = re.compile(r"^(-?\d+) ([-+*/]) \(?(-?\d+)\)? = (-?\d+)\.$")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
        "/": lambda a, b: Fraction(a, b)}


def _value(expression: str) -> Fraction:
    # an independent evaluator for the generated expressions (integers, + - * /, parentheses), with
    # exact fractions so that a division that is not exact would show up
    tokens = re.findall(r"\d+|[-+*/()]", expression)
    pos = 0

    def atom() -> Fraction:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            v = expr()
            pos += 1  # ")"
            return v
        return Fraction(int(tok))

    def term() -> Fraction:
        nonlocal pos
        v = atom()
        while pos < len(tokens) and tokens[pos] in "*/":
            op = tokens[pos]
            pos += 1
            v = _OPS[op](v, atom())
        return v

    def expr() -> Fraction:
        nonlocal pos
        v = term()
        while pos < len(tokens) and tokens[pos] in "+-":
            op = tokens[pos]
            pos += 1
            v = _OPS[op](v, term())
        return v

    return expr()


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_levels_follow_their_spec(level):
    spec = LEVELS[level]
    rng = random.Random(level)
    for _ in range(200):
        p = generate(rng, level, self_check=0.5)
        assert _value(p.expression) == p.answer  # the answer is the expression's exact value
        assert sum(p.expression.count(op) for op in " + , - , * , / ".split(",")) == spec.ops
        assert set(re.findall(r"[-+*/]", p.expression)) <= set(spec.symbols)
        if not spec.negatives:
            assert p.answer >= 0
        assert abs(p.answer) <= spec.cap


def test_trace_steps_are_correct_arithmetic():
    rng = random.Random(0)
    for level in range(1, 6):
        for _ in range(100):
            p = generate(rng, level, self_check=0.5)
            assert check_think_answer(p.trace).ok
            assert last_answer_block(p.trace) == str(p.answer)
            steps = [s.strip() + "." for s in think_content(p.trace).split(".") if s.strip()]
            computed = 0
            for step in steps:
                body = step.split(": ", 1)[1] if ":" in step else step  # a check line: "Check: 68 / 2 = 34."
                m = _STEP.match(body)
                assert m, step
                a, op, b, v = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
                assert _OPS[op](a, b) == v, step
                computed += ":" not in step
            assert computed == p.steps  # one step per operation, checks on top


KNOWN = [
    # (level, question, answer, trace) of the first problem of seed 0 with every step checked;
    # worked by hand: 25 * 6 = 150, 55 + 150 = 205
    ("3", "What is 55 + 25 * 6?", "205",
     "<think>25 * 6 = 150. Check: 150 / 6 = 25. 55 + 150 = 205. Check: 205 - 150 = 55.</think><answer>205</answer>"),
    # 46 / 23 = 2, 506 - 449 = 57, 2 - 57 = -55, 436 - (-55) = 491
    ("5", "What is 436 - (46 / 23 - (506 - 449))?", "491",
     "<think>46 / 23 = 2. Verify: 2 * 23 = 46. 506 - 449 = 57. Double-check: 57 + 449 = 506. 2 - 57 = -55. "
     "Double-check: -55 + 57 = 2. 436 - (-55) = 491. Double-check: 491 + (-55) = 436.</think><answer>491</answer>"),
]


@pytest.mark.parametrize("level, question, answer, trace", KNOWN)
def test_known_problems(level, question, answer, trace):
    task = ArithmeticTask(levels=level, train_size=1, test_size=0, seed=0, self_check=1.0)
    (ex,) = task.examples("train")
    assert (ex.prompt[-1]["content"], ex.answer, ex.meta["trace"]) == (question, answer, trace)
    assert ex.meta["bucket"] == f"level {level}" and ex.meta["level"] == int(level)
    assert ex.prompt[0]["role"] == "system" and "<answer>" in ex.prompt[0]["content"]


def test_seeded_and_deterministic():
    a = [(e.id, e.prompt, e.answer, e.meta) for e in ArithmeticTask(train_size=50, seed=7).examples("train")]
    b = [(e.id, e.prompt, e.answer, e.meta) for e in ArithmeticTask(train_size=50, seed=7).examples("train")]
    c = [e.prompt for e in ArithmeticTask(train_size=50, seed=8).examples("train")]
    assert a == b
    assert [x[1] for x in a] != c


def test_train_and_test_never_overlap_and_levels_balance():
    task = ArithmeticTask(levels="1-5", train_size=3000, test_size=300, seed=1)
    train = list(task.examples("train"))
    test = list(task.examples("test"))
    questions = lambda exs: {e.prompt[-1]["content"] for e in exs}  # noqa: E731
    assert not questions(train) & questions(test)
    # even for a different seed: the split of an expression does not depend on it
    other = ArithmeticTask(levels="1-5", train_size=0, test_size=300, seed=2)
    assert not questions(train) & questions(other.examples("test"))
    assert [sum(e.meta["level"] == k for e in test) for k in range(1, 6)] == [60] * 5
    assert len({e.id for e in train}) == len(train)


def test_self_check_adds_checks():
    plain = ArithmeticTask(train_size=100, seed=0)
    checked = ArithmeticTask(train_size=100, seed=0, self_check=1.0)
    assert not any("Check" in e.meta["trace"] for e in plain.examples("train"))
    traces = [e.meta["trace"] for e in checked.examples("train")]
    assert all(re.search(r"(Check|Verify|Double-check): ", t) for t in traces)


VERDICTS = [
    # (completion, correct, format_ok) for the reference answer 80
    ("<think>34 * 2 = 68. 12 + 68 = 80.</think><answer>80</answer>", True, True),  # the trained format
    ("<answer> 80 </answer>", True, True),  # spaces inside the block
    ("\\boxed{80}", True, True),  # a box is the fallback extractor
    ("<answer>80.0</answer>", True, True),  # same number
    ("<answer>81</answer>", False, True),  # wrong number
    ("<answer>eighty</answer>", False, True),  # words are not compared as numbers
    ("<think>12 + 68 = 80.", False, False),  # cut off before the answer
]


@pytest.mark.parametrize("completion, correct, format_ok", VERDICTS)
def test_verify(completion, correct, format_ok):
    task = ArithmeticTask(train_size=1, test_size=0)
    (ex,) = task.examples("train")
    ex = type(ex)(id=ex.id, prompt=ex.prompt, answer="80", meta=ex.meta)
    verdict = task.verify(completion, ex)
    assert (verdict.correct, verdict.format_ok) == (correct, format_ok), verdict


def test_every_trace_verifies():
    task = get_task("arithmetic", train_size=200, test_size=0, seed=3, self_check=0.3)
    assert all(task.verify(e.meta["trace"], e).correct for e in task.examples("train"))


def test_corpus():
    texts = list(ArithmeticTask(seed=0).corpus(20, seed=5))
    assert len(texts) == 20
    assert texts == list(ArithmeticTask(seed=0).corpus(20, seed=5))
    assert texts[0].startswith("Compute the value") and all("<answer>" in t for t in texts)


LEVEL_SPECS = [
    ("1-5", [1, 2, 3, 4, 5]),  # a range
    ("2,4", [2, 4]),  # a list
    ("1-2,5", [1, 2, 5]),  # both
    (3, [3]),  # an int
    ([5, 1], [1, 5]),  # a list of ints, sorted
]


@pytest.mark.parametrize("spec, levels", LEVEL_SPECS)
def test_parse_levels(spec, levels):
    assert parse_levels(spec) == levels


@pytest.mark.parametrize("spec", ["0-5", "6", "a-b", ""])
def test_parse_levels_rejects(spec):
    with pytest.raises(AhaError, match="levels"):
        parse_levels(spec)


def test_unknown_split():
    with pytest.raises(AhaError, match="splits 'train' and 'test'"):
        list(ArithmeticTask().examples("dev"))


def test_cli(tmp_path, capsys):
    out = tmp_path / "arith.jsonl"
    assert main(["data", "arithmetic", "--levels", "4-5", "--count", "10", "--seed", "2", "--self-check", "0.5",
                 "--out", str(out)]) == 0
    assert "wrote 10 arithmetic problems" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["level"] for r in rows] == [4, 5] * 5
    for r in rows:
        assert _value(r["question"].removeprefix("What is ").removesuffix("?")) == int(r["answer"])
        assert r["trace"].endswith(f"<answer>{r['answer']}</answer>")
    # the same command writes the same file
    again = tmp_path / "again.jsonl"
    main(["data", "arithmetic", "--levels", "4-5", "--count", "10", "--seed", "2", "--self-check", "0.5",
          "--out", str(again)])
    assert again.read_text() == out.read_text()
