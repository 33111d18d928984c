"""The configuration of `aha train` (RL): one dataclass tree, every field documented.

Batch vocabulary, defined once:
    rollouts per step   = batch.prompts_per_step x batch.samples_per_prompt
    optimizer steps per RL step = algo.num_iterations x batch.mini_batches
    each mini-batch     = rollouts per step / batch.mini_batches, processed in micro-batches of
                          batch.micro_batch_size rollouts with gradient accumulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aha.algo.advantages import ADVANTAGES
from aha.algo.kl import KL_ESTIMATORS
from aha.algo.losses import AGG_MODES, POLICY_LOSSES
from aha.config import LoraConfig, ModelConfig, RunConfig, option, section
from aha.rewards.compose import RewardSpec


@dataclass
class TaskConfig:
    """Which task supplies prompts and verifies answers."""

    name: str = option("knights-knaves", "registered task name (knights-knaves, gsm8k, math, aime, amc, "
                       "multiple-choice, arithmetic) or module:Class")
    options: dict[str, Any] = option({}, "keyword options of the task, e.g. {data: [file.parquet], people: '3'}")
    train_split: str = option("train", "split that supplies training prompts")
    val_split: str = option("test", "split used for validation")


@dataclass
class RolloutConfig:
    """How completions are sampled during training."""

    backend: str = option("engine", "generation backend: 'engine' (aha's KV-cache sampler) or 'hf' "
                          "(transformers generate)", choices=["engine", "hf"])
    temperature: float = option(1.0, "sampling temperature (log-probs for the loss use the same one)", min=0.0)
    top_p: float = option(1.0, "nucleus sampling threshold; 1.0 is off", min=0.0, max=1.0)
    top_k: int = option(0, "keep only the k most likely tokens; 0 is off", min=0)
    max_new_tokens: int = option(256, "cap on generated tokens per completion", min=1)
    stop: list[str] = option(["</answer>"], "strings that end a completion (kept in the output)")


@dataclass
class AlgoConfig:
    """Advantage estimator and policy loss (see aha/algo for the formulas)."""

    advantage: str = option("grpo", "advantage estimator (aha.algo.advantages)", registry=ADVANTAGES)
    advantage_options: dict[str, Any] = option({}, "keyword options of the estimator (e.g. {group_baseline: true})")
    policy_loss: str = option("vanilla", "per-token policy loss (aha.algo.losses; vanilla = PPO clip with "
                              "decoupled bounds)", registry=POLICY_LOSSES)
    loss_agg: str = option("token_mean", "loss aggregation (aha.algo.losses.aggregate): token_mean (DAPO), "
                           "seq_mean_token_mean (GRPO), seq_mean_token_sum_norm (Dr. GRPO), token_sum, "
                           "seq_mean_token_sum", choices=list(AGG_MODES))
    clip_low: float = option(0.2, "PPO clip below: ratio >= 1 - clip_low", min=0.0)
    clip_high: float = option(0.2, "PPO clip above: ratio <= 1 + clip_high (0.28 is DAPO's clip-higher)", min=0.0)
    kl_coef: float = option(0.0, "KL-to-reference coefficient; 0 skips the reference model entirely", min=0.0)
    kl_estimator: str = option("k3", "per-token KL estimator (aha.algo.kl; kl, mse and low_var_kl are verl's "
                               "names for k1, k2, k3)", registry=KL_ESTIMATORS)
    kl_clamp: float = option(0.0, "clamp each token's KL estimate to [-kl_clamp, kl_clamp] (Logic-RL: 10); "
                             "0 is off", min=0.0)
    clip_ratio_c: float = option(0.0, "dual-clip constant (> 1; verl uses 3): a negative-advantage token's loss "
                                 "is capped at -A * clip_ratio_c; 0 is off", min=0.0)
    kl_in_reward: bool = option(False, "subtract kl_coef * KL from the sequence reward instead of adding a loss term")
    entropy_coef: float = option(0.0, "entropy bonus coefficient (0 is off)", min=0.0)
    mask_truncated: bool = option(False, "drop completions cut at max_new_tokens from the loss (DAPO overlong filter)")
    dynamic_sampling: bool = option(False, "drop groups whose rewards are all equal and sample more prompts (DAPO)")
    max_resample_rounds: int = option(3, "with dynamic sampling: at most this many extra generation rounds", min=0)
    num_iterations: int = option(1, "updates per rollout batch (mu); >1 stores old log-probs for the ratio", min=1)


@dataclass
class BatchConfig:
    """Batch sizes (see the module docstring for how they fit together)."""

    prompts_per_step: int = option(8, "distinct prompts per RL step", min=1)
    samples_per_prompt: int = option(8, "completions per prompt (the group size G)", min=1)
    mini_batches: int = option(1, "optimizer steps per pass over a rollout batch", min=1)
    micro_batch_size: int = option(16, "rollouts per forward/backward (gradient accumulation)", min=1)

    @property
    def rollouts_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    def validate(self) -> None:
        n = self.rollouts_per_step
        if self.samples_per_prompt < 2:
            raise ValueError("samples_per_prompt must be at least 2: group advantages need two samples")
        if n % self.mini_batches:
            raise ValueError(f"rollouts per step ({self.prompts_per_step} x {self.samples_per_prompt} = {n}) must be "
                             f"divisible by mini_batches ({self.mini_batches}); change batch.mini_batches")
        mini = n // self.mini_batches
        if mini % self.micro_batch_size and self.micro_batch_size < mini:
            raise ValueError(f"a mini-batch holds {mini} rollouts, not divisible by micro_batch_size "
                             f"({self.micro_batch_size}); set batch.micro_batch_size to a divisor of {mini}")


@dataclass
class OptimConfig:
    """AdamW and its schedule."""

    lr: float = option(1e-5, "peak learning rate", min=0.0)
    schedule: str = option("constant", "learning-rate schedule after warmup", choices=["constant", "cosine"])
    warmup_steps: int = option(0, "linear warmup, in optimizer steps", min=0)
    min_lr_ratio: float = option(0.0, "cosine schedule floor as a fraction of lr", min=0.0, max=1.0)
    weight_decay: float = option(0.0, "AdamW weight decay", min=0.0)
    beta1: float = option(0.9, "AdamW beta1", min=0.0, max=1.0)
    beta2: float = option(0.999, "AdamW beta2", min=0.0, max=1.0)
    max_grad_norm: float = option(1.0, "gradient clipping by global norm; 0 is off", min=0.0)


@dataclass
class TrainConfig:
    """`aha train RECIPE [key=value ...]`: RL post-training."""

    model: ModelConfig = section(ModelConfig, "policy model")
    lora: LoraConfig = section(LoraConfig, "LoRA adapter")
    task: TaskConfig = section(TaskConfig, "task")
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec("correctness", 1.0, {}),
                                                               RewardSpec("format", 0.5, {})],
                                      metadata={"help": "reward terms: [{name, weight, options}]"})
    rollout: RolloutConfig = section(RolloutConfig, "sampling")
    algo: AlgoConfig = section(AlgoConfig, "algorithm")
    batch: BatchConfig = section(BatchConfig, "batch sizes")
    optim: OptimConfig = section(OptimConfig, "optimizer")
    run: RunConfig = section(RunConfig, "run directory and logging")
    steps: int = option(100, "RL steps (each: sample, score, update)", min=1)
    max_seconds: float = option(0.0, "stop after the step during which this much wall time has passed "
                                "(0 = no limit); the learning-rate schedule still follows `steps`", min=0.0)
    val_every: int = option(0, "validate every N steps (and at the end); 0 is off", min=0)
    val_size: int = option(64, "validation examples (greedy, one sample each)", min=1)
    val_max_new_tokens: int = option(0, "generation cap for validation; 0 uses rollout.max_new_tokens", min=0)
    checkpoint_every: int = option(0, "write a resumable checkpoint every N steps (and at the end); 0 = end only",
                                   min=0)
    keep_checkpoints: int = option(2, "keep the newest N checkpoints", min=1)
    save_rollouts: bool = option(True, "write rollouts/step_XXXXX.jsonl with every completion")
    resume: str = option("", "run directory to continue from its newest checkpoint")
    allow_config_change: bool = option(False, "resume even if the config differs from the run's config.yaml")

    def validate(self) -> None:
        if not self.rewards:
            raise ValueError("no rewards: list at least one under `rewards`")
        if self.algo.dynamic_sampling and self.algo.max_resample_rounds < 1:
            raise ValueError("algo.dynamic_sampling needs algo.max_resample_rounds >= 1")
        if 0 < self.algo.clip_ratio_c <= 1:
            raise ValueError(f"algo.clip_ratio_c must be > 1 (or 0 for off), got {self.algo.clip_ratio_c}")
