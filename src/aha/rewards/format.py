"""Format rewards on the shared `<think>R</think><answer>A</answer>` structure.

Both delegate to `aha.tasks.formatting`, the single definition of "well formed" that the task
verifiers also use.

- "format": `ok` if `check_think_answer` accepts the completion (each tag exactly once, in order,
  nothing outside the blocks), else `bad`. Unlike open-r1's MULTILINE regex, a second block or
  trailing text fails.
- "format_tags": partial credit `scale * tag_count_score` = 0.25 per tag appearing exactly once
  (open-r1's tag_count idea), a denser signal for models that have not found the format yet.
"""

from __future__ import annotations

from aha.rewards.base import REWARDS, RewardBatch, RewardOutput
from aha.tasks.formatting import THINK_OPEN, check_think_answer, tag_count_score


@REWARDS.register("format")
def format_reward(batch: RewardBatch, ok: float = 1.0, bad: float = 0.0,
                  think_preopened: bool = False) -> RewardOutput:
    """Strict structure reward.

    batch: completions (assistant reply only).
    ok: score of a well-formed completion.
    bad: score of any other completion.
    think_preopened: the prompt already ended with `<think>` (DeepSeek-R1-style templates), so the
        completion must start with the reasoning and must not repeat the opening tag.

    Metrics: `ok` (fraction well formed).
    """
    checks = [check_think_answer(text, think_preopened=think_preopened).ok for text in batch.completions]
    scores: list[float | None] = [float(ok) if c else float(bad) for c in checks]
    return RewardOutput(scores, {"ok": sum(checks) / max(len(checks), 1)})


@REWARDS.register("format_tags")
def format_tags(batch: RewardBatch, scale: float = 1.0, think_preopened: bool = False) -> RewardOutput:
    """Partial tag-count reward in [0, scale]: scale * 0.25 per tag that appears exactly once.

    batch: completions (assistant reply only).
    scale: score when all four tags appear exactly once.
    think_preopened: the prompt already wrote `<think>`; it is counted as present (the completion
        is scored as if it started with it), so a completion that repeats it has the tag twice.
    """
    prefix = THINK_OPEN if think_preopened else ""
    scores: list[float | None] = [scale * tag_count_score(prefix + text if isinstance(text, str) else text)
                                  for text in batch.completions]
    return RewardOutput(scores)
