"""Weighted composition: totals, None handling, metrics, failing rewards, start-up checks, state."""

from __future__ import annotations

import logging
import math

import pytest

from aha.errors import AhaError
from aha.rewards import RewardComposer, RewardSpec, check_reward_specs, compose_rewards
from aha.rewards.base import RewardOutput

from .test_rewards_basic import OK, make_batch

HERE = __name__  # "tests.test_rewards_compose": rewards below are reached as module:function


def half_none(batch):
    """Applies only to even positions: 2.0 there, None elsewhere."""
    return RewardOutput([2.0 if i % 2 == 0 else None for i in range(len(batch))], {"calls": 1.0, "bad": math.nan})


def broken(batch):
    raise RuntimeError("bug in a reward")


def not_finite(batch):
    return [math.nan, 1.0, math.inf][: len(batch)]


def too_short(batch):
    return RewardOutput([1.0])


def user_error(batch):
    raise AhaError("scorer folder vanished")


def test_weights_and_none():
    batch = make_batch([OK, "junk", OK], correct=[True, False, False], num_tokens=[10, 100, 80],
                       max_new_tokens=100)
    specs = [RewardSpec("correctness", 1.0), RewardSpec("format", 0.5),
             RewardSpec("overlong", 2.0, {"buffer": 40}), RewardSpec(f"{HERE}:half_none", -1.0)]
    totals, comps, metrics = compose_rewards(specs, batch)
    assert comps["correctness"] == [1.0, 0.0, 0.0]
    assert comps["format"] == [1.0, 0.0, 1.0]
    assert comps["overlong"] == pytest.approx([0.0, -1.0, -0.5])  # start 60: (60-100)/40, (60-80)/40
    assert comps[f"{HERE}:half_none"] == [2.0, None, 2.0]
    assert totals == pytest.approx([
        1.0 + 0.5 + 0.0 - 2.0,  # -0.5
        0.0 + 0.0 - 2.0 + 0.0,  # None contributes 0 -> -2.0
        0.0 + 0.5 - 1.0 - 2.0,  # -2.5
    ])
    assert metrics["reward/total/mean"] == pytest.approx(-5.0 / 3)
    assert metrics["reward/total/std"] == pytest.approx(math.sqrt(((-0.5 + 5 / 3) ** 2 + (-2 + 5 / 3) ** 2
                                                                   + (-2.5 + 5 / 3) ** 2) / 3))
    assert metrics["reward/correctness/mean"] == pytest.approx(1 / 3)
    assert metrics["reward/correctness/accuracy"] == pytest.approx(1 / 3)  # the reward's own metric
    assert metrics[f"reward/{HERE}:half_none/mean"] == 2.0  # only applicable entries
    assert metrics[f"reward/{HERE}:half_none/std"] == 0.0
    assert metrics[f"reward/{HERE}:half_none/applicable"] == pytest.approx(2 / 3)
    assert f"reward/{HERE}:half_none/bad" not in metrics  # non-finite metrics are dropped
    assert all(metrics[f"reward/{n}/errors"] == 0.0 for n in ("correctness", "format", "overlong"))


def test_dict_specs_and_duplicate_names():
    batch = make_batch(["a", "bbb"], correct=[True, True], num_tokens=[1, 3])
    composer = RewardComposer([{"name": "length"}, {"name": "length", "weight": 2.0, "options": {"unit": "chars"}}])
    assert composer.names == ["length", "length_2"]
    totals, comps, _ = composer(batch)
    assert comps == {"length": [0.5, -0.5], "length_2": [0.5, -0.5]}
    assert totals == [1.5, -1.5]


def test_failing_reward_scores_zero_and_is_counted(caplog):
    composer = RewardComposer([RewardSpec("correctness"), RewardSpec(f"{HERE}:broken", 3.0)])
    batch = make_batch(["a", "b"], correct=[True, False])
    with caplog.at_level(logging.WARNING, logger="aha.rewards"):
        totals, comps, metrics = composer(batch)
        composer(batch)
    assert totals == [1.0, 0.0]
    assert comps[f"{HERE}:broken"] == [0.0, 0.0]
    assert metrics[f"reward/{HERE}:broken/errors"] == 2.0
    assert len([r for r in caplog.records if "bug in a reward" in r.getMessage()]) == 1  # warned once


def test_non_finite_and_wrong_length_outputs():
    composer = RewardComposer([RewardSpec(f"{HERE}:not_finite"), RewardSpec(f"{HERE}:too_short")])
    totals, comps, metrics = composer(make_batch(["a", "b", "c"]))
    assert comps[f"{HERE}:not_finite"] == [0.0, 1.0, 0.0]  # NaN and inf replaced by 0
    assert metrics[f"reward/{HERE}:not_finite/errors"] == 2.0
    assert comps[f"{HERE}:too_short"] == [0.0, 0.0, 0.0]  # one score for three completions
    assert metrics[f"reward/{HERE}:too_short/errors"] == 3.0
    assert totals == [0.0, 1.0, 0.0]


def test_user_errors_propagate():
    with pytest.raises(AhaError, match="vanished"):
        RewardComposer([RewardSpec(f"{HERE}:user_error")])(make_batch(["a"]))


@pytest.mark.parametrize("specs,message", [
    ([RewardSpec("corectness")], "did you mean 'correctness'"),  # typo: closest name and the valid list
    ([RewardSpec("nope")], "valid names: accuracy, correctness"),
    ([RewardSpec("correctness", options={"right": 1})], "valid options: correct, wrong, unparsed"),
    ([RewardSpec("correctness", weight=float("nan"))], "weight must be a finite number"),
    ([RewardSpec("correctness", options=[1])], "options must be a mapping"),
    ([{"name": "format", "wieght": 1}], "unknown keys"),
    ([], "no rewards listed"),
    ([RewardSpec("overlong", options={"max_len": 10, "buffer": 20})], "must not exceed"),
    ([RewardSpec("length", options={"unit": "words"})], "unit must be one of"),
    ([RewardSpec("reflection_density", options={"q": "high"})], "bad option value"),
    ([RewardSpec("likelihood")], "no scorer model"),
    ([RewardSpec("likelihood", options={"form": "ppl", "model": "/x"})], "form must be one of"),
    ([RewardSpec("likelihood", options={"model": "/no/such/folder"})], "does not exist"),
])
def test_check_reward_specs_errors(specs, message):
    with pytest.raises(AhaError, match=message):
        check_reward_specs(specs)


def test_policy_path_fills_the_scorer(tmp_path):
    with pytest.raises(AhaError, match="does not exist"):  # the path is passed on and checked
        check_reward_specs([RewardSpec("likelihood")], policy_path=str(tmp_path / "missing"))
    check_reward_specs([RewardSpec("correctness", 1.0, {"correct": 2.0}), RewardSpec("reflection")])


def test_stateful_rewards_are_per_composer_and_checkpointed():
    specs = [RewardSpec("reflection_density", 1.0, {"token_count": "words", "q": 0.5})]
    batch = make_batch(["<think>wait a b c</think>", "<think>a b c wait a b c d</think>"])  # D = 0.25, 0.125
    composer = RewardComposer(specs)
    _, comps, metrics = composer(batch)
    assert comps["reflection_density"] == [None, None]  # calibrating on the starting policy
    assert metrics["reward/reflection_density/applicable"] == 0.0
    assert "reward/reflection_density/mean" not in metrics
    other = RewardComposer(specs)  # a new run: its own, uncalibrated state
    assert other(batch)[1]["reflection_density"] == [None, None]
    resumed = RewardComposer(specs)
    resumed.load_state_dict(composer.state_dict())
    totals, comps, _ = resumed(batch)
    d_q = 0.1875
    assert comps["reflection_density"] == pytest.approx([0.0, 0.125 / d_q - 1])
    assert totals == pytest.approx([0.0, 0.125 / d_q - 1])
    assert composer(batch)[1] == comps
