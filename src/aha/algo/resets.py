"""When to hard-reset the reference policy (ProRL): pure rules over step counts and metric histories.

ProRL resets the reference to the current policy (and, in v1, the optimizer) when validation
stagnates or degrades; ProRL v2 and NeMo-RL's users reset every few hundred steps. Both rules are
here as plain functions of numbers, so the trainer (`aha.train.resets`) only feeds them what it
measured and acts on the answer.
"""

from __future__ import annotations

PLATEAU_MODES = ("max", "min")


def plateau_reached(values: list[float], patience: int, min_delta: float = 0.0, mode: str = "max") -> bool:
    """Whether the last `patience` evaluations failed to improve on the best one before them.

    values: the metric at successive evaluations, oldest first (since the last reset).
    patience: how many evaluations in a row may fail to improve (>= 1).
    min_delta: an improvement smaller than this counts as none (>= 0).
    mode: "max" when higher is better (accuracy), "min" when lower is (a loss).

    Fires once `patience` evaluations after the best earlier one are all no better than it by
    `min_delta`, so both a stagnating and a degrading series fire; a series with fewer than
    patience + 1 values never does (nothing to compare against yet).
    """
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    if min_delta < 0:
        raise ValueError(f"min_delta must be >= 0, got {min_delta}")
    if mode not in PLATEAU_MODES:
        raise ValueError(f"mode must be one of {PLATEAU_MODES}, got {mode!r}")
    if len(values) <= patience:
        return False
    sign = 1.0 if mode == "max" else -1.0  # compare as "higher is better" in both modes
    before = max(sign * v for v in values[:-patience])
    recent = max(sign * v for v in values[-patience:])
    return not recent > before + min_delta


def periodic_reset_due(step: int, every: int, last_reset_step: int) -> bool:
    """Whether `every` steps have passed since the last reset (step 0 when there was none yet);
    `every` = 0 turns the rule off."""
    return every > 0 and step - last_reset_step >= every


def scheduled_reset_due(step: int, at_steps: list[int]) -> bool:
    """Whether `step` is one of the steps a reset was scheduled after (a phase boundary by step)."""
    return step in at_steps
