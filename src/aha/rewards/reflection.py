"""Reflection rewards: reward (or keep) self-checking behaviour in the reasoning; and the one rule
for counting reflections (`count_reflections`), which the evaluation and distillation reports share.

Two published forms, both computed on the reasoning only (`think_content`: the text inside
`<think>...</think>`, or everything after `<think>` when it is never closed):

"reflection" (GRPO_reflection, seed 002): weighted phrase groups with diminishing returns,

    r = round(min(cap, scale * sum_p w_p * (1 - d_p ** m_p)), digits)

where m_p counts the matches of group p (case-insensitive) and the table is

    group                 phrases                                                  w_p   d_p
    verification          double-check, verify, re-examine, confirm, validate      0.3   0.5
    alternative approach  cross-validation, alternative approach, step-verification 0.5  0.6
    error correction      "initial thought/calculation was/is incorrect/flawed",   0.2   0.4
                          "mistake in previous/step N", "correcting error/myself"

with scale = 1.2, cap = 1 and digits = 2. Each phrase occurrence counts in one group only
("cross-validation" is not also a "validate"). The published code searched `<think>(.*?)`, which
captures the empty string, so its reward was always 0; this is the intended formula.

"reflection_density" (REA-RL, seed 004): reflections per reasoning token, compared with the
starting policy's own distribution,

    D = reflections / reasoning tokens,      r = min(0, D / D_q - 1)          (paper, in [-1, 0])
                                             r = min(1, D / D_q)              (code form, in [0, 1])

Reflections are counted by `count_reflections` (rule at the end) with the keywords wait,
alternatively, check, but (`keywords`) and `merge_chars` = 60, so "Wait, but let me check" counts
once. D_q is the q-quantile (default 0.2) of D over the starting policy's rollouts: either given
(`d_q`) or measured automatically on the first `calibration_steps` batches the reward sees. While
calibrating the reward returns None (contributing 0 to the total). So only completions that reflect
less than the q-quantile are penalised.

Reasoning tokens: the completion's token count (`batch.num_tokens`) times the reasoning's share of
the completion's characters (`token_count="share"`, default), which needs no tokenizer and matches
the true count when tokens are spread evenly; or the number of whitespace-separated words
(`token_count="words"`). An empty reasoning has density 0.

REA-RL's released form (seed 004, `rea_rl/rewards.py::reflection_reward`), two options:
- `threshold` T, tokens per reflection (released: 225.09, the starting policy's P80 of tokens per
  reflection; `reflect60` 156.60, `reflect90` 299.11): D_q = 1 / T, no calibration; with
  `form: code` the reward is min(count / tokens * T, 1), exactly the released value.
- `match: rea_rl` counts as the released regex does (`count_rea_rl_reflections`): the number of
  non-overlapping matches of `(?i)(K(?:.{0,59}K)+|K)`, K = the keywords as one alternation, with no
  word boundaries ("but" inside "attribute", "check" inside "checking") and `.` not crossing a
  newline, so keywords chain into one reflection while each gap (end of one to start of the next) is
  at most 59 characters on one line. The text is the released one too:
  `text.split("<think>")[-1].split("</think>")[0]`; the token count is the released one, the ids
  after the first `<think>` id (from the first id when there is none: R1-distill's prompt opens the
  block) and before the last `</think>` id (to the end when there is none), whenever the batch carries
  the completions' ids and the tokenizer has `</think>` as one token (the RL step passes both). Without
  them it is `num_tokens` times the share of characters before the last `</think>`, that count under
  an even spread of characters over tokens; the metric `reasoning_tokens_exact` is the share of
  completions counted from ids.
`match: words` (default) is aha's calibrated form above.

The density reward is stateful (the calibration), so it is an object, `ReflectionDensity`, whose
`__call__` has the reward signature. The registry holds one shared instance; `RewardComposer`
gives each recipe entry its own via `fresh()` and checkpoints it through `state_dict()` /
`load_state_dict()`.

Counting reflections: `count_reflections` is aha's one rule, used by the density reward and by the
evaluation, `aha score` and distillation reports. A keyword (a word or a phrase) occurs where it
matches case-insensitively with a word boundary (regex `\\b`) on both sides, so it never matches
inside a longer word ("awaiting" holds no "wait"), but a hyphen is a boundary ("double-check" holds
"check", "re-verify" holds "verify"). Longer keywords are tried first and occurrences do not
overlap, so "let's reconsider" is one occurrence, not also a "reconsider". Occurrences whose starts
are fewer than `merge_chars` characters apart chain into one reflection; `merge_chars` = 0 counts
every occurrence. The density reward uses `DEFAULT_KEYWORDS` with `merge_chars` = 60; the reports
use `REPORT_PHRASES` with `merge_chars` = 0 (each phrase occurrence counts once).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

from aha.errors import AhaError
from aha.rewards.base import REWARDS, RewardBatch, RewardOutput
from aha.tasks.formatting import think_content

# --------------------------------------------------------------------------- phrase-group form

# (name, regex, weight, decay), matched on lower-cased text. Lookbehinds keep a phrase of a later
# group from also counting as a plain "validate" / "verify"; the leading lookahead on the possible
# first letters lets the scan skip most positions cheaply.
REFLECTION_GROUPS: list[tuple[str, re.Pattern[str], float, float]] = [
    ("verification", re.compile(
        r"(?=[dvrc])\b(?:double[- ]?check\w*"
        r"|(?<!step-)(?<!step )verif(?:y|ies|ied|ying|ication)\b"
        r"|re-?examin\w*"
        r"|confirm\w*"
        r"|(?<!cross-)(?<!cross )validat\w*)"), 0.3, 0.5),
    ("alternative", re.compile(
        r"(?=[cas])\b(?:cross[- ]?validat\w*"
        r"|alternative\s+(?:approach|method)(?:es|s)?\b"
        r"|step[- ]verification\b)"), 0.5, 0.6),
    ("correction", re.compile(
        r"(?=[imc])\b(?:initial\s+(?:thought|calculation)s?\s+(?:was|is|were|are)\s+(?:incorrect|flawed)\b"
        r"|mistake\s+in\s+(?:the\s+|my\s+)?(?:previous\b|step\s*\d+)"
        r"|correcting\s+(?:the\s+|an\s+|my\s+|this\s+)?(?:error|myself)\b)"), 0.2, 0.4),
]


def reflection_group_counts(reasoning: str) -> dict[str, int]:
    """Matches of each phrase group in `reasoning` (case-insensitive)."""
    if not isinstance(reasoning, str):
        return {name: 0 for name, *_ in REFLECTION_GROUPS}
    low = reasoning.lower()
    return {name: len(pattern.findall(low)) for name, pattern, _, _ in REFLECTION_GROUPS}


def _score_counts(counts: dict[str, int], scale: float, cap: float, digits: int | None) -> float:
    total = sum(w * (1.0 - d ** counts[name]) for name, _, w, d in REFLECTION_GROUPS)
    score = min(cap, scale * total)
    return round(score, digits) if digits is not None else score


def reflection_pattern_score(reasoning: str, scale: float = 1.2, cap: float = 1.0, digits: int | None = 2) -> float:
    """min(cap, scale * sum_p w_p (1 - d_p^m_p)) for the text `reasoning`, rounded to `digits`."""
    return _score_counts(reflection_group_counts(reasoning), scale, cap, digits)


@REWARDS.register("reflection")
def reflection(batch: RewardBatch, scale: float = 1.2, cap: float = 1.0, digits: int | None = 2,
               think_preopened: bool = False) -> RewardOutput:
    """GRPO_reflection's phrase-group reward on the reasoning (formula in the module docstring).

    batch: completions (assistant reply only).
    scale: multiplier of the weighted sum (1.2 published).
    cap: upper bound of the reward (1.0 published).
    digits: rounding of the result (2 published); None keeps full precision.
    think_preopened: the prompt already opened `<think>`, so the reasoning starts at the beginning.

    Metrics: `fired` (fraction with a positive reward) and `<group>_matches` (mean matches).
    """
    scores: list[float | None] = []
    sums = {name: 0 for name, *_ in REFLECTION_GROUPS}
    for text in batch.completions:
        counts = reflection_group_counts(think_content(text, think_preopened=think_preopened))
        for name, count in counts.items():
            sums[name] += count
        scores.append(_score_counts(counts, scale, cap, digits))
    n = max(len(batch), 1)
    metrics = {"fired": sum(1 for s in scores if s and s > 0) / n}
    metrics.update({f"{name}_matches": c / n for name, c in sums.items()})
    return RewardOutput(scores, metrics)


# --------------------------------------------------------------------------- counting reflections

# REA-RL's reflection keywords (the density reward's default)
DEFAULT_KEYWORDS = ("wait", "alternatively", "check", "but")

# The phrases the evaluation, `aha score` and distillation reports count, each occurrence once
# (merge_chars=0): the phrases the research counts ("re-evaluate", "try a different approach",
# "wait", ...) and the wording of aha's own reflective Knights-and-Knaves traces ("contradiction",
# "reconsider").
REPORT_PHRASES = (
    "re-evaluate", "reevaluate", "re-examine", "reconsider", "let's reconsider", "try a different approach",
    "try another", "double-check", "double check", "verify", "let me check", "contradiction", "contradicts",
    "wait", "on second thought", "mistake", "backtrack", "go back",
)


@functools.lru_cache(maxsize=32)
def _keyword_regex(keywords: tuple[str, ...]) -> re.Pattern[str]:
    alternation = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternation})\b", re.IGNORECASE)


def _occurrences(text: object, keywords: Sequence[str]) -> Iterator[re.Match[str]]:
    if not isinstance(text, str) or not text or not keywords:
        return iter(())
    return _keyword_regex(tuple(str(k) for k in keywords)).finditer(text)


def count_reflections(text: str, keywords: Sequence[str] = DEFAULT_KEYWORDS, merge_chars: int = 60) -> int:
    """Number of reflections in `text` (the rule is in the module docstring).

    keywords: words or phrases that mark a reflection (whole words, case-insensitive, longest first).
    merge_chars: occurrences whose starts are fewer than this many characters apart chain into one
        reflection (with 60, starts up to 59 apart merge); 0 counts every occurrence.
    Anything but a non-empty string has no reflections.
    """
    count, last = 0, None
    for match in _occurrences(text, keywords):
        if last is None or match.start() - last >= merge_chars:
            count += 1
        last = match.start()
    return count


def _rea_rl_regex(keywords: tuple[str, ...]) -> re.Pattern[str]:
    k = "(?:" + "|".join(re.escape(w) for w in keywords) + ")"
    return re.compile(rf"({k}(?:.{{0,59}}{k})+|{k})", re.IGNORECASE)


_rea_rl_regex = functools.lru_cache(maxsize=8)(_rea_rl_regex)


def count_rea_rl_reflections(text: str, keywords: Sequence[str] = DEFAULT_KEYWORDS) -> int:
    """Reflections as REA-RL's released regex counts them (rule in the module docstring)."""
    if not isinstance(text, str) or not text:
        return 0
    return len(_rea_rl_regex(tuple(str(k) for k in keywords)).findall(text))


def rea_rl_reasoning(text: str) -> str:
    """The released reward's reasoning text: after the last `<think>`, before the next `</think>`."""
    return text.split("<think>")[-1].split("</think>")[0] if isinstance(text, str) else ""


def rea_rl_reasoning_tokens(text: str, num_tokens: int) -> float:
    """`num_tokens` times the share of the completion's characters before its last `</think>`
    (after its first `<think>`): the released token span under even spread."""
    if not isinstance(text, str) or not text:
        return 0.0
    start = text.find("<think>")
    start = start + len("<think>") if start >= 0 else 0
    end = text.rfind("</think>")
    end = len(text) if end < start else end
    return float(num_tokens) * max(end - start, 0) / len(text)


def rea_rl_reasoning_token_ids(token_ids: Sequence[int], think_ids: tuple[int | None, int | None]) -> int | None:
    """The released reasoning-token count: ids after the first `<think>` id (from the start when it is absent)
    and before the last `</think>` id (to the end when absent). None when the tokenizer has no single
    `</think>` id (`think_ids[1]` is None): the count cannot be taken from ids."""
    open_id, close_id = think_ids
    if close_id is None:
        return None
    ids = list(token_ids)
    start = ids.index(open_id) + 1 if open_id is not None and open_id in ids else 0
    end = len(ids) - ids[::-1].index(close_id) - 1 if close_id in ids else len(ids)
    return max(end - start, 0)


def count_report_reflections(text: str) -> int:
    """Reflections in `text` as the evaluation, `aha score` and distillation reports count them:
    every occurrence of a `REPORT_PHRASES` phrase (`count_reflections` with merge_chars=0)."""
    return count_reflections(text, REPORT_PHRASES, merge_chars=0)


def reflection_counts(text: str, keywords: Sequence[str] = DEFAULT_KEYWORDS) -> dict[str, int]:
    """Occurrences of each keyword in `text` (lower-cased keyword -> count, nothing merged); absent
    keywords are left out. The counts add up to `count_reflections(text, keywords, merge_chars=0)`."""
    counts: dict[str, int] = {}
    for match in _occurrences(text, keywords):
        key = match.group(0).lower()
        counts[key] = counts.get(key, 0) + 1
    return counts


# --------------------------------------------------------------------------- density form (REA-RL)


def reasoning_tokens(text: str, num_tokens: int, think_preopened: bool = False, token_count: str = "share") -> float:
    """Estimated token count of the reasoning of completion `text` that has `num_tokens` tokens."""
    reasoning = think_content(text, think_preopened=think_preopened)
    if token_count == "words":
        return float(len(reasoning.split()))
    if not text:
        return 0.0
    return float(num_tokens) * len(reasoning) / len(text)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values` with linear interpolation between order statistics (numpy's default)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("quantile of no values")
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class ReflectionDensity:
    """REA-RL's reflection-density reward with its quantile calibration (see the module docstring).

    State: the densities seen while calibrating, the number of calls, and the calibrated D_q.
    """

    def __init__(self) -> None:
        self.densities: list[float] = []
        self.calls = 0
        self.calibrated_d_q: float | None = None

    def fresh(self) -> ReflectionDensity:
        """A new instance with empty calibration state (one per recipe entry)."""
        return type(self)()

    def state_dict(self) -> dict[str, Any]:
        return {"densities": list(self.densities), "calls": self.calls, "d_q": self.calibrated_d_q}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.densities = [float(x) for x in state.get("densities", [])]
        self.calls = int(state.get("calls", 0))
        d_q = state.get("d_q")
        self.calibrated_d_q = None if d_q is None else float(d_q)

    @staticmethod
    def check_options(keywords: Sequence[str] = DEFAULT_KEYWORDS, merge_chars: int = 60, q: float = 0.2,
                      d_q: float | None = None, calibration_steps: int = 1, form: str = "paper",
                      token_count: str = "share", think_preopened: bool = False, threshold: float | None = None,
                      match: str = "words") -> None:
        """Raise AhaError for option values the reward cannot use (called at start-up)."""
        if threshold is not None and not (isinstance(threshold, (int, float)) and threshold > 0):
            raise AhaError(f"reflection_density: threshold (tokens per reflection) must be > 0, got {threshold}")
        if match not in ("words", "rea_rl"):
            raise AhaError(f"reflection_density: match must be 'words' (aha) or 'rea_rl' (the released regex), "
                           f"got {match!r}")
        if isinstance(keywords, str) or not all(isinstance(k, str) and k for k in keywords):
            raise AhaError("reflection_density: keywords must be a list of non-empty words")
        if not 0.0 <= q <= 1.0:
            raise AhaError(f"reflection_density: q must be in [0, 1], got {q}")
        if d_q is not None and not d_q > 0:
            raise AhaError(f"reflection_density: d_q must be > 0, got {d_q}")
        if calibration_steps < 1:
            raise AhaError(f"reflection_density: calibration_steps must be >= 1, got {calibration_steps}")
        if form not in ("paper", "code"):
            raise AhaError(f"reflection_density: form must be 'paper' or 'code', got {form!r}")
        if token_count not in ("share", "words"):
            raise AhaError(f"reflection_density: token_count must be 'share' or 'words', got {token_count!r}")
        if merge_chars < 0:
            raise AhaError(f"reflection_density: merge_chars must be >= 0, got {merge_chars}")

    def __call__(self, batch: RewardBatch, keywords: Sequence[str] = DEFAULT_KEYWORDS, merge_chars: int = 60,
                 q: float = 0.2, d_q: float | None = None, calibration_steps: int = 1, form: str = "paper",
                 token_count: str = "share", think_preopened: bool = False, threshold: float | None = None,
                 match: str = "words") -> RewardOutput:
        """Score a batch.

        batch: completions with their token counts (`batch.num_tokens`).
        keywords: words that mark a reflection (whole words, case-insensitive).
        merge_chars: keyword starts fewer than this many characters apart form one reflection.
        q: quantile of the starting policy's densities used as the reference D_q.
        d_q: the reference density, if known; skips calibration.
        calibration_steps: number of batches (calls) whose densities calibrate D_q when `d_q` is None.
        form: "paper" -> min(0, D/D_q - 1) in [-1, 0]; "code" -> min(1, D/D_q) in [0, 1].
        token_count: "share" (num_tokens x reasoning share of characters) or "words" (whitespace words).
        think_preopened: the prompt already opened `<think>`.
        threshold: tokens per reflection T (REA-RL: 225.09); sets D_q = 1 / T and skips calibration.
        match: "words" (aha's whole-word count, merged within merge_chars) or "rea_rl" (the released
            regex on the released text span, reasoning tokens counted from the ids when the batch has
            them; merge_chars and token_count do not apply).

        Returns None per completion while calibrating. If D_q is 0 (at least a q-fraction of the
        starting rollouts never reflect), nobody reflects less than it and every score is 0 (paper
        form) or 1 (code form).
        Metrics: `density_mean`, `reflections_mean`, `calibrating` (1 while calibrating), `d_q`; with
        match "rea_rl", `reasoning_tokens_exact` (share of completions whose tokens were counted from ids).
        """
        densities, reflections, exact = [], [], 0
        for i, (text, n_tok) in enumerate(zip(batch.completions, batch.num_tokens)):
            if match == "rea_rl":
                count = count_rea_rl_reflections(rea_rl_reasoning(text), keywords)
                from_ids = rea_rl_reasoning_token_ids(batch.token_ids[i], batch.think_ids) if batch.token_ids else None
                exact += from_ids is not None
                tokens = float(from_ids) if from_ids is not None else rea_rl_reasoning_tokens(text, n_tok)
            else:
                reasoning = think_content(text, think_preopened=think_preopened)
                count = count_reflections(reasoning, keywords, merge_chars)
                tokens = reasoning_tokens(text, n_tok, think_preopened, token_count)
            reflections.append(count)
            densities.append(count / tokens if tokens > 0 else 0.0)
        n = max(len(batch), 1)
        metrics = {"density_mean": sum(densities) / n, "reflections_mean": sum(reflections) / n}
        if match == "rea_rl":
            metrics["reasoning_tokens_exact"] = exact / n
        ref = d_q if d_q is not None else (1.0 / threshold if threshold else self.calibrated_d_q)
        if ref is None:
            self.calls += 1
            self.densities.extend(densities)
            if self.calls >= calibration_steps and self.densities:
                self.calibrated_d_q = quantile(self.densities, q)
                self.densities = []
            metrics["calibrating"] = 1.0
            if self.calibrated_d_q is not None:
                metrics["d_q"] = self.calibrated_d_q
            return RewardOutput([None] * len(batch), metrics)
        metrics["calibrating"] = 0.0
        metrics["d_q"] = float(ref)
        scores: list[float | None] = []
        for d in densities:
            ratio = d / ref if ref > 0 else math.inf
            if form == "code":
                scores.append(min(1.0, ratio))
            else:
                scores.append(min(0.0, ratio - 1.0))
        return RewardOutput(scores, metrics)


REWARDS.register("reflection_density")(ReflectionDensity())
