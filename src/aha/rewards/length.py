"""Length rewards: prefer shorter correct answers.

Lengths are `batch.num_tokens` (`unit="tokens"`) or characters of the completion (`unit="chars"`).
Correctness is the verifier's `verdict.correct`. Groups are completions sharing a `group_id`
(answers to the same prompt).

"length" (REA-RL's refine_len_reward, seed 004), relative to the correct answers of the group:

    correct: 0.5 - (L - L_min) / (L_max - L_min)     L_min, L_max over the group's correct answers
             0 when L_max = L_min (one correct answer, or all equally long)
    wrong:   `wrong` (-0.5 in the released code; the paper's description zeroes it: wrong=0)

"kimi_length" (Kimi 1.5, REA-RL's baseline), relative to every completion of the group:

    lam = 0.5 - (L - L_min) / (L_max - L_min)        (lam = 0 when all lengths are equal)
    correct: lam,   wrong: min(0, lam)

Unlike open-r1's port the min/max are taken per prompt group, as in Kimi 1.5.

"cosine_length" (open-r1's cosine-scaled reward): with p = clamp(L / max_len, 0, 1),

    r = lo + (hi - lo) * (1 + cos(pi * p)) / 2

correct answers: hi = max_value_correct at L = 0 down to lo = min_value_correct at max_len;
wrong answers: hi = min_value_wrong at L = 0 to lo = max_value_wrong at max_len (so, with the
defaults, a short wrong answer is punished more than a long one, as in open-r1). open-r1 does not
clamp, so its cosine turns back up past max_len; here longer completions keep the max_len value.
"""

from __future__ import annotations

import math
from collections import defaultdict

from aha.errors import AhaError
from aha.rewards.base import REWARDS, RewardBatch, RewardOutput

UNITS = ("tokens", "chars")


def completion_lengths(batch: RewardBatch, unit: str = "tokens") -> list[int]:
    """Length of each completion: tokens (`batch.num_tokens`) or characters of the text."""
    if unit == "chars":
        return [len(t) if isinstance(t, str) else 0 for t in batch.completions]
    return [int(n) for n in batch.num_tokens]


def group_members(batch: RewardBatch) -> dict[int, list[int]]:
    """group id -> indices of the batch entries in that group, in batch order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(batch.group_ids):
        groups[g].append(i)
    return dict(groups)


def _lam(length: int, lo: int, hi: int) -> float:
    return 0.0 if hi == lo else 0.5 - (length - lo) / (hi - lo)


def _check_unit(name: str, unit: object) -> None:
    if unit not in UNITS:
        raise AhaError(f"{name}: unit must be one of {', '.join(UNITS)}, got {unit!r}")


@REWARDS.register("refine_length")
@REWARDS.register("length")
def length(batch: RewardBatch, wrong: float = -0.5, unit: str = "tokens") -> RewardOutput:
    """REA-RL's length reward (formula in the module docstring), in [-0.5, 0.5] for correct answers.

    batch: completions with verdicts, token counts and group ids.
    wrong: score of an incorrect answer (-0.5 as released; 0 as the paper describes).
    unit: "tokens" (released code) or "chars".

    Metrics: `correct_length_mean` (mean length of correct answers, 0 if none).
    """
    lengths = completion_lengths(batch, unit)
    scores: list[float | None] = [float(wrong)] * len(batch)
    for members in group_members(batch).values():
        right = [i for i in members if batch.verdicts[i].correct]
        if not right:
            continue
        lo, hi = min(lengths[i] for i in right), max(lengths[i] for i in right)
        for i in right:
            scores[i] = _lam(lengths[i], lo, hi)
    right_all = [lengths[i] for i, v in enumerate(batch.verdicts) if v.correct]
    return RewardOutput(scores, {"correct_length_mean": sum(right_all) / len(right_all) if right_all else 0.0})


def _check_length(**options: object) -> None:
    _check_unit("length", options.get("unit", "tokens"))


length.check_options = _check_length  # type: ignore[attr-defined]


@REWARDS.register("kimi_length")
def kimi_length(batch: RewardBatch, unit: str = "chars") -> RewardOutput:
    """Kimi 1.5's length reward over each whole group (formula in the module docstring), in [-0.5, 0.5].

    batch: completions with verdicts and group ids (and token counts for unit="tokens").
    unit: "chars" (Kimi / open-r1) or "tokens".
    """
    lengths = completion_lengths(batch, unit)
    scores: list[float | None] = [0.0] * len(batch)
    for members in group_members(batch).values():
        lo, hi = min(lengths[i] for i in members), max(lengths[i] for i in members)
        for i in members:
            lam = _lam(lengths[i], lo, hi)
            scores[i] = lam if batch.verdicts[i].correct else min(0.0, lam)
    return RewardOutput(scores)


def _check_kimi(**options: object) -> None:
    _check_unit("kimi_length", options.get("unit", "chars"))


kimi_length.check_options = _check_kimi  # type: ignore[attr-defined]


@REWARDS.register("cosine_length")
def cosine_length(batch: RewardBatch, min_value_correct: float = 0.5, max_value_correct: float = 1.0,
                  min_value_wrong: float = -1.0, max_value_wrong: float = -0.5, max_len: int = 1000,
                  unit: str = "chars") -> RewardOutput:
    """Cosine-scaled reward by length and correctness (formula in the module docstring).

    batch: completions with verdicts (and token counts for unit="tokens").
    min_value_correct: score of a correct answer at max_len or longer.
    max_value_correct: score of an empty correct answer.
    min_value_wrong: score of an empty wrong answer.
    max_value_wrong: score of a wrong answer at max_len or longer.
    max_len: length (in `unit`) where the cosine reaches its end value.
    unit: "chars" (open-r1) or "tokens".
    """
    lengths = completion_lengths(batch, unit)
    scores: list[float | None] = []
    for n, verdict in zip(lengths, batch.verdicts):
        progress = min(1.0, max(0.0, n / max_len))
        if verdict.correct:
            lo, hi = min_value_correct, max_value_correct
        else:
            lo, hi = max_value_wrong, min_value_wrong
        scores.append(lo + 0.5 * (hi - lo) * (1.0 + math.cos(math.pi * progress)))
    return RewardOutput(scores)


def _check_cosine(**options: object) -> None:
    _check_unit("cosine_length", options.get("unit", "chars"))
    max_len = options.get("max_len", 1000)
    if not isinstance(max_len, (int, float)) or not max_len > 0:
        raise AhaError(f"cosine_length: max_len must be > 0, got {max_len}")


cosine_length.check_options = _check_cosine  # type: ignore[attr-defined]
