"""Rewards: importing this package registers every built-in reward in `REWARDS`.

See `aha.rewards.compose` for the weighted sum and the start-up checks of a recipe's reward list.
"""

from aha.rewards import correctness, format, length, likelihood, overlong, reflection, repetition  # noqa: F401
from aha.rewards.base import REWARDS, RewardBatch, RewardOutput
from aha.rewards.compose import RewardComposer, RewardSpec, check_reward_specs, compose_rewards

__all__ = ["REWARDS", "RewardBatch", "RewardComposer", "RewardOutput", "RewardSpec", "check_reward_specs",
           "compose_rewards"]
from aha.rewards import logic_rl  # noqa: E402,F401,I001  (registers "logic_rl")
