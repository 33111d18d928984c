"""Pulling the final answer out of a completion: `\\boxed{}`, `<answer>`, `#### N`, last number, A-D letters.

Every function here is pure string work over untrusted model output: linear scans and simple
regular expressions (no nested quantifiers), never raising, and returning None when there is no
answer. The order in which extractors are tried is the task's `extract` option; the first that finds
something wins.
"""

from __future__ import annotations

import re

from aha.errors import AhaError
from aha.tasks.formatting import last_answer_block

# names accepted in a task's `extract` option
EXTRACTORS = ("boxed", "answer_tag", "hashes", "last_number")
CHOICE_EXTRACTORS = ("boxed", "answer_tag", "phrase", "last_letter")

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_NUMBER = re.compile(r"(?<![\w.])[-−]?\$?\d(?:[\d,]*\d)?(?:\.\d+)?")
_HASHES = re.compile(r"####\s*([^\n]+)")


def _balanced(text: str, open_at: int) -> int | None:
    """Index just past the brace that closes the `{` at `open_at`; None when it is never closed.

    `\\{` and `\\}` are escaped literal braces (sets) and do not count.
    """
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _box_content(text: str, start: int) -> str | None:
    """Content of the box whose command starts at `start`; None if unclosed."""
    i = text.find("\\", start)
    command_end = i + (len("\\boxed") if text.startswith("\\boxed", i) else len("\\fbox"))
    j = command_end
    while j < len(text) and text[j] in " \t":
        j += 1
    if j < len(text) and text[j] == "{":
        end = _balanced(text, j)
        return None if end is None else text[j + 1:end - 1]
    if j == command_end:
        return None  # `\boxedx`: not a box command
    # `\boxed 5`: the box holds the next whitespace-free token (a `$` closes math mode)
    token = re.match(r"[^\s$]+", text[j:])
    return token.group(0) if token else None


def all_boxed(text: str) -> list[str | None]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}` / `\\boxed X` in order (None for an unclosed box)."""
    if not isinstance(text, str):
        return []
    return [_box_content(text, m.start()) for m in _BOX_START.finditer(text)]


def last_boxed(text: str) -> str | None:
    """Content of the last box, stripped; None when there is none, it is empty, or it is never closed.

    An unclosed last box means the answer was cut off: we do not fall back to an earlier box, since
    the model had moved past it.
    """
    if not isinstance(text, str):
        return None
    starts = [m.start() for m in _BOX_START.finditer(text)]
    if not starts:
        return None
    # only the last box is scanned: measuring every box of "\\boxed{" * n would be quadratic
    content = _box_content(text, starts[-1])
    return content.strip() or None if content is not None else None


def unbox(text: str) -> str:
    """`text` with an enclosing `\\boxed{...}` removed (when the whole string is one box)."""
    stripped = text.strip()
    for cmd in _BOX_COMMANDS:
        if stripped.startswith(cmd):
            inner = _box_content(stripped, 0)
            if inner is not None and stripped.endswith("}") and stripped.count(cmd) == 1:
                return inner.strip()
    return stripped


def answer_tag(text: str) -> str | None:
    """Content of the last `<answer>` block; a box inside it is opened (`<answer>\\boxed{5}</answer>` -> 5)."""
    block = last_answer_block(text)
    if block is None:
        return None
    boxed = last_boxed(block)
    block = boxed if boxed is not None else block
    return block.strip() or None


def hashes(text: str) -> str | None:
    """What follows the last `#### ` marker (GSM8K's answer line), up to the end of that line."""
    if not isinstance(text, str):
        return None
    found = _HASHES.findall(text)
    return found[-1].strip() or None if found else None


def last_number(text: str) -> str | None:
    """The last number written in the text (sign, thousands separators and decimals kept)."""
    if not isinstance(text, str):
        return None
    found = _NUMBER.findall(text)
    return found[-1].replace("$", "") if found else None


_FUNCTIONS = {"boxed": last_boxed, "answer_tag": answer_tag, "hashes": hashes, "last_number": last_number}


def check_extractors(names: list[str] | tuple[str, ...] | str, allowed: tuple[str, ...] = EXTRACTORS) -> list[str]:
    """Validate a task's `extract` option; a single name is accepted as a one-item list."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise AhaError(f"extract must name at least one extractor: {', '.join(allowed)}")
    for name in names:
        if name not in allowed:
            raise AhaError(f"unknown answer extractor {name!r}; valid: {', '.join(allowed)}")
    return names


def extract_answer(text: str, order: list[str] | tuple[str, ...] = ("boxed", "answer_tag")) -> tuple[str, str] | None:
    """The first answer found by the extractors in `order`, as (answer, extractor name); else None.

    text: a completion (the assistant's reply). order: names from EXTRACTORS.
    """
    if not isinstance(text, str):
        return None
    for name in order:
        found = _FUNCTIONS[name](text)
        if found:
            return found, name
    return None


# ------------------------------------------------------------------------------- multiple choice

# Matched against text whose whitespace runs are squeezed to one space, so every quantifier below is
# bounded and the scan stays linear on hostile input. Keywords match in any case, the captured letter
# only in upper case, so the article "a" in "the answer is a prime" never reads as option A.
_CHOICE_PHRASES = tuple(re.compile(p) for p in (
    # "the answer is (B)", "Answer: B", "final answer: **C**", "the correct option is D"
    r"(?i:answer|option|choice) ?(?i:is|:|=)? ?(?i:(?:option|choice) )?[:(\[*{]{0,3} ?([A-J])\b",
    # "I pick option C", "choice (A)"
    r"\b(?i:option|choice) \(?([A-J])\b",
    # "**D**"
    r"\*\*\(?([A-J])\)?\*\*",
))
_ONLY_LETTER = re.compile(r"^ ?(?:\\text\{ ?)?[(\[{]? ?([A-J]) ?[)\]}]? ?\}? ?\.? ?$")
_LONE_LETTER = re.compile(r"^ ?(?:\\text\{ ?)?[(\[{]? ?([A-J]) ?[)\]}]? ?\}? ?(?:[.):]|$)")
_SPACES = re.compile(r"\s+")


def _squeeze(text: str) -> str:
    return _SPACES.sub(" ", text)


def choice_letter(text: str, letters: str = "ABCD", choices: list[str] | None = None) -> str | None:
    """A letter among `letters` named by a short answer: "B", "(B)", "B) 12", "\\text{(B)}", "Answer: B".

    choices: the option texts in letter order; an answer that is the text of one of them maps to its
    letter. Tried in this order: a letter alone ("(B)"); the exact text of an option (so an option
    "(A) and (B) both" is not read as A); a letter heading the answer ("B) 12"); an "answer is B"
    phrase; an option's text differing only in the case of its first letter ("the mitochondria").
    Case elsewhere is significant: `Bb Bb` is not the option `BB BB` (genotypes).
    """
    if not isinstance(text, str):
        return None
    s = _squeeze(text.strip())
    if not s:
        return None
    m = _ONLY_LETTER.match(s)
    if m and m.group(1) in letters:
        return m.group(1)
    plain = _squash(s)
    if choices and plain:
        for letter, choice in zip(letters, choices):
            if plain == _squash(choice):
                return letter
    m = _LONE_LETTER.match(s)
    if m and m.group(1) in letters:
        return m.group(1)
    letter = _last_phrase(s, letters)
    if letter:
        return letter
    if choices and plain:
        for letter, choice in zip(letters, choices):
            if _first_lower(plain) == _first_lower(_squash(choice)):
                return letter
    return None


def _first_lower(s: str) -> str:
    return s[:1].lower() + s[1:]


def _last_phrase(text: str, letters: str) -> str | None:
    """The letter of the last "answer is X"-style phrase (the first pattern that matches at all wins)."""
    text = _squeeze(text)
    for pattern in _CHOICE_PHRASES:
        found = [x for x in pattern.findall(text) if x in letters]
        if found:
            return found[-1]
    return None


def _squash(s: str) -> str:
    """An option's text for comparison: spaces, `$`, `\\text{` and closing braces dropped (case kept)."""
    return re.sub(r"[\s$]|\\text\{|\}", "", s).rstrip(".")


def extract_choice(text: str, order: list[str] | tuple[str, ...] = ("boxed", "answer_tag", "phrase"),
                   letters: str = "ABCD", choices: list[str] | None = None) -> tuple[str, str] | None:
    """The chosen letter of a multiple-choice completion, as (letter, extractor name); else None.

    boxed / answer_tag: the letter inside the last box / answer block; phrase: the last phrasing like
    "the answer is (C)" anywhere in the text; last_letter: a letter alone on the final line.
    """
    if not isinstance(text, str):
        return None
    for name in order:
        letter = None
        if name == "boxed":
            content = last_boxed(text)
            letter = choice_letter(content, letters, choices) if content else None
        elif name == "answer_tag":
            content = answer_tag(text)
            letter = choice_letter(content, letters, choices) if content else None
        elif name == "phrase":
            letter = _last_phrase(text, letters)
        elif name == "last_letter":
            lines = [ln for ln in text.strip().splitlines() if ln.strip()]
            if lines:
                m = _LONE_LETTER.match(_squeeze(lines[-1].strip()))
                letter = m.group(1) if m and m.group(1) in letters else None
        if letter:
            return letter, name
    return None
