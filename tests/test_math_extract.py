"""Answer extraction from completions: boxes, <answer> blocks, `####`, last number, A-D letters."""

from __future__ import annotations

import pytest

from aha.errors import AhaError
from aha.tasks.math.extract import (
    all_boxed,
    answer_tag,
    check_extractors,
    choice_letter,
    extract_answer,
    extract_choice,
    last_boxed,
    unbox,
)

ALL = ["boxed", "answer_tag", "hashes", "last_number"]

BOXED_CASES = [
    # (completion, expected content of the last box)
    (r"so the answer is \boxed{42}.", "42"),  # plain box
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),  # nested braces are balanced
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),  # two levels of nesting
    (r"first \boxed{1}, then I fix it: \boxed{2}", "2"),  # several boxes: the last wins
    (r"\boxed 5", "5"),  # `\boxed ` without braces takes the next token
    (r"$\boxed 42$", "42"),  # ... and stops at the closing `$`
    (r"\fbox{7}", "7"),  # \fbox counts as a box
    (r"\boxed{}", None),  # an empty box is no answer
    (r"\boxed{   }", None),  # a blank box is no answer either
    (r"\boxed{\frac{1}{2}", None),  # unbalanced: the box never closes
    (r"\boxed{3} but then \boxed{\frac{1}{2}", None),  # the last box is cut off: no fallback to 3
    (r"\boxed  {x}", "x"),  # spaces between the command and its brace
    (r"\boxedx{3}", None),  # not the \boxed command
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces of a set do not close the box
    (r"\boxed{\text{(B)}}", r"\text{(B)}"),  # text inside a box
    ("no box here", None),  # nothing
]


@pytest.mark.parametrize("text, expected", BOXED_CASES)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


EXTRACT_CASES = [
    # (completion, extractor order, expected (answer, extractor) or None)
    (r"<answer>\boxed{5}</answer>", ["answer_tag"], ("5", "answer_tag")),  # a box inside <answer> is opened
    ("<think>2+2</think><answer> 4 </answer>", ["boxed", "answer_tag"], ("4", "answer_tag")),  # tag when no box
    (r"<answer>7</answer> \boxed{8}", ["boxed", "answer_tag"], ("8", "boxed")),  # order decides: box first
    (r"<answer>7</answer> \boxed{8}", ["answer_tag", "boxed"], ("7", "answer_tag")),  # ... or tag first
    ("<answer>1</answer> then <answer>2</answer>", ["answer_tag"], ("2", "answer_tag")),  # last block wins
    ("<answer></answer>", ["answer_tag"], None),  # empty answer block
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", ["hashes"], ("72", "hashes")),  # GSM8K answer line
    ("so the total is 1,234 dollars", ["boxed", "answer_tag"], None),  # no fallback by default
    ("so the total is 1,234 dollars", ALL, ("1,234", "last_number")),  # last number keeps separators
    ("it costs -$5 in the end", ALL, ("-5", "last_number")),  # sign kept, currency sign dropped
    ("between 3.5 and 7.25", ALL, ("7.25", "last_number")),  # decimals kept
    ("x2 has no number", ["last_number"], None),  # digits glued to a word are not a number
]


@pytest.mark.parametrize("text, order, expected", EXTRACT_CASES)
def test_extract_answer(text, order, expected):
    assert extract_answer(text, order) == expected


def test_extract_never_raises_on_non_text():
    # model output is untrusted: anything that is not a string is simply no answer
    assert extract_answer(None, ALL) is None  # type: ignore[arg-type]
    assert last_boxed(123) is None  # type: ignore[arg-type]
    assert answer_tag(None) is None  # type: ignore[arg-type]


def test_all_boxed_and_unbox():
    # every box in order, None marking the unclosed one
    assert all_boxed(r"\boxed{1} \fbox{2} \boxed{3") == ["1", "2", None]
    # unbox removes one enclosing box only when the whole string is that box
    assert unbox(r"\boxed{\frac12}") == r"\frac12"
    assert unbox(r"\boxed{1}+\boxed{2}") == r"\boxed{1}+\boxed{2}"


def test_extractor_names_are_checked():
    assert check_extractors("boxed") == ["boxed"]
    with pytest.raises(AhaError, match="unknown answer extractor 'boxd'"):
        check_extractors(["boxd"])
    with pytest.raises(AhaError, match="at least one"):
        check_extractors([])


def test_hostile_input_is_linear():
    # long runs that would make a backtracking pattern explode finish at once
    text = "answer" + " " * 50_000 + "x" + "{" * 50_000 + r"\boxed{" * 1000
    assert extract_choice(text, ["boxed", "answer_tag", "phrase", "last_letter"]) is None
    assert extract_answer(text, ALL) is None


CHOICE_CASES = [
    # (completion, expected letter)
    ("The answer is (B).", "B"),  # the commonest phrasing
    ("Answer: C", "C"),  # label with colon
    ("Therefore, the correct option is D.", "D"),  # "option is"
    (r"so we get \boxed{A}", "A"),  # boxed letter
    (r"\boxed{\text{(C)}}", "C"),  # boxed text with parentheses
    ("<answer>(A) 12</answer>", "A"),  # letter with its option text in the answer block
    ("**C**", "C"),  # bold letter
    ("I pick option B because ...", "B"),  # "option X" anywhere
    ("the answer is a prime number", None),  # the article "a" is not option A
    ("the answer is 42", None),  # a number is not a letter
    ("The answer is (E).", None),  # E is not among A-D
    ("First I thought the answer is A. Wait, the answer is (D).", "D"),  # the last phrasing wins
]


@pytest.mark.parametrize("text, expected", CHOICE_CASES)
def test_extract_choice(text, expected):
    found = extract_choice(text, ["boxed", "answer_tag", "phrase", "last_letter"])
    assert (found[0] if found else None) == expected


def test_choice_letter_by_option_text():
    # an answer that repeats an option's text maps to that option's letter
    assert choice_letter("12", "ABCD", ["10", "11", "12", "13"]) == "C"
    assert choice_letter("$\\frac{1}{2}$", "ABCD", ["\\frac{1}{2}", "1", "2", "3"]) == "A"
    assert choice_letter("B", "ABC") == "B"
    assert choice_letter("D", "ABC") is None  # only three options
