"""Correctness, format, overlong and repetition rewards against hand-computed tables."""

from __future__ import annotations

import pytest

from aha.rewards import REWARDS
from aha.rewards.base import RewardBatch
from aha.tasks.base import Example, Verdict

EX = Example("e0", [{"role": "user", "content": "What is 6 * 7?"}], "42")
OK = "<think>6 * 7 = 42</think><answer>42</answer>"


def make_batch(completions, correct=None, parsed=None, num_tokens=None, group_ids=None, truncated=None,
               max_new_tokens=None, examples=None):
    """A RewardBatch with defaults: all wrong, parsed, 10 tokens each, one group."""
    n = len(completions)
    correct = correct or [False] * n
    parsed = parsed or ["x"] * n
    verdicts = [Verdict(parsed=p, format_ok=True, correct=c, partial=1.0 if c else 0.0) for c, p in zip(correct, parsed)]
    return RewardBatch(completions=list(completions), examples=examples or [EX] * n, verdicts=verdicts,
                       num_tokens=num_tokens or [10] * n, group_ids=group_ids or [0] * n,
                       truncated=truncated or [False] * n, max_new_tokens=max_new_tokens)


# (reward, options, correct, parsed, expected)
CORRECTNESS_CASES = [
    ("correctness", {}, True, "42", 1.0),  # correct -> 1
    ("correctness", {}, False, "41", 0.0),  # parsed but wrong -> 0
    ("correctness", {}, False, None, 0.0),  # nothing parsed counts as wrong by default
    ("correctness", {"unparsed": -1.0}, False, None, -1.0),  # unparsed given its own value
    ("correctness", {"unparsed": -1.0}, False, "41", 0.0),  # ...which does not touch parsed wrong answers
    ("correctness", {"correct": 2.0, "wrong": -1.5, "unparsed": -2.0}, True, "42", 2.0),  # custom table
    ("accuracy", {}, True, "42", 1.0),  # alias, 0/1
    ("accuracy", {}, False, None, 0.0),
    ("pm1", {}, True, "42", 1.0),  # DAPO / seed 003: +1
    ("pm1", {}, False, "41", -1.0),  # wrong: -1
    ("pm1", {}, False, None, -1.0),  # unboxed (unparsed): -1
]


@pytest.mark.parametrize("name,options,correct,parsed,expected", CORRECTNESS_CASES)
def test_correctness_table(name, options, correct, parsed, expected):
    out = REWARDS.get(name)(make_batch(["..."], [correct], [parsed]), **options)
    assert out.scores == [expected]


def test_correctness_metrics():
    out = REWARDS.get("correctness")(make_batch(["a", "b", "c", "d"], [True, False, False, True], ["1", None, "2", "3"]))
    assert out.scores == [1.0, 0.0, 0.0, 1.0]
    assert out.metrics == {"accuracy": 0.5, "unparsed": 0.25}


# (completion, think_preopened, expected)
FORMAT_CASES = [
    (OK, False, 1.0),  # the canonical structure
    ("\n<think>\nr\n</think>\n<answer>\n42\n</answer>\n", False, 1.0),  # whitespace around the blocks is fine
    ("<think></think><answer>42</answer>", False, 1.0),  # empty think is still well formed
    (OK + "<answer>43</answer>", False, 0.0),  # a second answer block (open-r1's MULTILINE hole)
    (OK + " and more", False, 0.0),  # text after </answer>
    ("hi " + OK, False, 0.0),  # text before <think>
    ("<answer>42</answer><think>r</think>", False, 0.0),  # blocks out of order
    ("<think>6 * 7 = 42", False, 0.0),  # cut off at max length: nothing closed
    ("", False, 0.0),  # empty completion
    ("r</think><answer>42</answer>", True, 1.0),  # pre-opened think: completion starts with the reasoning
    ("r</think><answer>42</answer>", False, 0.0),  # ...which is malformed when the tag was not pre-opened
    (OK, True, 0.0),  # pre-opened, but the model wrote <think> again
]


@pytest.mark.parametrize("text,preopened,expected", FORMAT_CASES)
def test_format_table(text, preopened, expected):
    assert REWARDS.get("format")(make_batch([text]), think_preopened=preopened).scores == [expected]


def test_format_custom_values_and_metric():
    out = REWARDS.get("format")(make_batch([OK, "junk"]), ok=0.5, bad=-1.0)
    assert out.scores == [0.5, -1.0]
    assert out.metrics == {"ok": 0.5}


# (completion, options, expected)
TAG_CASES = [
    (OK, {}, 1.0),  # all four tags once
    ("<think>r</think>", {}, 0.5),  # cut off before the answer: two tags
    ("", {}, 0.0),  # nothing
    ("<think><think>r</think><answer>42</answer>", {}, 0.75),  # doubled <think> loses its quarter
    ("r</think><answer>42</answer>", {"think_preopened": True}, 1.0),  # the prompt's <think> counts
    ("r</think><answer>42</answer>", {}, 0.75),  # ...and is missing otherwise
    (OK, {"scale": 0.5}, 0.5),  # scaled
]


@pytest.mark.parametrize("text,options,expected", TAG_CASES)
def test_format_tags_table(text, options, expected):
    assert REWARDS.get("format_tags")(make_batch([text]), **options).scores == [expected]


# (num_tokens, options, max_new_tokens, expected) with L_max = 100, L_cache = 25 unless given
OVERLONG_CASES = [
    (50, {}, 100, 0.0),  # well inside: no punishment
    (75, {}, 100, 0.0),  # exactly L_max - L_cache: still 0
    (80, {}, 100, -0.2),  # (75 - 80) / 25
    (90, {}, 100, -0.6),  # (75 - 90) / 25
    (100, {}, 100, -1.0),  # cut off at the generation cap: (75 - 100) / 25
    (120, {"max_len": 100}, 200, -1.0),  # beyond L_max
    (15, {"max_len": 20, "buffer": 10}, None, -0.5),  # explicit L_max, L_cache: (10 - 15) / 10
    (15, {"max_len": 20, "buffer": 10, "factor": 0.5}, None, -0.25),  # factor scales it
    (0, {}, 100, 0.0),  # empty completion
]


@pytest.mark.parametrize("tokens,options,cap,expected", OVERLONG_CASES)
def test_overlong_table(tokens, options, cap, expected):
    batch = make_batch(["x"], num_tokens=[tokens], truncated=[tokens >= (cap or 0)], max_new_tokens=cap)
    [score] = REWARDS.get("overlong")(batch, **options).scores
    assert score == pytest.approx(expected)


def test_overlong_without_any_cap_is_not_applicable():
    out = REWARDS.get("overlong")(make_batch(["x", "y"]))
    assert out.scores == [None, None]


# (completion, options, expected)
REPETITION_CASES = [
    ("a b c a b c", {}, -0.25),  # 4 trigrams, 3 unique: -(1 - 3/4)
    ("The cat THE cat the cat", {}, -0.5),  # lower-cased: 4 trigrams, 2 unique
    ("one two three four", {}, 0.0),  # no repeats
    ("a b", {}, 0.0),  # fewer words than n
    ("", {}, 0.0),  # empty completion
    ("x x x x", {"ngram_size": 1}, -0.75),  # unigrams: 4 total, 1 unique
    ("a b c a b c", {"max_penalty": -2.0}, -0.5),  # scaled penalty
]


@pytest.mark.parametrize("text,options,expected", REPETITION_CASES)
def test_repetition_table(text, options, expected):
    [score] = REWARDS.get("repetition")(make_batch([text]), **options).scores
    assert score == pytest.approx(expected)
