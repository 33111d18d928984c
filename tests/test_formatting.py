"""The shared <think>/<answer> contract used by verifiers and format rewards."""

from __future__ import annotations

import pytest

from aha.tasks.formatting import check_think_answer, last_answer_block, tag_count_score, think_content


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>a</answer>", "a"),  # one block
        ("<answer>a</answer> then <answer> b </answer>", "b"),  # the last block wins, stripped
        ("<answer>a</answer><answer>b", "a"),  # an unclosed last block is ignored
        ("<answer><answer>c</answer>", "c"),  # nearest opening tag before the last closing one
        ("no tags", None),  # nothing to extract
        ("</answer><answer>", None),  # closing before opening
        ("<answer>" * 20000, None),  # many unclosed tags: linear time, no answer
    ],
)
def test_last_answer_block(text, expected):
    assert last_answer_block(text) == expected


@pytest.mark.parametrize(
    "text, preopened, ok, reason",
    [
        ("<think>r</think><answer>a</answer>", False, True, None),  # canonical
        ("  <think>r</think>\n<answer>a</answer>\n", False, True, None),  # whitespace around is fine
        ("r</think><answer>a</answer>", True, True, None),  # pre-opened think
        ("<think>r</think><answer>a</answer>", True, False, "<think> repeated"),  # opened twice
        ("<think>r</think><answer>a</answer> more", False, False, "text after </answer>"),  # trailing text
        ("x<think>r</think><answer>a</answer>", False, False, "text before <think>"),  # leading text
        ("<think>r</think>x<answer>a</answer>", False, False, "text between"),  # text between blocks
        ("<think>r<answer>a</answer></think>", False, False, "out of order"),  # answer inside think
        ("<think>r</think><answer>a</answer><answer>b</answer>", False, False, "appears 2 times"),  # two answers
        ("<think>r</think>", False, False, "<answer> appears 0 times"),  # no answer
    ],
)
def test_check_think_answer(text, preopened, ok, reason):
    result = check_think_answer(text, preopened)
    assert result.ok is ok
    if reason:
        assert reason in result.reason


def test_think_content_and_tag_count():
    assert think_content("<think>abc</think><answer>x</answer>") == "abc"
    assert think_content("abc</think>", think_preopened=True) == "abc"
    assert think_content("<think>unfinished") == "unfinished"
    assert tag_count_score("<think>a</think><answer>") == 0.75
    assert tag_count_score(None) == 0.0
