"""`aha train`'s algorithm options are read from the registries in aha.algo: help and validation
cannot drift from the code, and every registered member is reachable from the config."""

from __future__ import annotations

import pytest

from aha.algo.advantages import ADVANTAGES
from aha.algo.kl import KL_ESTIMATORS
from aha.algo.losses import AGG_MODES, POLICY_LOSSES
from aha.config import describe, load_config
from aha.errors import AhaError
from aha.train.config import TrainConfig


def help_of(key: str) -> str:
    return next(h for k, _, _, h in describe(TrainConfig) if k == key)


@pytest.mark.parametrize("key,names", [
    ("algo.advantage", ADVANTAGES.names()),     # every estimator, reinforce_pp_baseline included
    ("algo.policy_loss", POLICY_LOSSES.names()),
    ("algo.kl_estimator", KL_ESTIMATORS.names()),  # k1-k3 and verl's names for them
    ("algo.loss_agg", list(AGG_MODES)),         # all five modes (the help once listed three)
])
def test_help_lists_every_registered_name(key, names):
    text = help_of(key)
    assert names and all(name in text for name in names), (key, text)


@pytest.mark.parametrize("override", [
    "algo.advantage=reinforce_pp_baseline",  # registered, was not in the help
    "algo.kl_estimator=low_var_kl",          # verl's name for k3
    "algo.loss_agg=seq_mean_token_sum",      # one of the two modes the config could not reach
    "algo.advantage=aha.algo.advantages:rloo_advantages",  # a module:function path
    "algo.clip_ratio_c=3.0",                 # dual clip
    "algo.kl_clamp=10",                      # Logic-RL's KL clamp
])
def test_registered_members_are_reachable(override):
    load_config(TrainConfig, None, [override])


@pytest.mark.parametrize("override,message", [
    ("algo.advantage=gpro", "did you mean 'grpo'"),           # a typo names the closest estimator
    ("algo.policy_loss=ppo", "valid names: vanilla"),
    ("algo.kl_estimator=k4", "algo.kl_estimator: unknown KL estimator"),
    ("algo.clip_ratio_c=0.5", "clip_ratio_c must be > 1"),  # dual clip needs a constant above 1
])
def test_bad_algorithm_names_fail_at_load(override, message):
    with pytest.raises(AhaError, match=message):
        load_config(TrainConfig, None, [override])
