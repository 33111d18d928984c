"""Reflection counting as the eval, score and distill reports use it: the one rule of
`aha.rewards.reflection.count_reflections` with the report phrases and every occurrence counted."""

from __future__ import annotations

import pytest

from aha.rewards.reflection import (
    REPORT_PHRASES,
    count_reflections,
    count_report_reflections,
    reflection_counts,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Let's reconsider Ann.", 1),  # the longer phrase wins, counted once
        ("That contradicts Bob; reconsider.", 2),  # two different phrases
        ("Wait. wait! WAIT", 3),  # case-insensitive, every occurrence (no merging in reports)
        ("I will re-evaluate and double-check.", 2),  # hyphenated phrases
        ("awaiting the verifyer", 0),  # inside other words: no match
        ("", 0),  # empty text
        # Changed by the shared rule, where a hyphen is a word boundary (as in the density reward).
        # The eval's former rule treated a hyphen as part of a word and counted 0 for each of these.
        ("Let me re-verify that.", 1),  # "verify" in "re-verify" is a reflection
        ("a wait-and-see step", 1),  # "wait" before a hyphen counts
        ("the non-contradiction case", 1),  # "contradiction" after a hyphen counts
    ],
)
def test_counts(text, expected):
    assert count_report_reflections(text) == expected
    assert count_reflections(text, REPORT_PHRASES, merge_chars=0) == expected


def test_reports_count_every_occurrence_the_density_reward_merges():
    text = "Wait, but let me check."
    assert count_report_reflections(text) == 2  # "wait" and "let me check"
    assert count_reflections(text) == 1  # density defaults: wait/but/check within 60 characters chain into one


def test_custom_phrases_and_breakdown():
    assert reflection_counts("Hmm, hmm. Alternatively...", ["hmm", "alternatively"]) == {"hmm": 2, "alternatively": 1}
    assert count_reflections("Hmm, hmm. Alternatively...", ["hmm", "alternatively"], merge_chars=0) == 3
    text = "Wait, let me check: a contradiction. Let's reconsider, wait."
    assert sum(reflection_counts(text, REPORT_PHRASES).values()) == count_report_reflections(text) == 5
    assert count_report_reflections(None) == 0  # never raises on non-text
    assert reflection_counts(None) == {}
