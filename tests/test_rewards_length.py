"""Length rewards (REA-RL, Kimi 1.5, cosine) against hand-computed tables."""

from __future__ import annotations

import pytest

from aha.rewards import REWARDS

from .test_rewards_basic import make_batch


def test_rea_rl_length_table():
    batch = make_batch(
        ["x"] * 11,
        correct=[True, True, True, False, True, False, False, False, True, True, False],
        num_tokens=[10, 20, 30, 5, 7, 3, 50, 60, 12, 12, 100],
        group_ids=[0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3],
        truncated=[False] * 10 + [True],
    )
    out = REWARDS.get("length")(batch)
    assert out.scores == pytest.approx([
        0.5,  # group 0: shortest correct answer (L_min = 10, L_max = 30)
        0.0,  # middle: 0.5 - 10/20
        -0.5,  # longest correct
        -0.5,  # wrong, although the shortest of the group
        0.0,  # group 1: the only correct answer, L_max = L_min
        -0.5,  # wrong
        -0.5, -0.5,  # group 2: all wrong
        0.0, 0.0,  # group 3: correct answers of equal length
        -0.5,  # cut off at the cap (so wrong)
    ])
    assert out.metrics["correct_length_mean"] == pytest.approx((10 + 20 + 30 + 7 + 12 + 12) / 6)


def test_rea_rl_length_paper_variant_and_chars():
    batch = make_batch(["ab", "abcdef", "abcd"], correct=[True, True, False], num_tokens=[9, 1, 5])
    # characters: correct lengths 2 and 6 -> +0.5, -0.5; wrong -> 0 as the paper describes
    assert REWARDS.get("length")(batch, wrong=0.0, unit="chars").scores == [0.5, -0.5, 0.0]
    # tokens: the order flips (9 tokens is the longest)
    assert REWARDS.get("length")(batch).scores == [-0.5, 0.5, -0.5]


def test_kimi_length_table():
    texts = ["aaaa", "aa", "a" * 10, "b" * 10, "cc", "cc", "d" * 2, "d" * 6]
    batch = make_batch(texts, correct=[True, False, True, False, True, False, False, False],
                       group_ids=[0, 0, 0, 0, 1, 1, 2, 2])
    assert REWARDS.get("kimi_length")(batch).scores == pytest.approx([
        0.25,  # group 0 (min 2, max 10): correct, 0.5 - 2/8
        0.0,  # wrong and shortest: min(0, 0.5)
        -0.5,  # correct and longest
        -0.5,  # wrong and longest: min(0, -0.5)
        0.0, 0.0,  # group 1: all lengths equal
        0.0, -0.5,  # group 2: all wrong, only the long one is punished
    ])


def test_kimi_length_tokens_unit():
    batch = make_batch(["x", "y"], correct=[True, True], num_tokens=[4, 8])
    assert REWARDS.get("kimi_length")(batch, unit="tokens").scores == [0.5, -0.5]


# (length in chars, correct, expected) with max_len = 100 and open-r1's default values
COSINE_CASES = [
    (0, True, 1.0),  # empty correct answer: max_value_correct
    (50, True, 0.75),  # half way: 0.5 + 0.25 * (1 + cos(pi/2))
    (100, True, 0.5),  # at max_len: min_value_correct
    (150, True, 0.5),  # past max_len: clamped (open-r1 would wrap back to 0.75)
    (0, False, -1.0),  # empty wrong answer: min_value_wrong
    (50, False, -0.75),  # half way
    (100, False, -0.5),  # at max_len: max_value_wrong
    (200, False, -0.5),  # clamped
]


@pytest.mark.parametrize("length,correct,expected", COSINE_CASES)
def test_cosine_length_table(length, correct, expected):
    out = REWARDS.get("cosine_length")(make_batch(["x" * length], correct=[correct]), max_len=100)
    assert out.scores == [pytest.approx(expected)]


def test_cosine_length_tokens_and_custom_values():
    batch = make_batch(["", ""], correct=[True, False], num_tokens=[25, 25])
    # p = 0.25: (1 + cos(pi/4)) / 2 = 0.853553...
    out = REWARDS.get("cosine_length")(batch, max_len=100, unit="tokens", min_value_correct=0.0,
                                       max_value_correct=1.0, min_value_wrong=0.0, max_value_wrong=-1.0)
    assert out.scores == pytest.approx([0.8535534, -0.1464466])
