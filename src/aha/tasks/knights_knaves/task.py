"""The "knights-knaves" task: puzzles from files or the generator, Logic-RL's answer contract.

Prompt: a system message (`SYSTEM_PROMPT`, our wording of Logic-RL's contract: reason inside
`<think> </think>`, then answer inside `<answer> </answer>` with one numbered line per person,
`(1) Name is a knight`) and the quiz as the user message. With `think_preopened=True` the trainer
appends `<think>` to the rendered prompt (Logic-RL's template does), the teacher traces then start
with the reasoning itself, and the verifier expects no second `<think>`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from aha.errors import AhaError
from aha.tasks.base import TASKS, Example, Task, Verdict
from aha.tasks.knights_knaves import render
from aha.tasks.knights_knaves.generator import generate_split, parse_mix, parse_people
from aha.tasks.knights_knaves.loader import load_puzzles, parse_answer_lines
from aha.tasks.knights_knaves.puzzle import Puzzle
from aha.tasks.knights_knaves.traces import TRACE_STYLES, make_trace
from aha.tasks.knights_knaves.verifier import verify_answer

SYSTEM_PROMPT = (
    "You solve logic puzzles. Think the puzzle through step by step inside <think> </think> tags, "
    "then give your final answer inside <answer> </answer> tags: one numbered line per person, in the "
    "order the puzzle introduces them, saying whether they are a knight or a knave, for example "
    "<answer>(1) Zoe is a knight\n(2) Max is a knave</answer>."
)

TEST_SPLITS = ("test", "val", "validation", "eval")


@TASKS.register("knights-knaves")
class KnightsKnavesTask(Task):
    """Knights-and-Knaves puzzles.

    data: puzzle files (JSONL or parquet: public K&K, Logic-RL preprocessed, or `aha data` output).
        With files, the "train" split is these files; without, puzzles are generated.
    test_data: files for the test/validation splits; when absent the test split is `data` (if given)
        or a generated test split disjoint from the generated train split.
    people: puzzle sizes to generate ("2-3", "3", "2,4,6").
    count: generated train puzzles per size (fewer if a size's puzzle space runs out, as for 2 people).
    test_count: generated test puzzles per size; the train split excludes their statement sets.
    seed: generation seed (train and test use different streams of it).
    depth, width, mix: statement shape (see `generator`): depth 2 / width 2 / uniform mix is the
        public dataset's shape.
    trace_style: teacher trace in `meta["trace"]`: "reflective", "direct", or "none".
    trace_restate: teacher traces write each claim out where they use it (see `traces.make_trace`).
    think_preopened: the assistant turn starts with `<think>` (rendered by the trainer).
    name_pool: draw names from the first N names of the pool only (0 = all 48); with quiz_style
        "plain" this gives the terse puzzles a very small model can learn in minutes.
    quiz_style: "full" (introduction, eight speech forms, closing question) or "plain" (one
        "X says that ..." sentence per person) for generated puzzles.
    fill: when a size's puzzle space runs out before `count` (2 people: about 400 statement sets
        in all at depth 2), fill its train split up to `count` with the same statement sets under
        fresh names, so the sizes stay balanced; the test split stays distinct and disjoint.
    system_prompt: replaces `SYSTEM_PROMPT`; an empty string drops the system message.
    """

    name = "knights-knaves"

    def __init__(self, data: list[str] | str | None = None, people: str | int = "2-3", count: int = 1000,
                 seed: int = 0, trace_style: str | None = "reflective", think_preopened: bool = False,
                 system_prompt: str | None = None, depth: int = 2, width: int = 2,
                 mix: str | Mapping[str, float] | None = None, test_count: int = 100,
                 test_data: list[str] | str | None = None, trace_restate: bool = False, name_pool: int = 0,
                 quiz_style: str = "full", fill: bool = False):
        self.data = [data] if isinstance(data, (str, Path)) else list(data or [])
        self.test_data = [test_data] if isinstance(test_data, (str, Path)) else list(test_data or [])
        self.people = parse_people(people)
        if count < 0 or test_count < 0:
            raise AhaError("count and test_count must be >= 0")
        self.count, self.test_count, self.seed = int(count), int(test_count), int(seed)
        if depth < 1 or width < 2:
            raise AhaError(f"depth must be >= 1 and width >= 2, got depth {depth}, width {width}")
        self.depth, self.width = int(depth), int(width)
        self.mix = parse_mix(mix)
        style = None if trace_style in (None, "none", "") else trace_style
        if style is not None and style not in TRACE_STYLES:
            raise AhaError(f"trace_style must be one of {', '.join(TRACE_STYLES)} or none, "
                           f"got {trace_style!r}")
        self.trace_style = style
        self.trace_restate = bool(trace_restate)
        if quiz_style not in ("full", "plain"):
            raise AhaError(f"quiz_style must be 'full' or 'plain', got {quiz_style!r}")
        self.quiz_style = quiz_style
        self.fill = bool(fill)
        max_people = max(self.people) if self.people else 2
        if name_pool and not max_people <= name_pool <= len(render.NAMES):
            raise AhaError(f"name_pool must be between {max_people} (the most people) and {len(render.NAMES)}, "
                           f"got {name_pool}")
        self.names = render.NAMES[:name_pool] if name_pool else render.NAMES
        self.think_preopened = bool(think_preopened)
        self.system_prompt = SYSTEM_PROMPT if system_prompt is None else system_prompt
        self._cache: dict[str, list[Example]] = {}

    # ------------------------------------------------------------------ examples
    def puzzles(self, split: str = "train") -> list[Puzzle]:
        """The puzzles of a split (files or generated)."""
        is_test = split in TEST_SPLITS
        files = self.test_data if is_test and self.test_data else self.data
        if files:
            return load_puzzles(files)
        gen_split = "test" if is_test else split
        count = self.test_count if is_test else self.count
        puzzles, made = generate_split(self.people, count, self.seed, gen_split, self.depth, self.width,
                                       self.mix, test_count=self.test_count, names=self.names, fill=self.fill)
        short = {n: k for n, k in made.items() if k < count}
        if short and not (self.fill and not is_test):
            warnings.warn(f"knights-knaves: only {short} distinct puzzles exist for these sizes "
                          f"(asked for {count} per size); raise depth or width for more", stacklevel=2)
        return puzzles

    def example(self, puzzle: Puzzle) -> Example:
        """The Example of one puzzle (prompt messages, answer text, meta with the solution and trace)."""
        prompt = []
        if self.system_prompt:
            prompt.append({"role": "system", "content": self.system_prompt})
        quiz = puzzle.quiz
        if self.quiz_style == "plain" and not self.data:
            quiz = render.plain_quiz_text(puzzle.names, puzzle.statements)
        prompt.append({"role": "user", "content": quiz})
        meta: dict[str, Any] = {
            "bucket": puzzle.bucket,
            "n_people": puzzle.n,
            "names": list(puzzle.names),
            "solution": list(puzzle.solution),
            "statements": puzzle.statements,
            "n_solutions": puzzle.n_solutions,
        }
        if "index" in puzzle.extra:
            meta["index"] = puzzle.extra["index"]
        if self.trace_style and puzzle.n_solutions == 1:
            meta["trace"] = make_trace(puzzle.names, puzzle.statements, self.trace_style,
                                       self.think_preopened, self.trace_restate)
        return Example(id=puzzle.id, prompt=prompt, answer=puzzle.answer, meta=meta)

    def examples(self, split: str = "train") -> Iterator[Example]:
        if split not in self._cache:
            self._cache[split] = [self.example(p) for p in self.puzzles(split)]
        return iter(self._cache[split])

    def corpus(self, n: int, seed: int = 0) -> Iterator[str]:
        """Prompts and teacher traces of `n` fresh puzzles (sizes round-robin), for tokenizer training."""
        per_size = -(-n // len(self.people))
        puzzles, _ = generate_split(self.people, per_size, seed, "corpus", self.depth, self.width, self.mix,
                                    names=self.names)
        style = self.trace_style or "reflective"
        if self.system_prompt:
            yield self.system_prompt
        for p in puzzles[:n]:
            yield render.plain_quiz_text(p.names, p.statements) if self.quiz_style == "plain" else p.quiz
            yield make_trace(p.names, p.statements, style, self.think_preopened, self.trace_restate) or p.answer

    # ------------------------------------------------------------------ grading
    def verify(self, text: str, example: Example) -> Verdict:
        """Grade a completion (see `verifier`); never raises."""
        meta = example.meta or {}
        names, solution = meta.get("names"), meta.get("solution")
        if names is None or solution is None:
            try:
                names, solution = parse_answer_lines(example.answer, f"example {example.id}", "answer")
            except AhaError as exc:
                return Verdict(error=f"example has no usable reference answer: {exc}")
        return verify_answer(text, names, solution, self.think_preopened)

