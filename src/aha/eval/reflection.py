"""Counting reflection phrases in model outputs (seed 000 reports how often they appear).

The default list mixes the phrases the research counts ("re-evaluate", "try a different approach",
"wait", ...) with the wording of aha's own reflective Knights-and-Knaves traces ("contradiction",
"reconsider"). Matching is case-insensitive on word boundaries; each phrase occurrence counts once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_PHRASES = (
    "re-evaluate", "reevaluate", "re-examine", "reconsider", "let's reconsider", "try a different approach",
    "try another", "double-check", "double check", "verify", "let me check", "contradiction", "contradicts",
    "wait", "on second thought", "mistake", "backtrack", "go back",
)


def _pattern(phrases: Iterable[str]) -> re.Pattern[str]:
    # longest first, so "let's reconsider" is one match rather than "reconsider" inside it
    ordered = sorted({p.lower() for p in phrases}, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(p) for p in ordered) + r")(?![\w-])", re.IGNORECASE)


_DEFAULT = _pattern(DEFAULT_PHRASES)


def reflection_counts(text: str, phrases: Iterable[str] | None = None) -> dict[str, int]:
    """Occurrences of each phrase in `text` (lower-cased phrase -> count); absent phrases omitted."""
    if not isinstance(text, str):
        return {}
    pattern = _DEFAULT if phrases is None else _pattern(phrases)
    counts: dict[str, int] = {}
    for m in pattern.finditer(text):
        key = m.group(0).lower()
        counts[key] = counts.get(key, 0) + 1
    return counts


def count_reflections(text: str, phrases: Iterable[str] | None = None) -> int:
    """Total number of reflection-phrase occurrences in `text`."""
    return sum(reflection_counts(text, phrases).values())
