"""The task contract: examples with reference answers, and a verifier that grades a completion.

A task knows nothing of models or training. `Task.examples(split)` yields `Example`s;
`Task.verify(text, example)` returns a `Verdict` and never raises on model output (model output is
untrusted input: verifiers never `eval` it and bound their own time).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aha.registry import Registry


@dataclass
class Example:
    """One problem.

    id: stable identifier, unique within a dataset (used to pair samples across evaluations).
    prompt: chat messages `[{"role": "system"|"user", "content": str}, ...]` to render with the
        tokenizer's chat template.
    answer: the reference answer in the task's own form (e.g. "(1) Ann is a knight\n(2) ...", "42").
    meta: anything else; `meta["bucket"]` names the difficulty group tables report by ("3ppl",
        "level 4"); `meta["trace"]` may hold a teacher response for SFT.
    """

    id: str
    prompt: list[dict[str, str]]
    answer: Any
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        return str(self.meta.get("bucket", "all"))


@dataclass
class Verdict:
    """The verifier's judgement of one completion.

    parsed: the answer the verifier extracted (None when nothing could be parsed).
    format_ok: the completion follows the task's required output format.
    correct: the answer is fully right.
    partial: fraction of the answer that is right, in [0, 1] (1.0 when correct).
    error: a short reason when not correct ("no <answer> block", "Ann should be a knave", ...).
    """

    parsed: Any = None
    format_ok: bool = False
    correct: bool = False
    partial: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        parsed = self.parsed
        if not isinstance(parsed, (str, int, float, bool, list, dict, type(None))):
            parsed = str(parsed)
        return {
            "parsed": parsed,
            "format_ok": self.format_ok,
            "correct": self.correct,
            "partial": self.partial,
            "error": self.error,
        }


class Task:
    """Base class of tasks. Subclasses set `name` and implement `examples` and `verify`.

    think_preopened: the assistant turn of this task's prompts starts with `<think>`, written by
    the prompt renderer (`aha.prompts.render_prompt`); completions then continue the reasoning.
    """

    name: str = "task"
    think_preopened: bool = False

    def examples(self, split: str = "train") -> Iterator[Example]:
        """The examples of a split ("train", "test", ...)."""
        raise NotImplementedError

    def verify(self, text: str, example: Example) -> Verdict:
        """Grade the completion `text` (the assistant's reply only) against `example`. Never raises."""
        raise NotImplementedError

    def corpus(self, n: int, seed: int = 0) -> Iterator[str]:
        """Texts representative of the task (prompts and answers), for training a tokenizer.

        The default walks the train split; generators override this to produce fresh text.
        """
        for i, ex in enumerate(self.examples("train")):
            if i >= n:
                return
            yield "\n".join(m["content"] for m in ex.prompt)
            trace = ex.meta.get("trace")
            yield str(trace if trace is not None else ex.answer)


# name -> Task subclass (or a factory taking keyword options)
TASKS: Registry[type[Task]] = Registry("task")


def get_task(name: str, **options: Any) -> Task:
    """Build the task registered as `name` (or `module:Class`) with its options."""
    import aha.tasks  # noqa: F401  (registers the built-in tasks)

    return TASKS.get(name)(**options)


def safe_verify(task: Any, text: str, example: Example) -> Verdict:
    """`task.verify`, with a verifier that raises anyway counted as a wrong completion: one strange
    completion must not end a training run or an evaluation."""
    try:
        return task.verify(text, example)
    except Exception as exc:  # noqa: BLE001 - model output is untrusted
        return Verdict(error=f"verifier error: {type(exc).__name__}")


def preopens_think(task: Any) -> bool:
    """Whether `task`'s prompts open `<think>` for the model (tasks not derived from `Task` included)."""
    return bool(getattr(task, "think_preopened", False))
