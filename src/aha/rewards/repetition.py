"""n-gram repetition penalty (open-r1's repetition_penalty reward):

    r = max_penalty * (1 - unique n-grams / total n-grams)

over the lower-cased whitespace-separated words of the whole completion. A completion with fewer
than n words scores 0. With max_penalty = -1, a text that repeats one n-gram forever tends to -1.
Applied whatever the correctness, as in open-r1.
"""

from __future__ import annotations

from aha.errors import AhaError
from aha.rewards.base import REWARDS, RewardBatch, RewardOutput


def repeated_ngram_fraction(text: str, n: int = 3) -> float:
    """1 - unique/total over the word n-grams of `text`; 0 when it has fewer than n words."""
    if not isinstance(text, str):
        return 0.0
    words = text.lower().split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    unique = {tuple(words[i:i + n]) for i in range(total)}
    return 1.0 - len(unique) / total


@REWARDS.register("repetition")
def repetition(batch: RewardBatch, ngram_size: int = 3, max_penalty: float = -1.0) -> RewardOutput:
    """Penalise repeated word n-grams (formula in the module docstring).

    batch: completions (assistant reply only).
    ngram_size: n, the number of words per n-gram.
    max_penalty: the score of a text made only of repeats in the limit; must be <= 0.
    """
    # "+ 0.0" turns the -0.0 of a repeat-free text into 0.0
    scores: list[float | None] = [max_penalty * repeated_ngram_fraction(t, ngram_size) + 0.0
                                  for t in batch.completions]
    return RewardOutput(scores)


def _check_repetition(**options: object) -> None:
    n = options.get("ngram_size", 3)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise AhaError(f"repetition: ngram_size must be a positive integer, got {n!r}")
    penalty = options.get("max_penalty", -1.0)
    if not isinstance(penalty, (int, float)) or penalty > 0:
        raise AhaError(f"repetition: max_penalty must be <= 0, got {penalty!r}")


repetition.check_options = _check_repetition  # type: ignore[attr-defined]
