"""The reward contract.

A reward is a plain function registered by name. It receives a `RewardBatch` (every completion of a
step with its example, verdict, token count and group) plus its own keyword options from the
recipe, and returns a `RewardOutput`: one float per completion, or None where the reward does not
apply, plus metrics. Rewards never raise on model output; a parse failure scores as documented by
each reward.

Composition (`compose_rewards`) multiplies each reward by its recipe weight and sums; a None
component contributes 0 to the total and is left out of that component's logged mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aha.registry import Registry
from aha.tasks.base import Example, Verdict


@dataclass
class RewardBatch:
    """Everything a reward may look at, one entry per completion (all lists have the same length).

    completions: the generated text (assistant reply only, special tokens removed).
    examples: the example each completion answers.
    verdicts: the task verifier's judgement of each completion.
    num_tokens: completion length in tokens.
    group_ids: index of the prompt group; completions with the same id answer the same prompt.
    truncated: True where generation stopped at max_new_tokens (finish reason "length").
    max_new_tokens: the generation cap of this batch (for length-aware rewards), if known.
    token_ids: the completions' token ids, where the caller has them (the RL step does); empty otherwise.
    think_ids: the tokenizer's single-token ids of `<think>` and `</think>` (`prompts.think_tag_ids`), None
        for a tag it spells in pieces or when unknown.
    """

    completions: list[str]
    examples: list[Example]
    verdicts: list[Verdict]
    num_tokens: list[int]
    group_ids: list[int]
    truncated: list[bool] = field(default_factory=list)
    max_new_tokens: int | None = None
    token_ids: list[Sequence[int]] = field(default_factory=list)
    think_ids: tuple[int | None, int | None] = (None, None)

    def __post_init__(self) -> None:
        n = len(self.completions)
        if not self.truncated:
            self.truncated = [False] * n
        for name in ("examples", "verdicts", "num_tokens", "group_ids", "truncated"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"RewardBatch.{name} has {len(getattr(self, name))} entries, expected {n}")
        if self.token_ids and len(self.token_ids) != n:
            raise ValueError(f"RewardBatch.token_ids has {len(self.token_ids)} entries, expected {n}")

    def __len__(self) -> int:
        return len(self.completions)


@dataclass
class RewardOutput:
    """scores: one float (or None = not applicable) per completion; metrics: extra figures to log."""

    scores: list[float | None]
    metrics: dict[str, float] = field(default_factory=dict)


RewardFn = Callable[..., RewardOutput]

# name -> reward function `fn(batch: RewardBatch, **options) -> RewardOutput`
REWARDS: Registry[RewardFn] = Registry("reward")
