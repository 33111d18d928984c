"""Strict verifier of Knights-and-Knaves answers.

Grading of one completion:
- format: `aha.tasks.formatting.check_think_answer` (think and answer tags exactly once, in order,
  nothing but whitespace after `</answer>`; honours a pre-opened `<think>`);
- answer: the last `<answer>...</answer>` block. A role claim is `NAME is [a] knight|knave`; the name
  is matched case-insensitively and must not be preceded by a character that could continue a name
  (letter, digit, `_`, `'`, `-`), so "Ann" never matches inside "Anna" or "Jo-Ann", and when one name
  ends another ("Mary Ann" and "Ann") the longer name owns the claim. Any other `WORD is a
  knight|knave` names a person who is not in the puzzle, which makes the answer wrong.

`Verdict.correct` judges the answer content only (every person named with exactly one role, each
right, nobody extra); `Verdict.format_ok` is reported separately, and the Logic-RL reward combines
both. `Verdict.parsed` maps each claimed person to "knight", "knave" or "conflict" (named with both
roles), including extra people under the name as written; None when the answer has no claim.

Model output is untrusted: the verifier never raises, rejects over-long completions and completions
with many `<answer>` tags up front (many unclosed tags would make the answer-block search quadratic),
and otherwise does one linear scan per step.
"""

from __future__ import annotations

import re
from functools import lru_cache

from aha.tasks.base import Verdict
from aha.tasks.formatting import ANSWER_OPEN, check_think_answer, last_answer_block

MAX_CHARS = 200_000
MAX_ANSWER_TAGS = 16
# " is a knight" / " is knave": the scan starts only where a whitespace run starts, so it stays linear
_CLAIM = re.compile(r"(?<!\s)\s+is\s+(?:a\s+)?(knight|knave)(?![\w'\-])", re.IGNORECASE)
_SUBJECT = re.compile(r"[^\W\d_][\w'\-]*$")
_SUBJECT_WINDOW = 64  # longest extra-person word looked at


def _is_name_char(ch: str) -> bool:
    """Characters that continue a name: a name must not be preceded by one ("Anna" is not "...nna")."""
    return ch.isalnum() or ch in "_'-"


@lru_cache(maxsize=4096)
def _folded(names: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
    """(index, lower-cased name), longest first so that "Mary Jo" wins over "Jo"."""
    return tuple(sorted(((i, n.lower()) for i, n in enumerate(names)), key=lambda t: -len(t[1])))


def parse_roles(block: str, names: tuple[str, ...] | list[str]) -> tuple[dict[str, str], list[str]]:
    """Role claims in an answer block.

    block: the text inside `<answer>...</answer>`.
    names: the puzzle's people.
    Returns (parsed, extras): parsed maps each claimed name (puzzle names as given, extra people as
    written) to "knight", "knave" or "conflict"; extras lists the names not in the puzzle.
    """
    names = tuple(names)
    folded = _folded(names)
    roles: dict[int, set[str]] = {}
    extra_roles: dict[str, set[str]] = {}
    for m in _CLAIM.finditer(block):
        end = m.start()  # the subject ends where the whitespace before "is" starts
        role = m.group(1).lower()
        for idx, name in folded:
            start = end - len(name)
            if (start >= 0 and block[start:end].lower() == name
                    and (start == 0 or not _is_name_char(block[start - 1]))):
                roles.setdefault(idx, set()).add(role)
                break
        else:
            window = block[max(0, end - _SUBJECT_WINDOW):end]
            subject = _SUBJECT.search(window)
            if subject is not None:
                first = end - len(window) + subject.start()
                if first == 0 or not _is_name_char(block[first - 1]):
                    extra_roles.setdefault(subject.group(0), set()).add(role)
    parsed: dict[str, str] = {}
    for idx in sorted(roles):
        found = roles[idx]
        parsed[names[idx]] = found.pop() if len(found) == 1 else "conflict"
    extras = [who for who in extra_roles if who not in parsed]
    for who in extras:
        found = extra_roles[who]
        parsed[who] = found.pop() if len(found) == 1 else "conflict"
    return parsed, extras


def is_complete(parsed: object, names: tuple[str, ...] | list[str]) -> bool:
    """The parse names exactly the puzzle's people, each with one role (Logic-RL's "parseable")."""
    return (isinstance(parsed, dict) and set(parsed) == set(names)
            and all(v in ("knight", "knave") for v in parsed.values()))


def _join(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def verify_answer(text: str, names: tuple[str, ...] | list[str], solution: list[bool] | tuple[bool, ...],
                  think_preopened: bool = False) -> Verdict:
    """Grade a completion against a puzzle's solution; never raises.

    text: the assistant's reply (after the prompt; without `<think>` when the prompt pre-opened it).
    names: the people in quiz order; solution: their roles (True = knight).
    think_preopened: the prompt ended with `<think>`.
    """
    try:
        return _verify(text, tuple(names), tuple(bool(x) for x in solution), think_preopened)
    except Exception as exc:  # noqa: BLE001 - a verifier must never take a run down
        return Verdict(error=f"verifier error: {type(exc).__name__}")


def _verify(text: str, names: tuple[str, ...], solution: tuple[bool, ...], think_preopened: bool) -> Verdict:
    if not isinstance(text, str):
        return Verdict(error="completion is not text")
    if len(text) > MAX_CHARS:
        return Verdict(error=f"completion longer than {MAX_CHARS} characters")
    if text.count(ANSWER_OPEN) > MAX_ANSWER_TAGS:
        return Verdict(error=f"more than {MAX_ANSWER_TAGS} <answer> tags")
    fmt = check_think_answer(text, think_preopened)
    format_error = None if fmt.ok else f"format: {fmt.reason}"
    block = last_answer_block(text)
    if block is None:
        return Verdict(format_ok=fmt.ok, error="no <answer> block")
    parsed, extras = parse_roles(block, names)
    if not parsed:
        return Verdict(format_ok=fmt.ok, error="no 'NAME is a knight/knave' line in the answer")
    conflicts = [n for n in names if parsed.get(n) == "conflict"]
    missing = [n for n in names if n not in parsed]
    wrong = [n for n, k in zip(names, solution) if parsed.get(n) == ("knave" if k else "knight")]
    right = sum(parsed.get(n) == ("knight" if k else "knave") for n, k in zip(names, solution))
    problems = []
    if conflicts:
        problems.append(f"named with both roles: {_join(conflicts)}")
    if missing:
        problems.append(f"missing: {_join(missing)}")
    if extras:
        problems.append(f"not in the puzzle: {_join(extras)}")
    if wrong:
        problems.append("wrong: " + _join([f"{n} is a {'knight' if k else 'knave'}"
                                           for n, k in zip(names, solution) if n in wrong]))
    correct = not problems
    return Verdict(parsed=parsed, format_ok=fmt.ok, correct=correct, partial=right / len(names),
                   error="; ".join(problems) if problems else format_error)
