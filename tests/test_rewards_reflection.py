"""Reflection rewards: GRPO_reflection's phrase groups and REA-RL's calibrated density."""

from __future__ import annotations

import pytest

from aha.errors import AhaError
from aha.rewards import REWARDS
from aha.rewards.reflection import (
    ReflectionDensity,
    count_reflections,
    quantile,
    reflection_group_counts,
    reflection_pattern_score,
)

from .test_rewards_basic import make_batch


def wrap(reasoning: str) -> str:
    return f"<think>{reasoning}</think><answer>1</answer>"


# (completion, options, expected) — 1.2 * sum_p w_p (1 - d_p^m_p), capped at 1, rounded to 2 digits
PATTERN_CASES = [
    (wrap("Let me verify this."), {}, 0.18),  # one verification: 1.2 * 0.3 * (1 - 0.5)
    (wrap("Verify. Then verify again."), {}, 0.27),  # two: 1.2 * 0.3 * (1 - 0.25); case-insensitive
    (wrap("I will double-check, via an alternative approach."), {}, 0.42),  # 1.2 * (0.3*0.5 + 0.5*0.4)
    (wrap("My initial calculation was incorrect."), {}, 0.14),  # 1.2 * 0.2 * (1 - 0.4) = 0.144
    (wrap("My initial calculation was incorrect."), {"digits": None}, 0.144),  # unrounded
    (wrap("By cross-validation the value holds."), {}, 0.24),  # group 2 only, not also a "validate"
    (wrap("There is a mistake in step 3, so I am correcting myself."), {}, 0.2),  # 2 corrections: 1.2*0.2*0.84 = 0.2016
    (wrap("6 * 7 = 42"), {}, 0.0),  # no reflection
    ("<think></think><answer>verify</answer>", {}, 0.0),  # empty think: the answer block is not reasoning
    ("", {}, 0.0),  # empty completion
    ("verify", {}, 0.18),  # no tags at all: the whole text is the reasoning
    ("<think>I verify, and verify", {}, 0.27),  # cut off at max length: open think counts to the end
    ("I verify.</think><answer>1</answer>", {"think_preopened": True}, 0.18),  # pre-opened think
    (wrap("verify double-check confirm validate re-examine " * 3 + "alternative approach " * 10
          + "correcting myself " * 10), {}, 1.0),  # saturated: 1.2 * 0.9969 = 1.196, capped at 1
]


@pytest.mark.parametrize("text,options,expected", PATTERN_CASES)
def test_reflection_pattern_table(text, options, expected):
    [score] = REWARDS.get("reflection")(make_batch([text]), **options).scores
    assert score == pytest.approx(expected)


def test_reflection_fires_on_think_blocks():
    # the published code searched "<think>(.*?)" and so scored 0 on every completion with a think block
    out = REWARDS.get("reflection")(make_batch([wrap("Wait, let me double-check that."), wrap("x")]))
    assert out.scores[0] > 0
    assert out.metrics["fired"] == 0.5
    assert out.metrics["verification_matches"] == 0.5


def test_group_counts_keep_phrases_apart():
    counts = reflection_group_counts("step-verification and cross-validation; we verify and validate")
    assert counts == {"verification": 2, "alternative": 2, "correction": 0}


def test_pattern_score_is_capped_by_option():
    assert reflection_pattern_score("verify " * 50 + "alternative approach " * 50, cap=0.5) == 0.5


# (text, keywords, expected reflections)
COUNT_CASES = [
    ("Wait, but let me check.", None, 1),  # three keywords within 60 characters: one reflection
    ("wait" + " " * 55 + "but", None, 1),  # starts 59 characters apart: merged
    ("wait" + " " * 56 + "but", None, 2),  # starts 60 apart: two reflections
    ("wait" + " " * 46 + "but" + " " * 47 + "check", None, 1),  # 50 then 50 apart: chained into one
    ("Waiting is a butter checkpoint", None, 0),  # whole words only
    ("CHECK", None, 1),  # case-insensitive
    ("a double-check", None, 1),  # a hyphen is a word boundary
    ("Alternatively" + "." * 80 + "wait", None, 2),  # far apart
    ("hmm wait", ["hmm"], 1),  # custom keywords replace the defaults
    ("", None, 0),  # empty
]


@pytest.mark.parametrize("text,keywords,expected", COUNT_CASES)
def test_count_reflections_table(text, keywords, expected):
    args = {} if keywords is None else {"keywords": keywords}
    assert count_reflections(text, **args) == expected


def test_quantile_interpolates_linearly():
    assert quantile([0.4, 0.0, 0.2, 0.1, 0.3], 0.2) == pytest.approx(0.08)  # position 0.8 between 0 and 0.1
    assert quantile([5.0], 0.2) == 5.0
    assert quantile([1.0, 3.0], 0.5) == 2.0


# (reasoning, options, expected) with word token counts so densities are easy to read off
DENSITY_CASES = [
    ("a b wait c d", {"d_q": 0.1}, 0.0),  # D = 1/5 = 0.2 >= D_q: no penalty
    ("a b c d e f g h i wait", {"d_q": 0.2}, -0.5),  # D = 0.1: 0.1/0.2 - 1
    ("a b c", {"d_q": 0.2}, -1.0),  # never reflects: -1
    ("", {"d_q": 0.2}, -1.0),  # empty think: density 0
    ("a b c d e f g h i wait", {"d_q": 0.2, "form": "code"}, 0.5),  # code form: min(1, D/D_q)
    ("a b wait c d", {"d_q": 0.1, "form": "code"}, 1.0),  # code form caps at 1
]


@pytest.mark.parametrize("reasoning,options,expected", DENSITY_CASES)
def test_density_table(reasoning, options, expected):
    out = ReflectionDensity()(make_batch([wrap(reasoning)]), token_count="words", **options)
    assert out.scores[0] == pytest.approx(expected)


def test_density_token_share():
    # 40 characters, 7 of them reasoning ("wait aa"), 80 tokens -> 14 reasoning tokens, D = 1/14
    text = "<think>wait aa</think><answer>1</answer>"
    assert len(text) == 40
    out = ReflectionDensity()(make_batch([text], num_tokens=[80]), d_q=1 / 7)
    assert out.scores == [pytest.approx(-0.5)]
    assert out.metrics["density_mean"] == pytest.approx(1 / 14)


def test_density_calibrates_on_first_batches_then_scores():
    reward = ReflectionDensity()
    opts = {"q": 0.5, "calibration_steps": 2, "token_count": "words"}
    b1 = make_batch([wrap("wait a b c d e f g h i"), wrap("wait a b")])  # densities 0.1, 1/3
    b2 = make_batch([wrap("wait a b c"), wrap("wait a")])  # densities 0.25, 0.5
    first = reward(b1, **opts)
    assert first.scores == [None, None] and first.metrics["calibrating"] == 1.0
    second = reward(b2, **opts)
    assert second.scores == [None, None]  # the last calibration batch is still unscored
    d_q = quantile([0.1, 1 / 3, 0.25, 0.5], 0.5)  # = 0.291666...
    assert reward.calibrated_d_q == pytest.approx(d_q)
    third = reward(b1, **opts)
    assert third.scores == [pytest.approx(0.1 / d_q - 1), 0.0]  # below D_q penalised, above not
    assert third.metrics["calibrating"] == 0.0 and third.metrics["d_q"] == pytest.approx(d_q)
    restored = ReflectionDensity()
    restored.load_state_dict(reward.state_dict())
    assert restored(b1, **opts).scores == third.scores


def test_density_zero_quantile_penalises_nobody():
    reward = ReflectionDensity()
    reward(make_batch([wrap("a b c"), wrap("a b c wait")]), q=0.2, token_count="words")  # D_q = 0.05
    assert reward.calibrated_d_q == pytest.approx(0.05)
    zero = ReflectionDensity()
    zero(make_batch([wrap("a b c"), wrap("a b c")]), token_count="words")  # D_q = 0
    assert zero(make_batch([wrap("a"), wrap("wait")]), token_count="words").scores == [0.0, 0.0]


def test_density_registered_instance_and_fresh_copies():
    shared = REWARDS.get("reflection_density")
    copy = shared.fresh()
    assert isinstance(copy, ReflectionDensity) and copy is not shared and copy.calibrated_d_q is None


@pytest.mark.parametrize("options", [{"q": 1.5}, {"d_q": 0.0}, {"calibration_steps": 0}, {"form": "other"},
                                     {"token_count": "bpe"}, {"keywords": "wait"}])
def test_density_bad_options(options):
    with pytest.raises(AhaError):
        ReflectionDensity.check_options(**options)
