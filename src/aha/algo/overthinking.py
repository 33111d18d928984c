"""REA-RL's overthinking rules as pure functions: where to cut a response, and P(Result) per chunk.

A detector (`aha.overthinking`) gives, for each of the N chunks of a response's reasoning, the
probability P_i that the answer has been reached by the end of chunk i. `cut_points` turns that
series into REA-RL's three truncation points (`labeling_to_prefix.py::find_max_probability`):

    cap      = N - 1 - min(int((N + 10) * 0.05), 5)
    normal   = the first i >= N/2 with P_i >= 0.5                  (none: cap)
    strong   = among i <= normal with P_i >= 0.25, the one with the highest P_i, earliest on ties
               (none: normal)
    weak     = the start of a second, separate run of P_i >= 0.5 at indices >= N/2 (the first run
               starts at normal and ends at the first index below 0.5); none: the first run's last
               index (no normal: cap)
    each one capped at `cap`, so strong <= normal <= weak <= cap

The kept prefix is chunks[: point + 1]. Online REA-RL revises at `normal`.

`result_probability` is P(Result) at one label position of the reflection model's reply, from its
top-k (token, log-prob) list: the probability mass of tokens containing "result" (lower-cased)
over that of tokens containing "think" or "result"; a token containing both counts as "think".
`label_positions` picks the positions whose top-1 token contains "Think" or "Result"
(case-sensitive), as the released code does.

`zero_unsolved_groups` is REA-RL's advantage rule: a group none of whose members is correct gets
advantage 0 everywhere (the released trainer sets its std to infinity), so length and reflection
rewards never move the policy on prompts it cannot solve.

The pair term (`pair_term_start`, `pair_scale`) is the released trainer's optional `custom_loss`
(`filter_think_impact_data`): for an accepted revision (correct, so kept in the group) and its
original, let s be the index of the revision's first `</think>` id in its completion ids (its length
if none) and e that of the original's (its length if none). When s + 1 < e, the completion tokens of
both rows from index s on enter a second policy-gradient term with advantage -c on the original and
+c on the revision, c = mean |A| over the group's members (`custom_loss` 1) or max |A| (2); when the
revision did not end the reasoning at least two tokens earlier there is no term. Since the revision
copies the original's ids up to the cut, s is the cut plus the template's tokens before `</think>`,
and the original's tokens from s on are the reasoning it kept writing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

STRENGTHS = ("strong", "normal", "weak")
NORMAL_THRESHOLD = 0.5
STRONG_THRESHOLD = 0.25


@dataclass(frozen=True)
class CutPoints:
    """The three truncation points (chunk indices) of one response, and the cap they obey."""

    strong: int
    normal: int
    weak: int
    cap: int

    def at(self, strength: str) -> int:
        if strength not in STRENGTHS:
            raise ValueError(f"strength must be one of {', '.join(STRENGTHS)}, got {strength!r}")
        return getattr(self, strength)


def cut_cap(n: int) -> int:
    """REA-RL's last allowed cut index for n chunks: n - 1 - min(int((n + 10) * 0.05), 5)."""
    return n - 1 - min(int((n + 10) * 0.05), 5)


def cut_points(probs: Sequence[float]) -> CutPoints:
    """Strong, normal and weak cut indices of a P(Result) series (rules in the module docstring).

    probs: P_i per chunk, i = 0..N-1 (N >= 1); values outside [0, 1] or NaN count as below every
        threshold where they would exceed it (NaN is never >= a threshold).
    """
    n = len(probs)
    if n < 1:
        raise ValueError("cut_points needs at least one chunk")
    p = [float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else -1.0 for x in probs]
    cap = max(cut_cap(n), 0)
    half = n / 2
    late = [i for i in range(n) if i >= half]
    normal = next((i for i in late if p[i] >= NORMAL_THRESHOLD), None)
    if normal is None:
        normal = first_run_end = cap
        second = None
    else:
        first_run_end = normal
        while first_run_end + 1 < n and p[first_run_end + 1] >= NORMAL_THRESHOLD:
            first_run_end += 1
        second = next((i for i in range(first_run_end + 1, n) if p[i] >= NORMAL_THRESHOLD), None)
    strong, best = None, -math.inf
    for i in range(min(normal, n - 1) + 1):
        if p[i] >= STRONG_THRESHOLD and p[i] > best:
            strong, best = i, p[i]
    if strong is None:
        strong = normal
    weak = second if second is not None else first_run_end
    return CutPoints(min(strong, cap), min(normal, cap), min(weak, cap), cap)


def result_probability(top: Sequence[tuple[str, float]]) -> float | None:
    """P(Result) at one label position from its top-k (token text, log-prob) pairs; None when no
    token of the list names either label."""
    think = result = 0.0
    for token, logprob in top:
        low = str(token).lower()
        mass = math.exp(float(logprob)) if math.isfinite(float(logprob)) else 0.0
        if "think" in low:
            think += mass
        elif "result" in low:
            result += mass
    if think + result <= 0.0:
        return None
    return result / (think + result)


def label_sequence_probability(logprob_result: float, logprob_think: float) -> float:
    """P(Result) at one label position from the log-probabilities of the two whole label texts (" Result"
    and " Think", each possibly several tokens): exp(lR) / (exp(lR) + exp(lT)) = 1 / (1 + exp(lT - lR)).
    For a tokenizer that spells the labels in pieces, where no single token names a label."""
    diff = float(logprob_think) - float(logprob_result)
    if diff > 700:  # exp overflows; P is 0 to double precision
        return 0.0
    return 1.0 / (1.0 + math.exp(diff))


def label_positions(top1_tokens: Sequence[str]) -> list[int]:
    """The positions whose top-1 token contains "Think" or "Result" (case-sensitive)."""
    return [i for i, t in enumerate(top1_tokens) if "Think" in str(t) or "Result" in str(t)]


def zero_unsolved_groups(advantages: Tensor, correct: Tensor, valid: Tensor | None = None) -> Tensor:
    """Advantages with every group that has no correct valid member set to 0.

    advantages: (P, G) float; correct: (P, G) bool; valid: (P, G) bool or None (all valid).
    Returns (P, G), same dtype as `advantages`.
    """
    if advantages.shape != correct.shape:
        raise ValueError(f"correct shape {tuple(correct.shape)} != advantages shape {tuple(advantages.shape)}")
    ok = correct.to(torch.bool)  # (P, G)
    if valid is not None:
        ok = ok & valid.to(torch.bool)
    solved = ok.any(dim=1, keepdim=True)  # (P, 1)
    return torch.where(solved, advantages, torch.zeros_like(advantages))


PAIR_SCALES = ("mean", "max")


def pair_term_start(original_ids: Sequence[int], revision_ids: Sequence[int], close_id: int) -> int | None:
    """The first completion index of the pair term of an (original, accepted revision) pair, or None when
    the pair has none (rule in the module docstring). `close_id` is the tokenizer's `</think>` id."""
    def first(ids: Sequence[int]) -> int:
        ids = list(ids)
        return ids.index(close_id) if close_id in ids else len(ids)

    start, end = first(revision_ids), first(original_ids)
    return start if start + 1 < end else None


def pair_scale(advantages: Tensor, valid: Tensor, mode: str = "mean") -> Tensor:
    """c of each group: the mean (or max) |A| over its valid members.

    advantages: (P, G) float; valid: (P, G) bool; mode: "mean" or "max". Returns (P,); 0 for a group
    with no valid member.
    """
    if mode not in PAIR_SCALES:
        raise ValueError(f"pair scale must be one of {PAIR_SCALES}, got {mode!r}")
    if advantages.shape != valid.shape:
        raise ValueError(f"valid shape {tuple(valid.shape)} != advantages shape {tuple(advantages.shape)}")
    a = advantages.abs() * valid.to(advantages.dtype)  # (P, G)
    if mode == "max":
        return a.max(dim=1).values  # (P,)
    return a.sum(dim=1) / valid.to(advantages.dtype).sum(dim=1).clamp(min=1.0)  # (P,)
