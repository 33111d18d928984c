"""The Knights-and-Knaves verifier: a table of completions with hand-written verdicts, and robustness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aha.tasks.knights_knaves.verifier import is_complete, parse_roles, verify_answer

# "Ann" is contained in "Anna"; solution: Ann knight, Anna knave, Bo knight
NAMES = ["Ann", "Anna", "Bo"]
SOLUTION = [True, False, True]
GOLD = "(1) Ann is a knight\n(2) Anna is a knave\n(3) Bo is a knight"


def wrap(answer: str, think: str = "reasoning") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


# (completion, think_preopened, correct, format_ok, partial, error substring or None)
CASES = [
    # the gold answer, well formed
    (wrap(GOLD), False, True, True, 1.0, None),
    # one person flipped: Anna claimed a knight
    (wrap(GOLD.replace("Anna is a knave", "Anna is a knight")), False, False, True, 2 / 3,
     "wrong: Anna is a knave"),
    # right roles but no tags at all: nothing to read
    (GOLD, False, False, False, 0.0, "no <answer> block"),
    # two answer blocks: the last one counts (right here), but the format is broken
    ("<think>x</think><answer>(1) Ann is a knave</answer><answer>" + GOLD + "</answer>",
     False, True, False, 1.0, "format: <answer> appears 2 times"),
    # two answer blocks, the last one wrong
    ("<think>x</think><answer>" + GOLD + "</answer><answer>(1) Ann is a knave\n(2) Anna is a knave\n"
     "(3) Bo is a knight</answer>", False, False, False, 2 / 3, "wrong: Ann is a knight"),
    # "Ann" must not be read inside "Anna": Ann is simply missing here
    (wrap("(2) Anna is a knave\n(3) Bo is a knight"), False, False, True, 2 / 3, "missing: Ann"),
    # an extra person not in the puzzle makes the answer wrong even though all three are right
    (wrap(GOLD + "\n(4) Zed is a knave"), False, False, True, 1.0, "not in the puzzle: Zed"),
    # lines in another order, other numbering and other case are fine
    (wrap("Bo is a knight\nANNA IS A KNAVE\nann is a knight"), False, True, True, 1.0, None),
    # the same person named with both roles is wrong
    (wrap(GOLD + "\nAnn is a knave"), False, False, True, 2 / 3, "named with both roles: Ann"),
    # only knight/knave count: "not a knave" and "liar" are no claims
    (wrap("(1) Ann is not a knave\n(2) Anna is a liar\n(3) Bo is a knight"), False, False, True, 1 / 3,
     "missing: Ann, Anna"),
    # pre-opened <think>: the completion starts with the reasoning
    ("reasoning</think>\n<answer>" + GOLD + "</answer>", True, True, True, 1.0, None),
    # pre-opened <think> repeated by the model: format fails, answer still read
    (wrap(GOLD), True, True, False, 1.0, "format: <think> repeated"),
    # text after </answer> breaks the strict format only
    (wrap(GOLD) + " Done.", False, True, False, 1.0, "format: text after </answer>"),
    # an answer block without any role claim
    (wrap("I cannot tell."), False, False, True, 0.0, "no 'NAME is a knight/knave'"),
    # "is knight" without the article is accepted
    (wrap("Ann is knight, Anna is knave, Bo is knight"), False, True, True, 1.0, None),
]


@pytest.mark.parametrize("text, preopened, correct, format_ok, partial, error", CASES)
def test_verifier_table(text, preopened, correct, format_ok, partial, error):
    v = verify_answer(text, NAMES, SOLUTION, think_preopened=preopened)
    assert (v.correct, v.format_ok) == (correct, format_ok)
    assert v.partial == pytest.approx(partial)
    if error is None:
        assert v.error is None
    else:
        assert v.error is not None and error in v.error


def test_parsed_assignment_and_completeness():
    v = verify_answer(wrap(GOLD), NAMES, SOLUTION)
    assert v.parsed == {"Ann": "knight", "Anna": "knave", "Bo": "knight"} and is_complete(v.parsed, NAMES)
    v = verify_answer(wrap(GOLD + "\n(4) Zed is a knave"), NAMES, SOLUTION)
    assert v.parsed["Zed"] == "knave" and not is_complete(v.parsed, NAMES)
    assert verify_answer("nothing", NAMES, SOLUTION).parsed is None


def test_a_name_that_ends_another_name():
    # "Mary Jo" and "Jo": the longer name owns the claim "Mary Jo is a knave"
    parsed, extras = parse_roles("Mary Jo is a knave\nJo is a knight", ["Mary Jo", "Jo"])
    assert parsed == {"Mary Jo": "knave", "Jo": "knight"} and extras == []
    # hyphenated and possessive forms are not the bare name
    parsed, extras = parse_roles("Ann-Marie is a knave", ["Ann", "Marie"])
    assert parsed == {"Ann-Marie": "knave"} and extras == ["Ann-Marie"]


def test_names_with_regex_characters_are_literal():
    parsed, _ = parse_roles("(1) A.J. is a knight\n(2) Bo+ is a knave", ["A.J.", "Bo+"])
    assert parsed == {"A.J.": "knight", "Bo+": "knave"}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_random_text(text):
    v = verify_answer(text, NAMES, SOLUTION)
    assert 0.0 <= v.partial <= 1.0 and isinstance(v.correct, bool)


_PIECES = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "Ann", "Anna", "Bo", " is a ",
                           "knight", "knave", "\n", "(1) ", " ", "is", "a", "Zed"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=60), st.booleans())
def test_never_raises_on_tag_soup(pieces, preopened):
    v = verify_answer("".join(pieces), NAMES, SOLUTION, think_preopened=preopened)
    assert 0.0 <= v.partial <= 1.0
    if v.correct:
        assert v.parsed == {"Ann": "knight", "Anna": "knave", "Bo": "knight"}


@pytest.mark.parametrize("bad", [None, 12, b"<answer>x</answer>", ["list"]])
def test_non_text_input_is_a_verdict_not_an_error(bad):
    v = verify_answer(bad, NAMES, SOLUTION)
    assert not v.correct and not v.format_ok and v.error


def test_adversarial_inputs_are_bounded():
    # many unclosed <answer> tags would make the block regex quadratic (minutes for these inputs); they
    # are rejected up front, and over-long completions are not scanned at all
    for text in ("<answer>" * 20_000, "a" * 150_000 + "<answer>" * 10, "x" * 300_000, "Ann is " * 20_000):
        v = verify_answer(text, NAMES, SOLUTION)
        assert not v.correct and v.error
