"""The `<think>...</think><answer>...</answer>` output contract shared by tasks and rewards.

Used by every verifier that reads an answer block and by the format rewards, so there is one
definition of "well formed". All functions are pure string work, linear in the input, and never
raise.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def last_answer_block(text: str) -> str | None:
    """Content of the last complete `<answer>...</answer>` block, stripped; None if there is none."""
    if not isinstance(text, str):
        return None
    # the last closing tag, then the nearest opening tag before it: linear even on text with
    # thousands of unclosed tags (a regex scan would be quadratic there)
    end = text.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return text[start + len(ANSWER_OPEN):end].strip()


def think_content(text: str, think_preopened: bool = False) -> str:
    """The reasoning: text between `<think>` (or the start, if pre-opened) and the first `</think>`.

    Without a `</think>`, everything after the opening (or the whole text) counts as reasoning.
    """
    if not isinstance(text, str):
        return ""
    start = 0
    if not think_preopened:
        i = text.find(THINK_OPEN)
        if i >= 0:
            start = i + len(THINK_OPEN)
    else:
        # a model may still repeat the pre-opened tag; skip it if it is the first thing it wrote
        stripped = text.lstrip()
        if stripped.startswith(THINK_OPEN):
            start = len(text) - len(stripped) + len(THINK_OPEN)
    end = text.find(THINK_CLOSE, start)
    return text[start:] if end < 0 else text[start:end]


@dataclass
class FormatCheck:
    ok: bool
    reason: str | None = None


def check_think_answer(text: str, think_preopened: bool = False) -> FormatCheck:
    """Strict structure: `<think>R</think>` then `<answer>A</answer>`, each tag exactly once, in order,
    only whitespace before `<think>` and after `</answer>`.

    think_preopened: the prompt already ended with `<think>`, so the completion must not contain
    the opening tag again and starts directly with the reasoning.
    """
    if not isinstance(text, str):
        return FormatCheck(False, "completion is not text")
    counts = {tag: text.count(tag) for tag in _TAGS}
    expected_open = 0 if think_preopened else 1
    if counts[THINK_OPEN] != expected_open:
        if think_preopened:
            return FormatCheck(False, "<think> repeated although the prompt opened it")
        return FormatCheck(False, f"<think> appears {counts[THINK_OPEN]} times, expected once")
    for tag in (THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        if counts[tag] != 1:
            return FormatCheck(False, f"{tag} appears {counts[tag]} times, expected once")
    think_close = text.index(THINK_CLOSE)
    answer_open = text.index(ANSWER_OPEN)
    answer_close = text.index(ANSWER_CLOSE)
    if not think_preopened:
        think_open = text.index(THINK_OPEN)
        if text[:think_open].strip():
            return FormatCheck(False, "text before <think>")
        if think_open > think_close:
            return FormatCheck(False, "</think> before <think>")
    if not (think_close < answer_open < answer_close):
        return FormatCheck(False, "tags out of order: expected </think> then <answer> then </answer>")
    if text[think_close + len(THINK_CLOSE):answer_open].strip():
        return FormatCheck(False, "text between </think> and <answer>")
    if text[answer_close + len(ANSWER_CLOSE):].strip():
        return FormatCheck(False, "text after </answer>")
    return FormatCheck(True)


def tag_count_score(text: str) -> float:
    """Partial credit in [0, 1]: 0.25 for each of the four tags that appears exactly once."""
    if not isinstance(text, str):
        return 0.0
    return sum(0.25 for tag in _TAGS if text.count(tag) == 1)
