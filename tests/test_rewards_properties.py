"""Rewards never raise on strange completions: random strings, counts, groups and verdicts."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aha.rewards import REWARDS, RewardComposer, RewardSpec
from aha.rewards.base import RewardBatch
from aha.tasks.base import Example, Verdict

# pieces a model might emit: tags (also broken ones), keywords, phrases, odd unicode and whitespace
PIECES = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "<think", "</", "wait", "But",
                          "check", "verify", "alternative approach", "mistake in step 2", "\n\n", " ", "42",
                          "\\boxed{7}", "é", "\u200b", "\x00", "🙂", "a" * 70])
TEXT = st.lists(st.one_of(PIECES, st.text(max_size=20)), max_size=30).map("".join)

# every reward that reads only strings, counts and verdicts, with option sets worth exercising
STRING_REWARDS = [
    ("correctness", {}), ("accuracy", {}), ("pm1", {"unparsed": -2.0}),
    ("format", {}), ("format", {"think_preopened": True}), ("format_tags", {"think_preopened": True}),
    ("reflection", {}), ("reflection", {"think_preopened": True, "digits": None}),
    ("reflection_density", {"d_q": 0.01}), ("reflection_density", {"d_q": 0.01, "token_count": "words"}),
    ("length", {}), ("length", {"unit": "chars"}), ("kimi_length", {}), ("kimi_length", {"unit": "tokens"}),
    ("cosine_length", {"max_len": 50}), ("cosine_length", {"unit": "tokens", "max_len": 7}),
    ("overlong", {}), ("overlong", {"max_len": 20, "buffer": 5}), ("repetition", {}),
    ("repetition", {"ngram_size": 1}),
]


# documented ranges with the default options
RANGES = {"correctness": (0, 1), "format": (0, 1), "format_tags": (0, 1), "reflection": (0, 1),
          "reflection_density": (-1, 0), "length": (-0.5, 0.5), "kimi_length": (-0.5, 0.5),
          "cosine_length": (-1, 1), "overlong": (-1, 0), "repetition": (-1, 0)}


@st.composite
def batches(draw):
    n = draw(st.integers(0, 6))
    texts = draw(st.lists(TEXT, min_size=n, max_size=n))
    verdicts = [Verdict(parsed=draw(st.sampled_from([None, "1", ""])), correct=draw(st.booleans()))
                for _ in range(n)]
    tokens = draw(st.lists(st.integers(0, 300), min_size=n, max_size=n))
    groups = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    truncated = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    cap = draw(st.sampled_from([None, 1, 64, 256]))
    ex = Example("p", [{"role": "user", "content": "q"}], "1")
    return RewardBatch(texts, [ex] * n, verdicts, tokens, groups, truncated if n else [], cap)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_string_rewards_never_raise(batch):
    for name, options in STRING_REWARDS:
        fn = REWARDS.get(name)
        fn = fn.fresh() if hasattr(fn, "fresh") else fn
        out = fn(batch, **options)
        assert len(out.scores) == len(batch), name
        for s in out.scores:
            assert s is None or (isinstance(s, float) and math.isfinite(s)), (name, s)
        assert all(math.isfinite(v) for v in out.metrics.values()), name
    for name, (lo, hi) in RANGES.items():
        opts = {"d_q": 0.01} if name == "reflection_density" else {"max_len": 64} if name == "overlong" else {}
        scores = REWARDS.get(name)(batch, **opts).scores
        assert all(lo <= s <= hi for s in scores if s is not None), (name, scores)


@settings(max_examples=60, deadline=None)
@given(batch=batches())
def test_composer_never_raises(batch):
    specs = [RewardSpec(name, 0.5, options) for name, options in STRING_REWARDS]
    composer = RewardComposer(specs + [RewardSpec("reflection_density")])  # one calibrating (None) component
    totals, comps, metrics = composer(batch)
    assert len(totals) == len(batch) and all(math.isfinite(t) for t in totals)
    assert all(len(v) == len(batch) for v in comps.values())
    assert all(metrics[f"reward/{label}/errors"] == 0.0 for label in composer.names)
