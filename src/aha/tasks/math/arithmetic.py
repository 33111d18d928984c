"""An offline arithmetic task: seeded integer expressions in five difficulty levels, with worked traces.

It exists so that the whole pipeline (tokenizer, SFT, GRPO, evaluation tables) can run on a CPU with
a ~1M-parameter model and no downloads. Level 1 is one addition or subtraction of small numbers;
each level adds steps, operators (`*`, then exact `/` and negative results) and bigger numbers:

    level  operations  operators   numbers    largest intermediate
      1        1         + -        0-50          100
      2        2         + -        1-50          200
      3        2         + - *      1-99          1,000
      4        3         + - * /    1-99          10,000
      5        4         + - * /    1-999         100,000

Every problem has a reference response in `meta["trace"]`, one short sentence per operation in
evaluation order, in the `<think>`/`<answer>` format:

    What is 12 + 34 * 2?
    <think>34 * 2 = 68. 12 + 68 = 80.</think><answer>80</answer>

With `self_check` > 0 some steps are followed by a check by the inverse operation
("Check: 68 / 2 = 34."), the smallest form of the reflection the seeds study. Train and test
problems never overlap: a hash of the expression assigns it to one of them, independently of seed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aha.errors import AhaError
from aha.tasks.base import TASKS, Example, Task, Verdict
from aha.tasks.math.equivalence import is_equivalent
from aha.tasks.math.extract import check_extractors, extract_answer

SYSTEM_PROMPT = (
    "Compute the value of the expression. Work it out one operation at a time inside <think> </think>, "
    "then write only the resulting number inside <answer> </answer>."
)
TEST_SHARE = 8  # one expression in TEST_SHARE belongs to the test split
_CHECK_WORDS = ("Check", "Verify", "Double-check")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


@dataclass(frozen=True)
class Level:
    """The knobs of one difficulty level."""

    ops: int  # operations per problem
    symbols: str  # operators that may appear
    lo: int  # smallest leaf number
    hi: int  # largest leaf number
    small: int  # largest factor or divisor
    cap: int  # largest |value| of any intermediate result
    negatives: bool  # results may be negative


LEVELS = {
    1: Level(1, "+-", 0, 50, 10, 100, False),
    2: Level(2, "+-", 1, 50, 10, 200, False),
    3: Level(2, "+-*", 1, 99, 12, 1_000, False),
    4: Level(3, "+-*/", 1, 99, 20, 10_000, True),
    5: Level(4, "+-*/", 1, 999, 50, 100_000, True),
}


def parse_levels(spec: str | int | list[int] | tuple[int, ...]) -> list[int]:
    """Levels from "1-5", "2,4", 3 or [1, 2]; raises AhaError for anything outside 1-5."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        levels = [spec]
    elif isinstance(spec, (list, tuple)):
        levels = [int(x) for x in spec]
    elif isinstance(spec, str):
        levels = []
        try:
            for part in spec.replace(" ", "").split(","):
                if "-" in part:
                    a, b = part.split("-", 1)
                    levels.extend(range(int(a), int(b) + 1))
                elif part:
                    levels.append(int(part))
        except ValueError as exc:
            raise AhaError(f"levels must look like '1-5' or '1,3', got {spec!r}") from exc
    else:
        raise AhaError(f"levels must look like '1-5' or '1,3', got {spec!r}")
    if not levels or any(level not in LEVELS for level in levels):
        raise AhaError(f"levels must be within 1-5, got {spec!r}")
    return sorted(set(levels))


class _Node:
    __slots__ = ("op", "left", "right", "value")

    def __init__(self, op: str | None = None, left: _Node | None = None, right: _Node | None = None,
                 value: int = 0):
        self.op, self.left, self.right, self.value = op, left, right, value


class _Retry(Exception):
    pass


def _shape(rng: random.Random, n_ops: int, spec: Level) -> _Node:
    if n_ops == 0:
        return _Node(value=rng.randint(spec.lo, spec.hi))
    k = rng.randint(0, n_ops - 1)
    return _Node(rng.choice(spec.symbols), _shape(rng, k, spec), _shape(rng, n_ops - 1 - k, spec))


def _evaluate(node: _Node, rng: random.Random, spec: Level) -> int:
    """Fix leaves bottom-up so that every operation is small enough and exact; set node values."""
    if node.op is None:
        return node.value
    assert node.left is not None and node.right is not None
    a = _evaluate(node.left, rng, spec)
    b = _evaluate(node.right, rng, spec)
    if node.op == "*":
        # keep one factor small so the product stays mental arithmetic
        if node.right.op is None and abs(b) > spec.small:
            node.right.value = b = rng.randint(2, spec.small)
        elif node.left.op is None and abs(a) > spec.small and abs(b) > spec.small:
            node.left.value = a = rng.randint(2, spec.small)
        value = a * b
    elif node.op == "/":
        if node.left.op is None and b != 0 and abs(b) <= spec.small:
            node.left.value = a = abs(b) * rng.randint(1, spec.small)  # dividend built from the divisor
        elif node.right.op is None:
            divisors = [d for d in range(2, spec.small + 1) if a % d == 0] or [1]
            node.right.value = b = rng.choice(divisors)
        if b == 0 or a % b != 0:
            raise _Retry
        value = a // b
    elif node.op == "+":
        value = a + b
    else:
        if a < b and not spec.negatives:
            node.left, node.right = node.right, node.left
            a, b = b, a
        value = a - b
    if abs(value) > spec.cap or (value < 0 and not spec.negatives):
        raise _Retry
    node.value = value
    return value


def _render(node: _Node, parent: str | None = None, right: bool = False) -> str:
    if node.op is None:
        return str(node.value)
    assert node.left is not None and node.right is not None
    text = f"{_render(node.left, node.op)} {node.op} {_render(node.right, node.op, True)}"
    if parent is not None:
        # a right operand of equal precedence keeps its parentheses even where they change nothing
        # ("a + (b + c)"): the trace computes it first, and a reader should see why
        if _PREC[node.op] < _PREC[parent] or (right and _PREC[node.op] == _PREC[parent]):
            text = f"({text})"
    return text


def _num(v: int) -> str:
    return f"({v})" if v < 0 else str(v)


_INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}


def _steps(node: _Node, rng: random.Random, self_check: float, out: list[str]) -> None:
    if node.op is None:
        return
    assert node.left is not None and node.right is not None
    _steps(node.left, rng, self_check, out)
    _steps(node.right, rng, self_check, out)
    a, b, v = node.left.value, node.right.value, node.value
    out.append(f"{a} {node.op} {_num(b)} = {v}.")
    if self_check > 0 and rng.random() < self_check and not (node.op == "*" and b == 0):
        word = rng.choice(_CHECK_WORDS)
        out.append(f"{word}: {v} {_INVERSE[node.op]} {_num(b)} = {a}.")


@dataclass(frozen=True)
class Problem:
    """One generated problem: the expression, its value, the worked trace and the level."""

    expression: str
    answer: int
    trace: str
    level: int
    steps: int


def generate(rng: random.Random, level: int, self_check: float = 0.0) -> Problem:
    """One problem of `level` (1-5) drawn with `rng`; `self_check` is the chance a step is checked."""
    spec = LEVELS[level]
    for _ in range(1000):
        tree = _shape(rng, spec.ops, spec)
        try:
            value = _evaluate(tree, rng, spec)
        except _Retry:
            continue
        steps: list[str] = []
        _steps(tree, rng, self_check, steps)
        trace = f"<think>{' '.join(steps)}</think><answer>{value}</answer>"
        return Problem(_render(tree), value, trace, level, spec.ops)
    raise RuntimeError(f"could not generate a level {level} problem")  # pragma: no cover - never seen


def _is_test(expression: str) -> bool:
    return hashlib.sha1(expression.encode()).digest()[0] % TEST_SHARE == 0


def _split_key(split: str) -> str:
    if split == "train":
        return "train"
    if split in ("test", "validation", "val", "eval"):
        return "test"
    raise AhaError(f"arithmetic has splits 'train' and 'test', not {split!r}")


@TASKS.register("arithmetic")
class ArithmeticTask(Task):
    """Generated integer arithmetic in five levels (see the module docstring).

    levels: which levels to draw ("1-5", "1,3", 2 or [1, 2]); problems cycle through them evenly.
    train_size, test_size: problems in each split.
    seed: the generator seed (the train/test assignment of an expression does not depend on it).
    self_check: chance (0-1) that a step of the trace is followed by an inverse-operation check.
    system_prompt: replaces the default system message; "" leaves it out.
    extract: answer extractors tried in order (default: the <answer> block, then a box).
    """

    name = "arithmetic"

    def __init__(self, levels: str | int | list[int] = "1-5", train_size: int = 10_000, test_size: int = 500,
                 seed: int = 0, self_check: float = 0.0, system_prompt: str | None = None,
                 extract: list[str] | tuple[str, ...] | str = ("answer_tag", "boxed")):
        self.levels = parse_levels(levels)
        if train_size < 0 or test_size < 0:
            raise AhaError("train_size and test_size must be >= 0")
        if not 0.0 <= self_check <= 1.0:
            raise AhaError("self_check must be in [0, 1]")
        self.sizes = {"train": int(train_size), "test": int(test_size)}
        self.seed = int(seed)
        self.self_check = float(self_check)
        self.system_prompt = SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.extract = check_extractors(extract)
        self._cache: dict[str, list[Example]] = {}

    def problems(self, split: str, count: int | None = None) -> Iterator[Problem]:
        """`count` distinct problems of a split (default: the split's size), in a seeded order."""
        key = _split_key(split)
        n = self.sizes[key] if count is None else count
        rng = random.Random(f"arithmetic:{self.seed}:{key}")
        seen: set[str] = set()
        for i in range(n):
            level = self.levels[i % len(self.levels)]
            first = None
            for _ in range(100):
                problem = generate(rng, level, self.self_check)
                if _is_test(problem.expression) != (key == "test"):
                    continue  # the other split's problem: never used here, so the splits stay disjoint
                first = first or problem
                if problem.expression not in seen:
                    break
            else:
                # a small level ran out of new expressions: repeat one of this split's own
                if first is None:  # pragma: no cover - needs 100 draws in a row from the other split
                    raise RuntimeError("arithmetic generator could not draw a problem for this split")
                problem = first
            seen.add(problem.expression)
            yield problem

    def make_example(self, problem: Problem, index: int) -> Example:
        digest = hashlib.sha1(problem.expression.encode()).hexdigest()[:10]
        prompt = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        prompt.append({"role": "user", "content": f"What is {problem.expression}?"})
        meta: dict[str, Any] = {"bucket": f"level {problem.level}", "level": problem.level,
                                "steps": problem.steps, "trace": problem.trace}
        return Example(id=f"L{problem.level}-{digest}-{index}", prompt=prompt, answer=str(problem.answer), meta=meta)

    def examples(self, split: str = "train") -> Iterator[Example]:
        key = _split_key(split)
        if key not in self._cache:
            self._cache[key] = [self.make_example(p, i) for i, p in enumerate(self.problems(key))]
        yield from self._cache[key]

    def verify(self, text: str, example: Example) -> Verdict:
        if not isinstance(text, str):
            return Verdict(error="completion is not text")
        try:
            found = extract_answer(text, self.extract)
            if found is None:
                return Verdict(error=f"no answer found (looked for: {', '.join(self.extract)})")
            pred, _ = found
            # numbers only: an integer reference never needs sympy, so no worker process is started
            eq = is_equivalent(example.answer, pred, symbolic=False)
            if eq.equal:
                return Verdict(parsed=pred, format_ok=True, correct=True, partial=1.0)
            return Verdict(parsed=pred, format_ok=True, error=f"wrong: expected {example.answer}")
        except Exception as exc:  # noqa: BLE001 - never raise on model output
            return Verdict(error=f"verifier error: {type(exc).__name__}")

    def corpus(self, n: int, seed: int = 0) -> Iterator[str]:
        """`n` fresh texts (question followed by its trace, some with checks) for tokenizer training."""
        rng = random.Random(f"arithmetic-corpus:{seed}")
        check = max(self.self_check, 0.25)  # so the tokenizer also learns the words of a check
        for i in range(n):
            problem = generate(rng, self.levels[i % len(self.levels)], check)
            prefix = f"{self.system_prompt}\n" if i == 0 and self.system_prompt else ""
            yield f"{prefix}What is {problem.expression}?\n{problem.trace}"
