"""Reflection-phrase counting used by eval and distill reports."""

from __future__ import annotations

import pytest

from aha.eval.reflection import count_reflections, reflection_counts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Let's reconsider Ann.", 1),  # the longer phrase wins, counted once
        ("That contradicts Bob; reconsider.", 2),  # two different phrases
        ("Wait. wait! WAIT", 3),  # case-insensitive, every occurrence
        ("I will re-evaluate and double-check.", 2),  # hyphenated phrases
        ("awaiting the verifyer", 0),  # inside other words: no match
        ("", 0),  # empty text
    ],
)
def test_counts(text, expected):
    assert count_reflections(text) == expected


def test_custom_phrases_and_breakdown():
    assert reflection_counts("Hmm, hmm. Alternatively...", ["hmm", "alternatively"]) == {"hmm": 2, "alternatively": 1}
    assert count_reflections(None) == 0  # never raises on non-text
