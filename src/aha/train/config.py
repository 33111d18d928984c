"""The configuration of `aha train` (RL): one dataclass tree, every field documented.

Batch vocabulary, defined once:
    rollouts per step   = batch.prompts_per_step x batch.samples_per_prompt
    optimizer steps per RL step = algo.num_iterations x batch.mini_batches
    each mini-batch     = rollouts per step / batch.mini_batches, processed in micro-batches of
                          batch.micro_batch_size rollouts with gradient accumulation.

A verl/seed recipe's "mini-batch 32, micro-batch 16" (rollouts) with 2 prompts x 16 samples is
batch.mini_batches=1 (32 / 32), batch.micro_batch_size=16; with 32 samples, mini_batches=2.

ProRL hard resets (`reset`, `phases`; the trainer side is aha.train.resets): a reset makes the
reference the current policy (LoRA: the adapter is merged into the base in fp32 and a fresh one
attached), rebuilds or keeps the optimizer, restarts or continues the schedule, and may start the
next entry of `phases`, whose overrides are applied on top of the recipe (cumulatively, in order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aha.algo.advantages import ADVANTAGES
from aha.algo.kl import KL_ESTIMATORS
from aha.algo.losses import AGG_MODES, POLICY_LOSSES
from aha.algo.resets import PLATEAU_MODES
from aha.config import LoraConfig, ModelConfig, RunConfig, check_call_options, check_finite, option, section
from aha.errors import AhaError
from aha.overthinking.options import RevisionConfig
from aha.rewards.compose import RewardSpec

# a cap on rollout lengths: the engine allocates (rows, max_new_tokens) buffers before sampling, so a
# typo such as 1e9 would ask for terabytes; no model aha trains has a context this long
MAX_NEW_TOKENS = 131072


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

    backend: str = option("engine", "generation backend: 'engine' (aha's KV-cache sampler), 'hf' "
                          "(transformers generate) or 'vllm' (a colocated vLLM engine fed the trainer's weights "
                          "after every optimizer step; needs vLLM installed, see the README)",
                          choices=["engine", "hf", "vllm"])
    temperature: float = option(1.0, "sampling temperature (log-probs for the loss use the same one)", min=0.0)
    top_p: float = option(1.0, "nucleus sampling threshold; 1.0 is off", min=0.0, max=1.0)
    top_k: int = option(0, "keep only the k most likely tokens; 0 is off", min=0)
    max_new_tokens: int = option(256, "cap on generated tokens per completion (the engine allocates this many "
                                 "per row up front)", min=1, max=MAX_NEW_TOKENS)
    stop: list[str] = option(["</answer>"], "strings that end a completion (kept in the output)")
    max_batch_rows: int = option(0, "memory budget: generate at most this many rows (prompts x samples) at once; "
                                 "a step's rows run in successive waves, a prompt's samples together when they "
                                 "fit. 0 = no row cap. The engine's completions are the same for any budget "
                                 "(per-row seeds); hf's sampled ones depend on it (its greedy ones do not)", min=0)
    max_batch_tokens: int = option(0, "memory budget: at most this many KV-cache positions per wave, a row "
                                   "counting the longest prompt (the step's for the engine, which pads every "
                                   "wave alike; the wave's for hf) + max_new_tokens. 0 = automatic: on "
                                   "CUDA what rollout.memory_fraction of the free device memory holds (KV "
                                   "cache in the model's dtype plus each row's logits), measured at every "
                                   "generation call; on CPU no cap", min=0)
    memory_fraction: float = option(0.5, "share of the free CUDA memory the automatic max_batch_tokens may fill "
                                    "(the rest is headroom for activations and cache growth); 0 = no automatic "
                                    "budget", min=0.0, max=1.0)
    # the vLLM backend's options (used with backend=vllm only)
    vllm_gpu_memory_utilization: float = option(0.3, "vllm, CUDA: share of the WHOLE device vLLM takes for its "
                                                "weights and KV cache (the trainer's weights, gradients and "
                                                "optimizer state need the rest; vLLM's own default 0.9 runs out "
                                                "of memory when colocated)", min=0.01, max=1.0)
    vllm_kv_cache_gb: float = option(0.0, "vllm: KV-cache size in GiB; 0 = from vllm_gpu_memory_utilization on "
                                     "CUDA, 2 GiB on CPU", min=0.0)
    vllm_max_model_len: int = option(0, "vllm: longest prompt + completion in tokens it accepts (bounds its "
                                     "KV-cache needs); 0 = the model config's max_position_embeddings", min=0)
    vllm_sleep_level: int = option(0, "vllm, CUDA: sleep mode between generations: 0 off, 1 weights offloaded to "
                                   "CPU memory and KV cache freed, 2 both freed (every sync then pushes all "
                                   "weights)", choices=[0, 1, 2])
    vllm_enforce_eager: bool = option(False, "vllm: no torch.compile / CUDA graphs (starts faster, decodes slower)")
    vllm_check_every: int = option(50, "vllm: after this many weight syncs, check again that vLLM's greedy "
                                   "completions equal aha's engine's on the trainer's weights (always checked "
                                   "at the first generation; an AhaError stops the run if they differ); 0 = "
                                   "only at the first", min=0)
    revision: RevisionConfig = section(RevisionConfig, "REA-RL online revision (off by default): each sampled "
                                       "response is cut where its answer was first reached and re-answered by "
                                       "the policy; the revision joins the group (see aha.train.revision)")

    def validate(self) -> None:
        if not self.top_p > 0.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}; 1.0 turns nucleus sampling off")
        for i, text in enumerate(self.stop):
            if not text:
                raise ValueError(f"stop[{i}] is an empty string, which would end every completion at once; "
                                 "remove it")


@dataclass
class AlgoConfig:
    """Advantage estimator and policy loss (see aha/algo for the formulas)."""

    advantage: str = option("grpo", "advantage estimator (aha.algo.advantages)", registry=ADVANTAGES)
    advantage_options: dict[str, Any] = option({}, "keyword options of the estimator (e.g. {group_baseline: true})")
    policy_loss: str = option("vanilla", "per-token policy loss (aha.algo.losses; vanilla = PPO clip with "
                              "decoupled bounds)", registry=POLICY_LOSSES)
    loss_agg: str = option("token_mean", "loss aggregation (aha.algo.losses.aggregate): token_mean (DAPO), "
                           "seq_mean_token_mean (GRPO), seq_mean_token_sum_norm (Dr. GRPO), token_sum, "
                           "seq_mean_token_sum, micro_token_mean (TRL 0.16 under gradient accumulation: each micro-batch's "
                           "token mean over the micro-batch count; REA-RL's released numbers)", choices=list(AGG_MODES))
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
    master_weights: bool = option(True, "full fine-tuning of a bf16/fp16 model (model.dtype=bfloat16, the CUDA "
                                  "default): AdamW steps fp32 master copies of the weights and the model gets "
                                  "them rounded, so updates below bf16's resolution (lr 4e-7 moves a weight by "
                                  "~1e-5 of itself) accumulate instead of being lost; costs 4 bytes per "
                                  "parameter. Forward, backward, the reference copy and rollouts run in the "
                                  "model's dtype; the saved model keeps it. float32 weights (the CPU default) "
                                  "and LoRA adapters (peft keeps them float32) are stepped directly either way. "
                                  "float16 gets the copies but no loss scaling: prefer bfloat16. "
                                  "false: AdamW updates bf16 weights in place (saves the copy, loses small updates)")


@dataclass
class PlateauConfig:
    """The stagnation trigger of a reset (ProRL v1): a validation metric that stopped improving."""

    metric: str = option("", "metrics.jsonl key watched at each validation (e.g. val/accuracy; needs "
                         "val_every > 0); empty turns the trigger off")
    patience: int = option(3, "reset once this many evaluations in a row fail to beat the best earlier one "
                           "by min_delta (counted since the last reset, whose own evaluation is the new "
                           "baseline)", min=1)
    min_delta: float = option(0.0, "an improvement smaller than this counts as none", min=0.0)
    mode: str = option("max", "max: higher is better (accuracy); min: lower is better", choices=list(PLATEAU_MODES))


@dataclass
class ResetConfig:
    """ProRL hard resets: the reference becomes the current policy (see the module docstring)."""

    every: int = option(0, "reset every N steps (counted from the last reset; ProRL v2: 200-500); 0 is off",
                        min=0)
    on_plateau: PlateauConfig = section(PlateauConfig, "reset when a validation metric stagnates or degrades")
    at_steps: list[int] = option([], "reset after each of these steps: phase boundaries by step (seed 003 "
                                 "ended its first phase after step 2600); combines with the other triggers")
    optimizer: str = option("reset", "at a reset: 'reset' builds a fresh AdamW (ProRL v1; always with LoRA, "
                            "whose new adapter has new parameters), 'keep' keeps its state (ProRL v2, full "
                            "fine-tuning only)", choices=["reset", "keep"])
    scheduler: str = option("restart", "at a reset: 'restart' runs the warmup and schedule again over the "
                            "remaining steps, 'continue' goes on with the schedule where it is",
                            choices=["restart", "continue"])
    max_resets: int = option(0, "at most this many resets in a run; 0 = no limit", min=0)

    @property
    def enabled(self) -> bool:
        return self.every > 0 or bool(self.on_plateau.metric) or bool(self.at_steps)


@dataclass
class PhaseRollout:
    """Sampling settings a phase overrides (unset keys keep the previous phase's value)."""

    temperature: float | None = option(None, "rollout.temperature from this phase on", min=0.0)
    top_p: float | None = option(None, "rollout.top_p from this phase on", min=0.0, max=1.0)
    max_new_tokens: int | None = option(None, "rollout.max_new_tokens from this phase on", min=1,
                                        max=MAX_NEW_TOKENS)


@dataclass
class PhaseBatch:
    """Batch settings a phase overrides."""

    samples_per_prompt: int | None = option(None, "batch.samples_per_prompt from this phase on", min=2)
    mini_batches: int | None = option(None, "batch.mini_batches from this phase on (keeps the mini-batch "
                                      "size when samples_per_prompt grows)", min=1)


@dataclass
class PhaseLora:
    """The adapter a phase attaches at its reset (needs lora.enabled)."""

    r: int | None = option(None, "lora.r of the new adapter", min=1)
    alpha: float | None = option(None, "lora.alpha of the new adapter", min=0.0)
    target_modules: list[str] | None = option(None, "lora.target_modules of the new adapter")


@dataclass
class Phase:
    """One entry of `phases`: settings that take effect at a reset."""

    after_reset: int = option(1, "the phase starts once this many resets have happened (>= 1: before the "
                              "first reset the recipe's own settings are the initial phase)", min=1)
    rollout: PhaseRollout = section(PhaseRollout, "sampling overrides")
    batch: PhaseBatch = section(PhaseBatch, "batch overrides")
    lora: PhaseLora = section(PhaseLora, "adapter overrides")
    rewards: list[RewardSpec] | None = option(None, "replaces the reward list from this phase on (e.g. adds "
                                              "the overlong buffer)")
    val_temperature: float | None = option(None, "val_temperature from this phase on", min=0.0)
    val_top_p: float | None = option(None, "val_top_p from this phase on", min=0.0, max=1.0)


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
    val_size: int = option(64, "validation examples (one sample each)", min=1)
    val_temperature: float = option(0.0, "validation sampling temperature; 0 is greedy (seed 003: 1.0)", min=0.0)
    val_top_p: float = option(1.0, "validation nucleus threshold (seed 003: 0.7); 1.0 is off", min=0.0, max=1.0)
    val_max_new_tokens: int = option(0, "generation cap for validation; 0 uses rollout.max_new_tokens", min=0,
                                     max=MAX_NEW_TOKENS)
    checkpoint_every: int = option(0, "write a resumable checkpoint every N steps (and at the end); 0 = end only",
                                   min=0)
    keep_checkpoints: int = option(2, "keep the newest N checkpoints", min=1)
    save_rollouts: bool = option(True, "write rollouts/step_XXXXX.jsonl with every completion")
    resume: str = option("", "run directory to continue from its newest checkpoint")
    allow_config_change: bool = option(False, "resume even if the config differs from the run's config.yaml")
    parallel: str = option("ddp", "on N processes (torchrun): 'ddp' keeps a full replica per process; 'fsdp' "
                           "shards weights, gradients and AdamW state (FSDP2 full shard); 'fsdp_shard_grad_op' "
                           "keeps a block's weights gathered from forward to backward. accelerate's FSDP config "
                           "selects fsdp by itself; one process ignores it", choices=["ddp", "fsdp",
                                                                                   "fsdp_shard_grad_op"])
    reset: ResetConfig = section(ResetConfig, "ProRL hard resets of the reference (and optimizer)")
    phases: list[Phase] = option([], "ProRL phases: [{after_reset: k, rollout: {temperature, top_p, "
                                 "max_new_tokens}, batch: {samples_per_prompt, mini_batches}, lora: {r, alpha, "
                                 "target_modules}, rewards: [...], val_temperature, val_top_p}]; each starts "
                                 "once k resets happened and overrides the recipe (and the phases before it); "
                                 "in increasing after_reset order")

    def validate(self) -> None:
        if not self.rewards:
            raise ValueError("no rewards: list at least one under `rewards`")
        from aha.train.distributed import check_batch_divides

        check_batch_divides(self.batch.prompts_per_step)  # under torchrun/accelerate: whole groups per rank
        if self.algo.dynamic_sampling and self.algo.max_resample_rounds < 1:
            raise ValueError("algo.dynamic_sampling needs algo.max_resample_rounds >= 1")
        if self.rollout.revision.enabled and self.rollout.revision.on_failed == "drop" and self.algo.kl_in_reward:
            raise ValueError("rollout.revision.on_failed=drop makes groups ragged, which algo.kl_in_reward does not "
                             "support; use on_failed=duplicate_original or the KL as a loss term")
        if 0 < self.algo.clip_ratio_c <= 1:
            raise ValueError(f"algo.clip_ratio_c must be > 1 (or 0 for off), got {self.algo.clip_ratio_c}")
        if not self.val_top_p > 0.0:
            raise ValueError(f"val_top_p must be in (0, 1], got {self.val_top_p}; 1.0 turns nucleus sampling off")
        check_task_options(self.task.name, self.task.options, "task.options")
        from aha.rewards.compose import check_reward_specs

        for i, spec in enumerate(self.rewards):
            check_finite(spec.options, f"rewards[{i}].options")
        check_reward_specs(self.rewards, self.model.path or None)  # names, options and values, before any model
        self._validate_resets()

    def _validate_resets(self) -> None:
        r = self.reset
        if r.on_plateau.metric and not self.val_every:
            raise ValueError(f"reset.on_plateau.metric={r.on_plateau.metric!r} is measured at validation; "
                             "set val_every > 0")
        if r.on_plateau.metric and not r.on_plateau.metric.startswith("val/"):
            raise ValueError(f"reset.on_plateau.metric must be a validation metric such as val/accuracy, got "
                             f"{r.on_plateau.metric!r}")
        if r.optimizer == "keep" and self.lora.enabled and r.enabled:
            raise ValueError("reset.optimizer=keep needs full fine-tuning: a LoRA reset attaches a new adapter "
                             "whose parameters have no optimizer state; use reset.optimizer=reset")
        if self.phases and not r.enabled:
            raise ValueError("phases start at resets, but no reset trigger is on; set reset.every, "
                             "reset.at_steps or reset.on_plateau.metric")
        if r.at_steps and (sorted(set(r.at_steps)) != list(r.at_steps) or r.at_steps[0] < 1
                           or r.at_steps[-1] >= self.steps):
            raise ValueError(f"reset.at_steps must be increasing steps in 1..steps-1 (steps={self.steps}), got "
                             f"{list(r.at_steps)}")
        previous = -1
        for i, phase in enumerate(self.phases):
            if phase.after_reset <= previous:
                raise ValueError(f"phases[{i}].after_reset ({phase.after_reset}) must be greater than the "
                                 f"phase before it ({previous}); list phases in increasing after_reset order")
            previous = phase.after_reset
            if r.max_resets and phase.after_reset > r.max_resets:
                raise ValueError(f"phases[{i}].after_reset ({phase.after_reset}) is beyond reset.max_resets "
                                 f"({r.max_resets}), so it would never start; raise reset.max_resets")
            lora_set = [k for k in ("r", "alpha", "target_modules") if getattr(phase.lora, k) is not None]
            if lora_set and not self.lora.enabled:
                raise ValueError(f"phases[{i}] sets lora.{lora_set[0]}, which needs lora.enabled=true")
            if phase.rewards is not None:
                from aha.rewards.compose import check_reward_specs

                try:  # names and options now, not at the reset hours into the run
                    check_reward_specs(phase.rewards, self.model.path or None)
                except AhaError as exc:
                    raise ValueError(f"phases[{i}] rewards: {exc}") from None
        for i in range(len(self.phases)):
            cfg = phase_config(self, i + 1)
            try:  # the merged settings must be as valid as a recipe's (top_p > 0, batch divisibility)
                cfg.rollout.validate()
                cfg.batch.validate()
            except ValueError as exc:
                raise ValueError(f"phases[{i}]: {exc}") from None


def check_task_options(name: str, options: dict[str, Any], key: str) -> None:
    """The task exists and takes these options (names and simple types), checked at config load so a
    typo fails before any model loads."""
    import aha.tasks  # noqa: F401  (registers the built-in tasks)
    from aha.tasks.base import TASKS

    check_finite(options, key)
    check_call_options(TASKS.get(name), options, key, f"task {name!r}")


def phase_config(cfg: TrainConfig, phase: int) -> TrainConfig:
    """The config in force during `phase` (0: the recipe's own; i: with phases[0..i-1]'s overrides
    applied in order). The recipe itself is not modified (its copy is what config.yaml holds)."""
    import dataclasses

    out = cfg
    for p in cfg.phases[:phase]:
        rollout = {k: v for k, v in dataclasses.asdict(p.rollout).items() if v is not None}
        batch = {k: v for k, v in dataclasses.asdict(p.batch).items() if v is not None}
        lora = {k: v for k, v in dataclasses.asdict(p.lora).items() if v is not None}
        top = {k: getattr(p, k) for k in ("val_temperature", "val_top_p", "rewards") if getattr(p, k) is not None}
        out = dataclasses.replace(out, rollout=dataclasses.replace(out.rollout, **rollout),
                                  batch=dataclasses.replace(out.batch, **batch),
                                  lora=dataclasses.replace(out.lora, **lora), **top)
    return out


def phase_at(cfg: TrainConfig, resets: int) -> int:
    """The phase number after `resets` resets: 1 + the index of the last phase whose after_reset
    is reached, 0 while none is (the recipe's own settings)."""
    return sum(1 for p in cfg.phases if p.after_reset <= resets)
