"""Logic-RL's Knights-and-Knaves reward (Xie et al. 2025, `verl/utils/reward_score/kk.py`).

For each completion, with its verdict from the knights-knaves verifier:

    format  = format_correct                if verdict.format_ok
              format_wrong                  otherwise
    answer  = unparseable                   if not verdict.format_ok
              unparseable                   elif the answer does not name every person exactly once
                                                 with one role (missing, extra or conflicting people)
              answer_correct                elif every role is right (verdict.correct)
              answer_wrong                  otherwise
    reward  = format + answer

Defaults are Logic-RL's (+1 / -1, +2 / -1.5 / -2), so the possible totals are 3 (right), -0.5 (well
formed, wrong), -1 (well formed, unparseable) and -3 (malformed). A format failure always takes the
unparseable answer score, as in Logic-RL, whatever the answer says.

The reward applies to Knights-and-Knaves examples (those whose `meta` has `names`); for any other
example it returns None (not applicable).
"""

from __future__ import annotations

from aha.rewards.base import REWARDS, RewardBatch, RewardOutput


@REWARDS.register("logic_rl")
def logic_rl(batch: RewardBatch, format_correct: float = 1.0, format_wrong: float = -1.0,
             answer_correct: float = 2.0, answer_wrong: float = -1.5,
             unparseable: float = -2.0) -> RewardOutput:
    """Logic-RL's format + answer reward (formula in the module docstring).

    batch: completions with their examples and verdicts (reads `verdicts` and `examples[i].meta["names"]`).
    format_correct / format_wrong: format term when the strict think/answer structure holds / fails.
    answer_correct: answer term when every person's role is right.
    answer_wrong: answer term when the answer is complete but some role is wrong.
    unparseable: answer term when the format fails or the answer does not name each person once.

    Metrics: `format_ok`, `correct` (fraction with the full 3 points' worth: format ok and right) and
    `unparseable` (fraction scored `unparseable`), over the applicable completions.
    """
    from aha.tasks.knights_knaves.verifier import is_complete

    scores: list[float | None] = []
    n = n_format = n_right = n_unparsed = 0
    for verdict, example in zip(batch.verdicts, batch.examples):
        names = (example.meta or {}).get("names")
        if not names:
            scores.append(None)
            continue
        n += 1
        if not verdict.format_ok:
            answer = unparseable
            n_unparsed += 1
        elif not is_complete(verdict.parsed, names):
            answer = unparseable
            n_unparsed += 1
        elif verdict.correct:
            answer = answer_correct
            n_right += 1
        else:
            answer = answer_wrong
        n_format += verdict.format_ok
        scores.append(float((format_correct if verdict.format_ok else format_wrong) + answer))
    d = max(n, 1)
    metrics = {"format_ok": n_format / d, "correct": n_right / d, "unparseable": n_unparsed / d}
    return RewardOutput(scores, metrics)
