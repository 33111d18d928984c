"""REA-RL reward parity, by hand: refine_length over a 2G group (revisions included) and
reflection_density with the released threshold and regex (`match: rea_rl`)."""

from __future__ import annotations

import pytest

from aha.rewards.base import REWARDS, RewardBatch
from aha.rewards.compose import RewardSpec, compose_rewards
from aha.rewards.reflection import (
    ReflectionDensity,
    count_rea_rl_reflections,
    count_reflections,
    rea_rl_reasoning,
    rea_rl_reasoning_token_ids,
    rea_rl_reasoning_tokens,
)
from aha.tasks.base import Example, Verdict


def batch(texts, correct, tokens, groups):
    ex = Example("x", [{"role": "user", "content": "q"}], "a")
    return RewardBatch(completions=list(texts), examples=[ex] * len(texts),
                       verdicts=[Verdict(correct=c, format_ok=True) for c in correct],
                       num_tokens=list(tokens), group_ids=list(groups))


def test_refine_length_over_originals_and_revisions():
    # group 0 = (original, revision, original, revision): lengths 100, 40, 80, 30; correct: yes, yes, no, no
    # group 1 = one correct member only
    b = batch(["t"] * 6, [True, True, False, False, True, False], [100, 40, 80, 30, 50, 20], [0, 0, 0, 0, 1, 1])
    scores = REWARDS.get("refine_length")(b).scores
    # L_min = 40 (the correct revision), L_max = 100 over the correct members of group 0:
    #   100 -> 0.5 - 60/60 = -0.5;  40 -> 0.5 - 0/60 = 0.5;  wrong -> -0.5 whatever their length
    # group 1: L_max = L_min -> 0; its wrong member -0.5
    assert scores == [-0.5, 0.5, -0.5, -0.5, 0.0, -0.5]


@pytest.mark.parametrize("text, expected", [
    # no word boundaries: "but" inside "attribute", "check" inside "checking"
    ("an attribute", 1),
    ("checking", 1),
    # one chain: wait, but, check, each gap under 60 characters on one line
    ("Wait, but let me check.", 1),
    # gap of exactly 59 characters between "wait" and "check": still one reflection
    ("wait" + "x" * 59 + "check", 1),
    # 60 characters: two
    ("wait" + "x" * 60 + "check", 2),
    # "." does not cross a newline, so a line break ends the chain
    ("wait\ncheck", 2),
    # case-insensitive, and "Alternatively" is a keyword
    ("ALTERNATIVELY we try", 1),
    ("nothing here", 0),
])
def test_rea_rl_regex_counts(text, expected):
    assert count_rea_rl_reflections(text) == expected


def test_rea_rl_regex_differs_from_aha_words():
    # aha's whole-word rule finds no "but" in "attribute"; the released regex does
    assert count_reflections("an attribute") == 0 and count_rea_rl_reflections("an attribute") == 1


def test_rea_rl_text_and_token_span():
    text = "<think>a</think>x<think>b wait</think>y"
    assert rea_rl_reasoning(text) == "b wait"  # after the last <think>, before the next </think>
    # characters from after the first <think> (7) to the last </think> (30): 23 of 39
    assert rea_rl_reasoning_tokens(text, 39) == pytest.approx(23.0)
    assert rea_rl_reasoning_tokens("", 5) == 0.0


def test_reflection_density_released_value():
    reasoning = "Wait, so x = 2. " + "y" * 50 + " But check: x = 2." + "z"  # 85 characters
    assert len(reasoning) == 85
    text = "<think>" + reasoning + "</think>"  # 100 characters
    b = batch([text, "<think>plain</think>"], [True, True], [1000, 10], [0, 0])
    # "Wait" alone (the next keyword is 63 characters on) and "But check" (one chain): 2
    assert count_rea_rl_reflections(reasoning) == 2
    code = ReflectionDensity()(b, threshold=225.09, match="rea_rl", form="code")
    # tokens = 1000 x 85/100 = 850; r = min(2 / 850 x 225.09, 1)
    assert code.scores[0] == pytest.approx(2 / 850 * 225.09)
    assert code.scores[1] == 0.0  # no reflection
    assert code.metrics["calibrating"] == 0.0 and code.metrics["d_q"] == pytest.approx(1 / 225.09)
    paper = ReflectionDensity()(b, threshold=225.09, match="rea_rl")
    assert paper.scores[0] == pytest.approx(2 / 850 * 225.09 - 1)  # paper form = code form - 1 below the cap
    # above the threshold density the code form caps at 1 and the paper form at 0
    dense = batch(["<think>wait</think>"], [True], [20], [0])
    assert ReflectionDensity()(dense, threshold=225.09, match="rea_rl", form="code").scores == [1.0]


# R1-distill's ids: <think> 151648, </think> 151649; other ids are plain tokens
R1 = (151648, 151649)


@pytest.mark.parametrize("ids, think_ids, expected", [
    # the prompt opened the block (R1-distill): from the first id to the last </think>
    ([5, 6, 7, 151649, 8, 9], R1, 3),
    # a <think> in the completion: the count starts after the first one
    ([151648, 5, 6, 151649, 8], R1, 2),
    # two </think>: up to the last one (ids 5, 6, </think>, 7)
    ([5, 6, 151649, 7, 151649, 9], R1, 4),
    # never closed: to the end
    ([151648, 5, 6, 7], R1, 3),
    # a </think> before the first <think>: nothing between them
    ([151649, 151648, 5], R1, 0),
    # only </think> is one token: counted from the first id
    ([5, 6, 151649], (None, 151649), 2),
    # the tokenizer spells </think> in pieces: no count from ids
    ([5, 6, 7], (151648, None), None),
    ([], R1, 0),
])
def test_rea_rl_reasoning_token_ids(ids, think_ids, expected):
    assert rea_rl_reasoning_token_ids(ids, think_ids) == expected


def test_reflection_density_counts_reasoning_tokens_from_ids():
    text = "Wait, x = 2.</think>\n\n**Final Answer:** 2"  # the prompt opened <think>
    b = batch([text, text], [True, True], [12, 12], [0, 0])
    b.token_ids = [[1] * 8 + [R1[1]] + [2] * 3, [1] * 12]  # 8 reasoning ids; the second never closes
    b.think_ids = R1
    # T = 4 tokens per reflection: one reflection ("Wait") over 8 ids -> 4/8; over all 12 ids of the
    # unclosed one -> 4/12
    low = ReflectionDensity()(b, threshold=4.0, match="rea_rl", form="code")
    assert low.scores == [pytest.approx(0.5), pytest.approx(1 / 3)]
    assert low.metrics["reasoning_tokens_exact"] == 1.0
    # without ids, or with a tokenizer that spells </think> in pieces, the character-share estimate
    b.think_ids = (None, None)
    share = ReflectionDensity()(b, threshold=2.0, match="rea_rl", form="code")
    # 12 of the text's 41 characters precede </think>: 12 x 12/41 = 3.51 tokens, r = 2 / 3.51
    assert (text.index("</think>"), len(text)) == (12, 41)
    assert share.scores[0] == pytest.approx(2.0 / (12 * 12 / 41))
    assert share.metrics["reasoning_tokens_exact"] == 0.0


def test_think_tag_ids_of_the_tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    from aha.prompts import think_tag_ids

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    open_id, close_id = think_tag_ids(tok)
    assert tok.decode([open_id]) == "<think>" and tok.decode([close_id]) == "</think>"

    class Pieces:  # a tokenizer that spells the tags in several tokens
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(range(len(text)))}

    assert think_tag_ids(Pieces()) == (None, None)


def test_reflection_density_options_are_checked():
    from aha.errors import AhaError

    with pytest.raises(AhaError, match="match"):
        compose_rewards([RewardSpec("reflection_density", 1.0, {"match": "regex"})], batch(["t"], [True], [1], [0]))
    with pytest.raises(AhaError, match="threshold"):
        compose_rewards([RewardSpec("reflection_density", 1.0, {"threshold": 0})], batch(["t"], [True], [1], [0]))
