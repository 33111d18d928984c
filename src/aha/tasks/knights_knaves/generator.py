"""Seeded, deterministic generation of Knights-and-Knaves puzzles with exactly one solution.

Each person says one statement. A statement of depth d is a leaf ("X is a knight/knave") or, for
d >= 2, an operator drawn from the statement-type mix (not / and / or / if-then / iff) over
operands of depth d-1; and/or take 2..width distinct operands. depth=2, width=2 is the public
dataset's shape (one operator over leaves). As in the public generator, the leaf "I am a knave" is
never drawn (it has no consistent reading).

A puzzle is kept only when the exact solver finds exactly one solution and its statement set is new
(not seen earlier in the split, nor in the `exclude` set; the train split passes the test split's
statement sets there). Every draw comes from one numpy PCG64 stream keyed by
(seed, split, people, depth, width), so a size's puzzles do not depend on which other sizes are
generated alongside, and a smaller count yields a prefix of a larger one.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from aha.errors import AhaError
from aha.tasks.knights_knaves import render
from aha.tasks.knights_knaves.logic import MAX_PEOPLE, Statement, solutions_mask
from aha.tasks.knights_knaves.puzzle import Puzzle, puzzle_id

STATEMENT_KINDS = ("leaf", "not", "and", "or", "->", "<=>")
_KIND_ALIASES = {"imp": "->", "if": "->", "implies": "->", "iff": "<=>", "leaf": "leaf", "not": "not",
                 "and": "and", "or": "or", "->": "->", "<=>": "<=>"}
# the public generator draws the six kinds uniformly
DEFAULT_MIX = {kind: 1.0 for kind in STATEMENT_KINDS}
SPLIT_CODES = {"train": 0, "test": 1, "val": 1, "validation": 1}
# consecutive rejected candidates after which a size's puzzle space counts as exhausted
MAX_CONSECUTIVE_FAILURES = 20_000


def parse_mix(mix: str | Mapping[str, float] | None) -> dict[str, float]:
    """Statement-type weights from a mapping or a string "leaf=1,not=1,and=2,or=2,imp=1,iff=1".

    Kinds: leaf, not, and, or, -> (alias imp, if), <=> (alias iff). Missing kinds get weight 0 when any
    kind is given; None gives the public uniform mix.
    """
    if mix is None:
        return dict(DEFAULT_MIX)
    items: Iterable[tuple[str, Any]]
    if isinstance(mix, str):
        pairs = []
        for part in mix.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise AhaError(f"statement mix entry {part!r} must look like kind=weight")
            pairs.append((key.strip(), value.strip()))
        items = pairs
    else:
        items = mix.items()
    out = {kind: 0.0 for kind in STATEMENT_KINDS}
    for key, value in items:
        kind = _KIND_ALIASES.get(str(key).strip().lower())
        if kind is None:
            raise AhaError(f"unknown statement kind {key!r} in the mix; use {', '.join(STATEMENT_KINDS)}")
        try:
            weight = float(value)
        except (TypeError, ValueError):
            raise AhaError(f"weight of {key!r} in the statement mix must be a number, "
                           f"got {value!r}") from None
        if weight < 0:
            raise AhaError(f"weight of {key!r} in the statement mix must be >= 0")
        out[kind] = weight
    if sum(out.values()) <= 0:
        raise AhaError("the statement mix has no positive weight")
    return out


def parse_people(spec: str | int | Iterable[int]) -> list[int]:
    """People counts from "3", "2-8", "2,4,6" (or an int / list). Each must be 2..MAX_PEOPLE."""
    if isinstance(spec, int):
        sizes = [spec]
    elif isinstance(spec, str):
        sizes = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            try:
                if sep:
                    sizes.extend(range(int(lo), int(hi) + 1))
                else:
                    sizes.append(int(part))
            except ValueError:
                raise AhaError(f"people must look like '3', '2-8' or '2,4,6', got {spec!r}") from None
    else:
        sizes = [int(x) for x in spec]
    if not sizes:
        raise AhaError(f"no people counts in {spec!r}")
    for n in sizes:
        if not 2 <= n <= MAX_PEOPLE:
            raise AhaError(f"people counts must be between 2 and {MAX_PEOPLE}, got {n}")
    return sorted(set(sizes))


def split_code(split: str) -> int:
    """Stream key of a split: train and test are fixed; other names hash to their own stream."""
    return SPLIT_CODES.get(split, zlib.crc32(split.encode("utf-8")) + 2)


class _Draws:
    """Uniform draws served from blocks of a numpy PCG64 stream (one numpy call per 4096 draws)."""

    def __init__(self, key: list[int]):
        self._rng = np.random.default_rng(key)
        self._buf: list[float] = []
        self._pos = 0

    def uniform(self) -> float:
        if self._pos >= len(self._buf):
            self._buf = self._rng.random(4096).tolist()
            self._pos = 0
        u = self._buf[self._pos]
        self._pos += 1
        return u

    def below(self, k: int) -> int:
        """An integer in [0, k)."""
        return int(self.uniform() * k)


class StatementSampler:
    """Draws statement trees for one puzzle size.

    n: people; depth: maximum tree depth (1 = leaves only, 2 = one operator over leaves);
    width: maximum operands of and/or (>= 2); mix: statement-type weights (see `parse_mix`).
    """

    def __init__(self, n: int, depth: int, width: int, mix: Mapping[str, float], draws: _Draws):
        if depth < 1:
            raise AhaError(f"depth must be >= 1, got {depth}")
        if width < 2:
            raise AhaError(f"width must be >= 2, got {width}")
        self.n, self.depth, self.width, self.draws = n, depth, width, draws
        weights = [float(mix.get(k, 0.0)) for k in STATEMENT_KINDS]
        if weights[0] <= 0 and depth == 1:
            raise AhaError("depth 1 allows only leaf statements, but the mix gives leaves no weight")
        total = sum(weights)
        self._cum = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self._cum.append(acc)

    def _kind(self) -> str:
        u = self.draws.uniform()
        for kind, edge in zip(STATEMENT_KINDS, self._cum):
            if u < edge:
                return kind
        return STATEMENT_KINDS[-1]

    def leaf(self, speaker: int) -> Statement:
        while True:
            j = self.draws.below(self.n)
            knight = self.draws.below(2) == 0
            if knight or j != speaker:  # "I am a knave" is a paradox, never drawn
                return ("telling-truth" if knight else "lying", j)

    def statement(self, speaker: int, depth: int | None = None) -> Statement:
        depth = self.depth if depth is None else depth
        while True:
            kind = "leaf" if depth <= 1 else self._kind()
            if kind == "leaf":
                return self.leaf(speaker)
            if kind == "not":
                sub = self.statement(speaker, depth - 1)
                if sub[0] == "not":  # a double negation says nothing new; draw again
                    continue
                return ("not", sub)
            k = 2 if kind in ("->", "<=>") else 2 + self.draws.below(self.width - 1)
            subs: list[Statement] = []
            for _ in range(8 * k):
                sub = self.statement(speaker, depth - 1)
                if sub not in subs:
                    subs.append(sub)
                    if len(subs) == k:
                        break
            if len(subs) >= 2:
                return (kind, *subs)


def generate_puzzles(n_people: int, count: int, seed: int = 0, split: str = "train", depth: int = 2,
                     width: int = 2, mix: str | Mapping[str, float] | None = None,
                     exclude: set[tuple[Statement, ...]] | frozenset | None = None,
                     names: tuple[str, ...] = render.NAMES, fill: bool = False) -> list[Puzzle]:
    """Up to `count` distinct puzzles with `n_people` people and exactly one solution each.

    n_people: people per puzzle (2..MAX_PEOPLE; 2..8 is the tested range).
    count: puzzles wanted; fewer come back when the statement-set space is exhausted (small puzzles:
        2 people with depth 2 allow only a few hundred distinct uniquely solvable statement sets).
    seed, split: the stream key (with n_people, depth, width); train and test use different streams.
    depth, width, mix: statement shape (see `StatementSampler`, `parse_mix`).
    exclude: statement sets that must not be produced (e.g. the test split's, when making train).
    names: the pool names are drawn from without replacement.
    fill: when the statement-set space runs out before `count`, go on with the sets already drawn,
        cycling through them in order, each time under freshly drawn names and speech forms; those
        puzzles repeat a structure (never one that `exclude` holds) and get ids ending in "-r<index>".
        Keeps the sizes of a mixed training set balanced when a small size's space is tiny.
    """
    if not 2 <= n_people <= MAX_PEOPLE:
        raise AhaError(f"people must be between 2 and {MAX_PEOPLE}, got {n_people}")
    if len(names) < n_people:
        raise AhaError(f"the name pool has {len(names)} names, fewer than {n_people} people")
    weights = parse_mix(mix)
    draws = _Draws([seed & 0xFFFFFFFF, split_code(split), n_people, depth, width])
    sampler = StatementSampler(n_people, depth, width, weights, draws)
    excluded = exclude or frozenset()
    seen: set[tuple[Statement, ...]] = set()
    out: list[Puzzle] = []
    failures = 0
    pool = list(names)
    while len(out) < count and failures < MAX_CONSECUTIVE_FAILURES:
        statements = tuple(sampler.statement(i) for i in range(n_people))
        if statements in seen or statements in excluded:
            failures += 1
            continue
        mask = solutions_mask(statements)
        if mask == 0 or mask & (mask - 1):  # not exactly one solution
            failures += 1
            continue
        failures = 0
        seen.add(statements)
        k = mask.bit_length() - 1
        solution = tuple(bool((k >> i) & 1) for i in range(n_people))
        out.append(_dress(statements, solution, pool, draws, len(out), depth, width, split, seed))
    distinct = len(out)
    while fill and distinct and len(out) < count:
        base = out[(len(out) - distinct) % distinct]
        out.append(_dress(base.statements, base.solution, pool, draws, len(out), depth, width, split, seed,
                          repeat=True))
    return out


def _dress(statements: tuple[Statement, ...], solution: tuple[bool, ...], pool: list[str], draws: _Draws,
           index: int, depth: int, width: int, split: str, seed: int, repeat: bool = False) -> Puzzle:
    """A Puzzle of a statement set under names and speech forms drawn now (`pool` is shuffled in place)."""
    n_people = len(statements)
    # names: a partial Fisher-Yates shuffle of the pool
    for i in range(n_people):
        j = i + draws.below(len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    chosen = tuple(pool[:n_people])
    templates = [draws.below(len(render.SPEECH_TEMPLATES)) for _ in range(n_people)]
    quiz = render.quiz_text(chosen, statements, templates)
    extra = {"index": index, "depth": depth, "width": width, "split": split, "seed": seed}
    puzzle_id_ = f"{puzzle_id(chosen, statements)}-r{index}" if repeat else ""
    if repeat:
        extra["repeat"] = True
    return Puzzle(names=chosen, statements=statements, solution=solution, quiz=quiz, id=puzzle_id_,
                  n_solutions=1, extra=extra)


def generate_split(people: str | int | Iterable[int], count: int, seed: int = 0, split: str = "train",
                   depth: int = 2, width: int = 2, mix: str | Mapping[str, float] | None = None,
                   test_count: int = 100, names: tuple[str, ...] = render.NAMES, fill: bool = False
                   ) -> tuple[list[Puzzle], dict[int, int]]:
    """Puzzles of several sizes, interleaved round-robin (so any prefix mixes the sizes).

    people: sizes ("2-8", "3", [2, 3]); count: puzzles per size.
    split: "train" excludes the statement sets of the test split (`test_count` per size, same seed,
        depth, width and mix), so generated train and test never share a puzzle; any other split is
        generated on its own stream.
    names: the name pool (the statements drawn do not depend on it).
    fill: train split only: a size whose space runs out is filled up to `count` with its statement
        sets under fresh names (see `generate_puzzles`).
    Returns (puzzles, {size: distinct statement sets generated}); a size whose space ran out has
    fewer than `count` (even when `fill` made up the number of puzzles).
    """
    if count < 0:
        raise AhaError(f"count must be >= 0, got {count}")
    per_size: list[list[Puzzle]] = []
    sizes = parse_people(people)
    for n in sizes:
        exclude: set[tuple[Statement, ...]] = set()
        if split == "train" and test_count > 0:
            exclude = {p.statements for p in generate_puzzles(n, test_count, seed, "test", depth, width, mix)}
        per_size.append(generate_puzzles(n, count, seed, split, depth, width, mix, exclude=exclude, names=names,
                                         fill=fill and split == "train"))
    out: list[Puzzle] = []
    for i in range(max((len(p) for p in per_size), default=0)):
        out.extend(p[i] for p in per_size if i < len(p))
    return out, {n: sum(1 for q in p if not q.extra.get("repeat")) for n, p in zip(sizes, per_size)}

