"""DAPO's soft overlong punishment (Eq. 13), in tokens:

    r = 0                              if L <= L_max - L_cache
        ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max      (from 0 down to -1)
        -1                             if L > L_max

L is `batch.num_tokens`. L_max defaults to the batch's generation cap (`batch.max_new_tokens`), so a
completion cut off at the cap scores -1; L_cache (the buffer) defaults to a quarter of L_max
(open-r1's 4096 of 16384). The reward is meant to be added to a correctness reward (weight 1 in
DAPO, whose code multiplies it by a factor of 1).
"""

from __future__ import annotations

from aha.errors import AhaError
from aha.rewards.base import REWARDS, RewardBatch, RewardOutput


def soft_overlong(length: int, max_len: int, buffer: int) -> float:
    """The DAPO punishment of one completion of `length` tokens."""
    start = max_len - buffer
    if length <= start:
        return 0.0
    if length > max_len:
        return -1.0
    return (start - length) / buffer


@REWARDS.register("overlong")
def overlong(batch: RewardBatch, max_len: int | None = None, buffer: int | None = None,
             factor: float = 1.0) -> RewardOutput:
    """Soft length punishment near the generation cap (formula in the module docstring).

    batch: completions with token counts; `batch.max_new_tokens` supplies the default max_len.
    max_len: L_max in tokens; None uses batch.max_new_tokens.
    buffer: L_cache in tokens; None uses max_len // 4 (at least 1).
    factor: multiplier of the punishment.

    Returns None for every completion when neither max_len nor batch.max_new_tokens is known.
    Metrics: `penalised` (fraction with a negative score).
    """
    cap = max_len if max_len is not None else batch.max_new_tokens
    if cap is None or cap <= 0:
        return RewardOutput([None] * len(batch), {"penalised": 0.0})
    buf = buffer if buffer is not None else max(1, cap // 4)
    buf = min(max(1, buf), cap)
    scores: list[float | None] = [factor * soft_overlong(int(n), cap, buf) for n in batch.num_tokens]
    return RewardOutput(scores, {"penalised": sum(1 for s in scores if s is not None and s < 0) / max(len(batch), 1)})


def _check_overlong(**options: object) -> None:
    for key in ("max_len", "buffer"):
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise AhaError(f"overlong: {key} must be a positive integer (tokens), got {value!r}")
    max_len, buffer = options.get("max_len"), options.get("buffer")
    if isinstance(max_len, int) and isinstance(buffer, int) and buffer > max_len:
        raise AhaError(f"overlong: buffer ({buffer}) must not exceed max_len ({max_len})")


overlong.check_options = _check_overlong  # type: ignore[attr-defined]
