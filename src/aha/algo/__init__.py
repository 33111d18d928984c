"""Pure math of RL post-training: advantage estimators, policy losses, KL estimators, reset rules.

Nothing here touches a model, an optimizer or a process group (verl `core_algos` style); the
trainer in `aha.train` calls these functions and does any cross-process reduction itself.
"""

from aha.algo.advantages import (
    ADVANTAGES,
    dr_grpo_advantages,
    grpo_advantages,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    rloo_advantages,
)
from aha.algo.kl import KL_ESTIMATORS, kl_estimate
from aha.algo.losses import (
    AGG_MODES,
    POLICY_LOSSES,
    aggregate,
    kl_penalty_rewards,
    masked_mean,
    policy_loss,
    ppo_clip_loss,
)
from aha.algo.resets import PLATEAU_MODES, periodic_reset_due, plateau_reached, scheduled_reset_due

__all__ = [
    "ADVANTAGES",
    "AGG_MODES",
    "KL_ESTIMATORS",
    "PLATEAU_MODES",
    "POLICY_LOSSES",
    "aggregate",
    "dr_grpo_advantages",
    "grpo_advantages",
    "kl_estimate",
    "kl_penalty_rewards",
    "masked_mean",
    "periodic_reset_due",
    "scheduled_reset_due",
    "plateau_reached",
    "policy_loss",
    "ppo_clip_loss",
    "reinforce_pp_advantages",
    "reinforce_pp_baseline_advantages",
    "rloo_advantages",
]
