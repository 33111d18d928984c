"""Correctness rewards: a fixed value per verdict (correct / wrong / nothing parsed).

The task's verifier has already judged every completion (`batch.verdicts`); these rewards only map
its judgement to numbers, so every task gets the same reward semantics:

    r = correct    if verdict.correct
        unparsed   if verdict.parsed is None and unparsed is not None
        wrong      otherwise

Registered names:
- "correctness": defaults 1 / 0 (unparsed counts as wrong). Any values can be set per recipe.
- "accuracy": the same function (0/1, open-r1 and GRPO_reflection's accuracy reward).
- "pm1": +1 / -1 (DAPO's rule-based reward; seed 003's boxed reward when the math task extracts only
  `\\boxed{}` answers, so an unboxed answer is unparsed and scores -1).

Logic-RL's +2 / -1.5 / -2 answer reward together with its format term is a separate reward
("logic_rl").
"""

from __future__ import annotations

from aha.rewards.base import REWARDS, RewardBatch, RewardOutput


def _score(batch: RewardBatch, correct: float, wrong: float, unparsed: float | None) -> RewardOutput:
    scores: list[float | None] = []
    n_correct = n_unparsed = 0
    for verdict in batch.verdicts:
        if verdict.correct:
            n_correct += 1
            scores.append(float(correct))
        elif verdict.parsed is None:
            n_unparsed += 1
            scores.append(float(wrong if unparsed is None else unparsed))
        else:
            scores.append(float(wrong))
    n = max(len(batch), 1)
    return RewardOutput(scores, {"accuracy": n_correct / n, "unparsed": n_unparsed / n})


@REWARDS.register("accuracy")
@REWARDS.register("correctness")
def correctness(batch: RewardBatch, correct: float = 1.0, wrong: float = 0.0,
                unparsed: float | None = None) -> RewardOutput:
    """Score each completion by its verdict.

    batch: the completions with their verdicts (only `batch.verdicts` is read).
    correct: score of a fully correct answer.
    wrong: score of a parsed but wrong answer.
    unparsed: score when the verifier parsed nothing (`verdict.parsed is None`); None means the
        same as `wrong`.

    Metrics: `accuracy` (fraction correct) and `unparsed` (fraction with nothing parsed).
    """
    return _score(batch, correct, wrong, unparsed)


@REWARDS.register("pm1")
def pm1(batch: RewardBatch, correct: float = 1.0, wrong: float = -1.0,
        unparsed: float | None = None) -> RewardOutput:
    """+1 for a correct answer, -1 otherwise (DAPO; seed 003's ±1 boxed reward).

    Same options and metrics as `correctness`, only the defaults differ.
    """
    return _score(batch, correct, wrong, unparsed)
