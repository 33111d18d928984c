"""RL post-training: GRPO and its published variants in one loop.

One step is five stages over one `StepBatch`, each a function of this module:

  collect      take `prompts_per_step` prompts (a seeded permutation of the train split, epoch after
               epoch), sample `samples_per_prompt` completions each (the group), verify every one with
               the task and compute the weighted rewards; with dynamic sampling (DAPO), drop groups
               whose rewards are all equal and sample more prompts; with `rollout.revision` (REA-RL)
               each sampled response's revision joins its group before the rewards (2G members,
               aha.train.revision);
  logprobs     the old (sampling-policy) and reference log-probs that the loss and the KL need;
  advantages   per group from the registered estimator, after the KL penalty when it goes into the
               reward;
  update       `num_iterations` passes over the batch, each in `mini_batches` optimizer steps, with the
               registered policy loss (plus KL to the reference and an entropy bonus when their
               coefficients are > 0);
  record       metrics, rollouts, validation every `val_every` steps, a checkpoint every
               `checkpoint_every`.

Every rule of the algorithm (advantages, policy losses, their aggregation and divisors, the truncation
mask, KL estimators and the KL penalty) is a pure tensor function in `aha.algo`; this module moves
data between those functions, the model and the run folder. Variants are settings, not code paths:
Dr. GRPO is `algo.advantage=dr_grpo algo.loss_agg=seq_mean_token_sum_norm`; DAPO is
`algo.clip_high=0.28 algo.dynamic_sampling=true algo.loss_agg=token_mean` with the overlong reward;
REINFORCE++ is `algo.advantage=reinforce_pp`.

Run: `aha train recipes/kk_grpo_tiny.yaml [key=value ...]`; continue: `aha train resume=RUN_DIR`. On N
processes (`torchrun --nproc_per_node N -m aha.cli train ...`) every rank runs the same stages: collect
samples this rank's share of the groups and ends with every rank's groups on every rank; the forward
passes are dealt out by micro-batch and the gradients summed; rank 0 writes (see `aha.train.distributed`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import random
import time
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aha.algo.losses import batch_divisors, kl_penalty_rewards, loss_token_mask, policy_loss
from aha.algo.overthinking import zero_unsolved_groups
from aha.errors import AhaError
from aha.prompts import render_prompt, think_tag_ids
from aha.rewards.base import RewardBatch
from aha.rollout.base import Completion, SamplingParams
from aha.runs import RunDir, progress, truncate_metrics, write_jsonl
from aha.tasks.base import Example, Verdict, preopens_think, safe_verify
from aha.train import fsdp
from aha.train.checkpoint import list_checkpoints, remove_partial_checkpoints, restore_latest, save_checkpoint
from aha.train.common import check_resume_config, load_policy, make_optimizer
from aha.train.config import TrainConfig
from aha.train.distributed import (
    World,
    gather_completions,
    init_world,
    open_run,
    share_logprobs,
    sum_update_metrics,
    whole_step,
    world_summary,
)
from aha.train.logprobs import completion_logprobs, pad_rows, reference_logprobs
from aha.train.resets import (
    ResetState,
    checkpoint_extras,
    maybe_reset,
    reset_metrics,
    resume_phase,
    save_final_model,
)
from aha.train.stopping import GracefulStop

# config keys that may differ between a run and its resumption
_RESUME_FREE_KEYS = {"resume", "allow_config_change", "max_seconds", "parallel"}
_RESUME_FREE_RUN_KEYS = {"out_dir", "progress"}
# take the old log-probs from the first update pass when that is exact (a switch so a test can compare)
_OLD_FROM_FIRST_PASS = True
# metrics that micro-batches contribute as shares of their mini-batch's value
_ADDITIVE = ("loss", "pg_loss", "pair_loss")


# ----------------------------------------------------------------------------- data and seeds


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def example_at(examples: list[Example], position: int, seed: int) -> Example:
    """The example at a global data position: a fresh seeded permutation per epoch."""
    n = len(examples)
    epoch, offset = divmod(position, n)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return examples[int(perm[offset])]


def step_seed(seed: int, step: int, round_: int = 0) -> int:
    return (seed * 1_000_003 + step * 7_919 + round_ * 104_729) % 2**31


# ----------------------------------------------------------------------------- what the stages share


@dataclasses.dataclass
class Rollout:
    """One completion of a step.

    group: the number of its group in the step, given once when the group is sampled (groups are
        numbered in sampling order over all dynamic-sampling rounds, so the kept groups' numbers
        are increasing but need not be consecutive).
    old_logprobs, ref_logprobs: (c,) log-probs of the completion's tokens under the sampling policy
        and the reference, when the configuration needs them.
    kind: "sample" (sampled by the policy), "revision" (REA-RL: the original's prefix, a template and
        the policy's continuation; `revises` is its original) or "copy" (an original standing in for a
        revision that failed or could not be made), see aha.train.revision.
    loss_mask: (c,) bool, the completion tokens that carry loss; None = all of them.
    pair_from, pair_advantage: REA-RL's optional pair term (`rollout.revision.pair_loss`): the completion
        tokens from `pair_from` on get a second policy-gradient term with `pair_advantage`; None = none.
    """

    example: Example
    group: int
    prompt_ids: list[int]
    completion: Completion
    verdict: Verdict
    reward: float = 0.0
    components: dict[str, float | None] = dataclasses.field(default_factory=dict)
    advantage: float = 0.0
    old_logprobs: torch.Tensor | None = None  # (c,)
    ref_logprobs: torch.Tensor | None = None  # (c,)
    kind: str = "sample"
    loss_mask: torch.Tensor | None = None  # (c,)
    revises: Rollout | None = None
    pair_from: int | None = None
    pair_advantage: float = 0.0

    @property
    def completion_ids(self) -> list[int]:
        """The completion's token ids; an empty completion still needs one position for the loss."""
        ids = self.completion.token_ids
        return ids if ids else [self.prompt_ids[-1]]

    @property
    def truncated(self) -> bool:
        return self.completion.finish_reason == "length"


@dataclasses.dataclass
class StepBatch:
    """What one RL step works on: the kept groups (P groups of G rollouts, each rollout with its
    token ids, verdict, reward, advantage and log-probs), every rollout sampled (dropped groups
    included: metrics and the rollout files report all of them), and the collect stage's figures."""

    groups: list[list[Rollout]] = dataclasses.field(default_factory=list)
    sampled: list[Rollout] = dataclasses.field(default_factory=list)
    reward_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    gen_seconds: float = 0.0
    score_seconds: float = 0.0
    gen_tokens: int = 0
    last_round_first_group: int = 0  # the number of the first group sampled in the last round (metrics)
    revision_metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def rollouts(self) -> list[Rollout]:
        """The kept rollouts, group after group."""
        return [r for g in self.groups for r in g]

    def rewards(self) -> torch.Tensor:
        """(P, G) float32 rewards of the kept groups."""
        return torch.tensor([[r.reward for r in g] for g in self.groups], dtype=torch.float32)

    def padded(self, value: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """((P, G_max) float32 `value(rollout)` of the kept groups, zero-padded; (P, G_max) bool
        valid mask): groups are ragged when failed revisions are dropped."""
        width = max(len(g) for g in self.groups)
        table = torch.zeros((len(self.groups), width), dtype=torch.float32)
        valid = torch.zeros((len(self.groups), width), dtype=torch.bool)
        for i, g in enumerate(self.groups):
            table[i, :len(g)] = torch.tensor([float(value(r)) for r in g], dtype=torch.float32)
            valid[i, :len(g)] = True
        return table, valid


@dataclasses.dataclass(frozen=True)
class LogprobPlan:
    """Which stored log-probs a configuration needs, decided once from the config.

    need_ref: a KL term (kl_coef > 0) needs the reference's log-probs.
    kl_in_reward: the KL is a reward penalty, computed before the advantages.
    need_old: stored sampling-policy log-probs, for the ratio when mu > 1 and for the KL penalty.
    old_from_first_pass: with one mini-batch, the first update pass runs on the sampling weights, so
        its log-probs are the old ones: they are taken there instead of in a separate forward.
    """

    need_ref: bool
    kl_in_reward: bool
    need_old: bool
    old_from_first_pass: bool

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> LogprobPlan:
        need_ref = cfg.algo.kl_coef > 0
        kl_in_reward = need_ref and cfg.algo.kl_in_reward
        need_old = cfg.algo.num_iterations > 1 or kl_in_reward
        return cls(need_ref, kl_in_reward, need_old,
                   _OLD_FROM_FIRST_PASS and need_old and cfg.batch.mini_batches == 1 and not kl_in_reward)

    @property
    def separate_old_pass(self) -> bool:
        return self.need_old and not self.old_from_first_pass


@dataclasses.dataclass
class RLSession:
    """What the stages share for a whole run."""

    cfg: TrainConfig
    task: Any
    train_examples: list[Example]
    val_examples: list[Example]
    composer: Any  # aha.rewards.compose.RewardComposer
    estimator: Any  # the advantage estimator (aha.algo.advantages)
    run: RunDir
    model: Any
    tokenizer: Any
    reference: Any  # a frozen copy for full fine-tuning with a KL term; None otherwise (LoRA: adapter off)
    generator: Any
    optimizer: Any
    scheduler: Any
    plan: LogprobPlan
    prompt_cache: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    # ProRL: `cfg` is the current phase's config (aha.train.resets); `recipe` the run's own, unchanged
    recipe: TrainConfig | None = None
    resets: ResetState = dataclasses.field(default_factory=ResetState)
    # the training processes (aha.train.distributed); one process unless launched by torchrun/accelerate
    world: World = dataclasses.field(default_factory=World.single)
    strategy: fsdp.Strategy = fsdp.PLAIN  # DDP-style or FSDP on N processes (aha.train.fsdp)
    reviser: Any = None  # aha.train.revision.Reviser when rollout.revision.enabled (REA-RL)

    def __post_init__(self) -> None:
        if self.recipe is None:
            self.recipe = self.cfg

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @functools.cached_property
    def think_ids(self) -> tuple[int | None, int | None]:
        """The tokenizer's single-token `<think>` / `</think>` ids (rewards that count reasoning tokens use them)."""
        return think_tag_ids(self.tokenizer)

    def prompt_ids(self, ex: Example) -> list[int]:
        if ex.id not in self.prompt_cache:
            self.prompt_cache[ex.id] = render_prompt(self.tokenizer, ex.prompt, preopens_think(self.task))
        return self.prompt_cache[ex.id]

    def save(self, step: int, data_position: int) -> None:
        full: dict[str, Any] = {}
        reference = None
        if self.strategy.sharded:  # every rank gathers; rank 0 writes the one-process format
            full = fsdp.checkpoint_state(self.model, self.optimizer)
            if self.recipe.reset.enabled and self.resets.count > 0 and self.reference is not None:
                reference = fsdp.plain_weights(fsdp.full_model_state(self.reference))  # ProRL: a later policy
        with fsdp.writing(self.model):
            if not self.world.main:
                return  # rank 0 writes the checkpoint; every rank holds the same state
            reset_state, weights = checkpoint_extras(self, reference)
            save_checkpoint(self.run.path, step, self.model, self.tokenizer, self.optimizer, self.scheduler,
                            {"data_position": data_position, "rewards": self.composer.state_dict(), **reset_state},
                            keep=self.cfg.keep_checkpoints, weights=weights, **full)


# ----------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig) -> Path:
    """Run RL training as configured; returns the run directory."""
    s, start_step, data_position = start_session(cfg)
    step = start_step
    loop_start = time.time()
    try:
        with progress(cfg.steps - start_step, "train", cfg.run.progress and s.world.main) as bar, \
                GracefulStop(s.run.log.info) as stop:
            for step in range(start_step + 1, cfg.steps + 1):
                t0 = time.time()
                batch, data_position = collect(s, step, data_position)
                t_update = time.time()
                compute_logprobs(s, batch)
                metrics = compute_advantages(s, batch)
                metrics = {**update(s, batch, step), **metrics}
                metrics = {**batch_metrics(batch), **metrics, "time/generation": batch.gen_seconds,
                           "time/scoring": batch.score_seconds, "time/update": time.time() - t_update,
                           "time/step": time.time() - t0,
                           "tokens_per_s": batch.gen_tokens / max(batch.gen_seconds, 1e-9), **reset_metrics(s)}
                # decisions every rank takes together (a signal or the clock may reach one rank first)
                out_of_time = s.world.any(bool(cfg.max_seconds) and time.time() - loop_start >= cfg.max_seconds)
                stopping = s.world.any(stop.requested is not None)
                record(s, step, batch, metrics, data_position, last=step == cfg.steps or out_of_time,
                       stopping=stopping)
                maybe_reset(s, step, metrics, data_position)  # ProRL: needs this step's validation
                bar.update(1, reward=metrics.get("reward/total/mean", float("nan")), acc=metrics["accuracy"])
                if stopping:
                    by = stop.requested or "a signal to another rank"
                    s.run.log.info(f"stopped by {by} after step {step}, checkpoint written; "
                                   f"continue with: aha train resume={s.run.path}")
                    raise KeyboardInterrupt
                if out_of_time:
                    s.run.log.info(f"time budget of {cfg.max_seconds:.0f}s reached after step {step}")
                    break
    except KeyboardInterrupt:
        newest = list_checkpoints(s.run.path)
        if not (newest and newest[-1].name == f"step_{step:06d}"):
            # the live state is between two step boundaries: it is not saved (see aha.train.stopping)
            after = f"after {newest[-1].name}" if newest else "at step 1"
            s.run.log.info(f"stopped in step {step} before it finished, so no checkpoint of it was written; "
                           f"aha train resume={s.run.path} continues {after}")
        raise
    except OSError as exc:
        raise AhaError(f"writing the run under {s.run.path} failed in step {step}: {exc.strerror or exc}; "
                       "free space or fix the folder's permissions, then resume it") from None
    s.run.metrics.close()
    if s.strategy.sharded:  # every rank gathers the full weights, rank 0 writes them (no resets under FSDP)
        state = fsdp.full_model_state(s.model)
        with fsdp.writing(s.model):
            if s.world.main:
                fsdp.save_pretrained(s.model, s.run.path / "model", state)
                s.tokenizer.save_pretrained(str(s.run.path / "model"))
    elif s.world.main:
        save_final_model(s, s.run.path / "model")  # after LoRA resets: the whole merged model
        s.tokenizer.save_pretrained(str(s.run.path / "model"))
    s.world.finish()  # the model folder is complete before any rank returns
    s.run.log.info(f"done: {s.run.path} (model in {s.run.path / 'model'})")
    return s.run.path


def start_session(cfg: TrainConfig) -> tuple[RLSession, int, int]:
    """Everything a run needs, cheap checks first; on resume, the checkpoint's state loaded.
    Returns (session, the step to continue after, the data position)."""
    from aha.algo.advantages import ADVANTAGES
    from aha.rewards.compose import RewardComposer
    from aha.rollout import get_generator, wave_options
    from aha.tasks import get_task

    composer = RewardComposer(cfg.rewards, policy_path=cfg.model.path)  # bad reward names/options fail here
    estimator = ADVANTAGES.get(cfg.algo.advantage)
    resume_from = Path(cfg.resume) if cfg.resume else None
    if resume_from is not None:
        check_resume_config(cfg, resume_from, _RESUME_FREE_KEYS, _RESUME_FREE_RUN_KEYS, "train",
                            allow_change=cfg.allow_config_change)
    task = get_task(cfg.task.name, **cfg.task.options)
    train_examples = list(task.examples(cfg.task.train_split))
    if not train_examples:
        raise AhaError(f"task {cfg.task.name!r} has no examples in split {cfg.task.train_split!r}")
    val_examples = list(islice(task.examples(cfg.task.val_split), cfg.val_size)) if cfg.val_every else []
    seen = {(ex.id, json.dumps(ex.prompt)) for ex in train_examples}  # the same id and the same prompt
    if val_examples and all((ex.id, json.dumps(ex.prompt)) in seen for ex in val_examples):
        raise AhaError(f"the {cfg.task.val_split!r} split of task {cfg.task.name!r} holds training examples only, "
                       "so validation would score training prompts; give the task held-out data (math tasks: "
                       "task.options.data={train: [...], test: [...]} or test_fraction; knights-knaves: "
                       "task.options.test_data), or set val_every=0")

    world = init_world()
    if cfg.rollout.revision.enabled and world.distributed:  # before anything is written
        raise AhaError("rollout.revision (REA-RL) runs in one process only for now; launch it without "
                       "torchrun/accelerate, or set rollout.revision.enabled=false")
    strategy = fsdp.resolve_strategy(cfg.parallel, world.size)
    fsdp.check_supported(cfg, strategy)
    run = open_run(world, lambda: RunDir.create(resume_from or cfg.run.out_dir or None, "train",
                                                resume=resume_from is not None, tensorboard=cfg.run.tensorboard,
                                                wandb_project=cfg.run.wandb_project))  # rank 0 writes it
    if resume_from is None:
        run.write_config(cfg)
    seed_everything(cfg.run.seed)
    model, tokenizer = load_policy(cfg.model, cfg.lora)
    reference = None
    if cfg.algo.kl_coef > 0 and not cfg.lora.enabled:
        reference = copy.deepcopy(model).eval().requires_grad_(False)  # frozen copy for full fine-tuning
    generator = get_generator(cfg.rollout.backend, model, tokenizer, **wave_options(cfg.rollout))
    updates_per_step = cfg.algo.num_iterations * cfg.batch.mini_batches

    def build_optimizer(m: Any) -> tuple[Any, Any]:
        return make_optimizer(m, cfg.optim.lr, cfg.optim.weight_decay, (cfg.optim.beta1, cfg.optim.beta2),
                              cfg.optim.schedule, cfg.optim.warmup_steps, cfg.steps * updates_per_step,
                              cfg.optim.min_lr_ratio, cfg.optim.master_weights)

    optimizer, scheduler = build_optimizer(model)
    s = RLSession(cfg, task, train_examples, val_examples, composer, estimator, run, model, tokenizer,
                  reference, generator, optimizer, scheduler, LogprobPlan.from_config(cfg), world=world,
                  strategy=strategy)
    if cfg.rollout.revision.enabled:
        from aha.train.revision import Reviser

        s.reviser = Reviser(cfg.rollout.revision, task, tokenizer, cfg.task.name)

    start_step, data_position = 0, 0
    if resume_from is not None:
        for stale in (remove_partial_checkpoints(resume_from) if world.main else []):
            run.log.info(f"removed {stale}, a checkpoint whose writing was interrupted")
        resume_phase(s, resume_from)  # the checkpoint's phase: its adapter's shapes, its optimizer
        restored = restore_latest(resume_from, s.model, s.optimizer, s.scheduler, warn=run.log.warning,
                                  reference=s.reference)
        if restored is None:
            run.log.info(f"{resume_from} stopped before its first checkpoint: starting it again at step 1")
        else:
            ckpt, state = restored
            start_step, data_position = state["step"], state["data_position"]
            composer.load_state_dict(state.get("rewards", {}))
            run.log.info(f"resumed from {ckpt} at step {start_step}")
        if world.main:
            last_time = truncate_metrics(run.path / "metrics.jsonl", start_step)
            run.metrics.start = time.time() - last_time  # the metrics clock continues across a resume
    if strategy.sharded:  # after the resume: a checkpoint loads into the plain model as in one process
        s.optimizer, s.scheduler = fsdp.shard_training(world, s.model, s.optimizer, s.scheduler, build_optimizer,
                                                       strategy, frozen=(s.reference,))
    run.log.info(f"run directory: {run.path}")
    run.log.info(f"{len(train_examples)} train prompts, {len(val_examples)} validation prompts; "
                 f"{cfg.batch.prompts_per_step} prompts x {cfg.batch.samples_per_prompt} samples per step")
    if world.distributed:
        run.log.info(world_summary(world, cfg.batch.prompts_per_step, cfg.batch.samples_per_prompt,
                                   strategy.describe()))
    return s, start_step, data_position


# ----------------------------------------------------------------------------- 1. collect


def collect(s: RLSession, step: int, data_position: int) -> tuple[StepBatch, int]:
    """Sample, verify and reward groups until `prompts_per_step` are kept (one round without dynamic
    sampling). Returns the batch and the data position after the prompts it used. Under FSDP the
    policy's full weights are gathered once for the whole stage (`fsdp.gathered`)."""
    with fsdp.gathered(s.model):
        return _collect_rounds(s, step, data_position)


def _collect_rounds(s: RLSession, step: int, data_position: int) -> tuple[StepBatch, int]:
    cfg = s.cfg
    batch = StepBatch()
    rounds = 1 + (cfg.algo.max_resample_rounds if cfg.algo.dynamic_sampling else 0)
    numbered, kept = 0, 0
    for round_ in range(rounds):
        need = cfg.batch.prompts_per_step - kept  # kept: on every rank together
        mine = s.world.share(need)  # this rank's whole groups of the round (all of them on one process)
        examples = [example_at(s.train_examples, data_position + i, cfg.run.seed) for i in mine]
        data_position += need
        batch.last_round_first_group = numbered
        if examples:
            groups = sample_groups(s, batch, examples, step, round_, first_group=numbered + mine.start)
            if s.reviser is not None:  # REA-RL: each original's revision joins its group (2G members)
                groups = revise_groups(s, batch, groups, step, round_)
            score_groups(s, batch, groups)
            if s.reviser is not None:  # failed revisions replaced by their originals (or dropped)
                groups, settled = s.reviser.settle(groups)
                _add_metrics(batch.revision_metrics, settled)
            for g in groups:
                if not cfg.algo.dynamic_sampling or _spread(g) > 1e-9 or round_ == rounds - 1:
                    batch.groups.append(g)
        numbered += need
        kept = int(s.world.sum([len(batch.groups)])[0])
        if kept >= cfg.batch.prompts_per_step:
            break
    s.world.seed_dropout(step_seed(cfg.run.seed, step, 7))  # N ranks: per-rank dropout masks; one: no-op
    return whole_step(s.world, batch), data_position  # N ranks: every rank's groups, on every rank


def sample_groups(s: RLSession, batch: StepBatch, examples: list[Example], step: int, round_: int,
                  first_group: int) -> list[list[Rollout]]:
    """G completions per example from the current policy, each verified by the task."""
    r, G = s.cfg.rollout, s.cfg.batch.samples_per_prompt
    params = SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                            max_new_tokens=r.max_new_tokens, n=G, stop=list(r.stop),
                            seed=step_seed(s.cfg.run.seed, step, round_),
                            index_offset=first_group - batch.last_round_first_group)  # index in the round
    prompts = [s.prompt_ids(ex) for ex in examples]
    t = time.time()
    s.model.eval()
    with torch.no_grad():
        completions = s.generator.generate(prompts, params)
    s.model.train()
    batch.gen_seconds += time.time() - t
    batch.gen_tokens += sum(len(c.token_ids) for c in completions)
    t = time.time()
    groups = [[Rollout(examples[c.prompt_index], first_group + c.prompt_index, prompts[c.prompt_index], c,
                       safe_verify(s.task, c.text, examples[c.prompt_index]))
               for c in completions[i * G:(i + 1) * G]] for i in range(len(examples))]
    batch.score_seconds += time.time() - t
    return groups


def revise_groups(s: RLSession, batch: StepBatch, groups: list[list[Rollout]], step: int, round_: int
                  ) -> list[list[Rollout]]:
    """REA-RL: G originals -> 2G (original, revision) per group (see aha.train.revision)."""
    r = s.cfg.rollout
    params = SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, stop=list(r.stop),
                            seed=step_seed(s.cfg.run.seed, step, round_) + 1)
    groups, metrics = s.reviser.revise(s.generator, s.model, groups, params)
    batch.gen_seconds += metrics["revision/seconds"]
    batch.gen_tokens += int(metrics["revision/generated_tokens"])
    _add_metrics(batch.revision_metrics, metrics)
    return groups


def _add_metrics(into: dict[str, float], new: dict[str, float]) -> None:
    """Merge a dynamic-sampling round's revision figures: counts add up, the rest is the last round's."""
    for k, v in new.items():
        into[k] = into.get(k, 0.0) + v if k in ("revision/made", "revision/seconds", "revision/generated_tokens") else v


def score_groups(s: RLSession, batch: StepBatch, groups: list[list[Rollout]]) -> None:
    """The weighted rewards of freshly sampled groups (the composer sees them together)."""
    t = time.time()
    flat = [r for g in groups for r in g]
    totals, components, batch.reward_metrics = s.composer(RewardBatch(
        completions=[r.completion.text for r in flat], examples=[r.example for r in flat],
        verdicts=[r.verdict for r in flat], num_tokens=[len(r.completion.token_ids) for r in flat],
        group_ids=[r.group for r in flat], truncated=[r.truncated for r in flat],
        max_new_tokens=s.cfg.rollout.max_new_tokens, token_ids=[r.completion.token_ids for r in flat],
        think_ids=s.think_ids))
    for i, r in enumerate(flat):
        r.reward = totals[i]
        r.components = {name: values[i] for name, values in components.items()}
    batch.score_seconds += time.time() - t
    batch.sampled.extend(flat)


# ----------------------------------------------------------------------------- 2. log-probs


def compute_logprobs(s: RLSession, batch: StepBatch) -> None:
    """Store the old and reference log-probs the plan needs, in no-grad passes over the kept rollouts:
    the old pass over this rank's micro-batches, then the reference pass. Under FSDP each pass runs on
    its model's gathered weights (one full copy at a time) and does no collectives, so each rank runs
    its own share; for a plain model `fsdp.gathered` does nothing."""
    plan = s.plan
    if not (plan.separate_old_pass or plan.need_ref):
        return
    mine = s.world.part(_chunks(by_length(batch.rollouts), s.cfg.batch.micro_batch_size))  # N ranks: a share
    passes = []
    if plan.separate_old_pass:
        passes.append(("old_logprobs", s.model, lambda *args: completion_logprobs(s.model, *args)))
    if plan.need_ref:
        passes.append(("ref_logprobs", s.reference if s.reference is not None else s.model,
                       lambda *args: reference_logprobs(s.model, s.reference, *args)))
    with torch.no_grad():
        for field, weights, logprobs in passes:
            with fsdp.gathered(weights):
                for mb in mine:
                    lp, _, mask = logprobs([r.prompt_ids for r in mb], [r.completion_ids for r in mb], s.pad_id,
                                           s.cfg.rollout.temperature)  # (B, C) each
                    for r, row, m in zip(mb, lp, mask):
                        setattr(r, field, row[m].detach())
    share_logprobs(s.world, batch.rollouts, [r for mb in mine for r in mb])  # every rank gets every row's


# ----------------------------------------------------------------------------- 3. advantages


def compute_advantages(s: RLSession, batch: StepBatch) -> dict[str, float]:
    """Set every kept rollout's advantage; returns the KL penalty's mean when it is in the reward."""
    a = s.cfg.algo
    rollouts = batch.rollouts
    # revisions: groups may be ragged (dropped revisions), so rewards are padded with a valid mask
    rewards, valid = batch.padded(lambda r: r.reward) if s.reviser is not None else (batch.rewards(), None)  # (P, G)
    metrics: dict[str, float] = {}
    if s.plan.kl_in_reward:
        # the sequence KL under the sampling policy, subtracted from the reward
        old = pad_rows([r.old_logprobs.cpu() for r in rollouts], max(len(r.completion_ids) for r in rollouts))
        ref = pad_rows([r.ref_logprobs.cpu() for r in rollouts], old.shape[1])  # (N, T)
        rewards, seq_kl = kl_penalty_rewards(rewards, old, ref, _length_mask(rollouts), a.kl_coef,
                                             kind=a.kl_estimator, clamp=a.kl_clamp or None)
        metrics["kl_in_reward"] = float(seq_kl.mean())
    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)  # (P, G)
    advantages = s.estimator(rewards, valid, **a.advantage_options)  # (P, G)
    if s.reviser is not None and s.cfg.rollout.revision.zero_adv_if_none_correct:
        advantages = zero_unsolved_groups(advantages, batch.padded(lambda r: r.verdict.correct)[0] > 0, valid)
    for r, adv in zip(rollouts, advantages[valid].tolist()):
        r.advantage = adv
    if s.reviser is not None and s.cfg.rollout.revision.pair_loss != "none":
        metrics["revision/pair_terms"] = s.reviser.pair_terms(batch.groups, advantages, valid)
    return metrics


# ----------------------------------------------------------------------------- 4. update


def update(s: RLSession, batch: StepBatch, step: int) -> dict[str, float]:
    """`num_iterations` passes over the kept rollouts in `mini_batches` optimizer steps each.
    Returns the loss metrics (averaged over micro-batches; loss and pg_loss summed per mini-batch
    and averaged over mini-batches), grad_norm and lr."""
    cfg = s.cfg
    rollouts = batch.rollouts
    sums: dict[str, float] = {}
    n_micro, n_mini, grad_norms = 0, 0, []
    order_gen = torch.Generator().manual_seed(step_seed(cfg.run.seed, step, 99))
    mini_size = math.ceil(len(rollouts) / cfg.batch.mini_batches)
    for iteration in range(cfg.algo.num_iterations):
        order = torch.randperm(len(rollouts), generator=order_gen).tolist()
        for start in range(0, len(rollouts), mini_size):
            # micro-batches of similar lengths pad less and share prompts (see `by_length`)
            mini = by_length([rollouts[i] for i in order[start:start + mini_size]])
            n_micro += accumulate_gradients(s, mini, first_pass=iteration == 0, sums=sums)
            if not s.strategy.sharded:  # FSDP reduce-scattered them in the backward passes
                s.world.sync_gradients([p for p in s.model.parameters() if p.requires_grad])  # summed over ranks
            grad_norms.append(optimizer_step(s))
            n_mini += 1
        if iteration == 0 and s.plan.old_from_first_pass:  # the next pass may draw another rank's rows
            share_logprobs(s.world, rollouts, [r for r in rollouts if r.old_logprobs is not None],
                           ("old_logprobs",))
    sums, n_micro = sum_update_metrics(s.world, sums, n_micro)
    metrics = {k: v / max(n_mini if k in _ADDITIVE else n_micro, 1) for k, v in sums.items()}
    metrics["grad_norm"] = _mean(grad_norms)
    metrics["lr"] = s.scheduler.get_last_lr()[0]
    return metrics


def accumulate_gradients(s: RLSession, mini: list[Rollout], first_pass: bool, sums: dict[str, float]) -> int:
    """Zero the gradients, then backpropagate the mini-batch's loss micro-batch by micro-batch. The
    loss divisors are the whole mini-batch's, so the split into micro-batches does not change the
    gradient. Adds the metrics to `sums`; returns the number of micro-batches."""
    a, plan = s.cfg.algo, s.plan
    truncated = torch.tensor([r.truncated for r in mini])  # (M,)
    batch_tokens, batch_rows = batch_divisors(
        loss_token_mask(_with_loss_masks(_length_mask(mini), mini), truncated, a.mask_truncated), a.loss_agg,
        s.cfg.batch.micro_batch_size)
    s.optimizer.zero_grad(set_to_none=True)
    chunks = _chunks(mini, s.cfg.batch.micro_batch_size)
    if s.strategy.sharded:  # every rank runs as many forwards and backwards (collectives), padded with zeros
        slots = fsdp.lockstep(s.world, chunks, lambda r: r.prompt_ids)
    else:
        slots = [fsdp.Slot(m, False, True) for m in s.world.part(chunks)]  # N ranks: this rank's share
    for slot in slots:
        micro = slot.items
        lp, ent, mask = completion_logprobs(
            s.model, [r.prompt_ids for r in micro], [r.completion_ids for r in micro], s.pad_id,
            s.cfg.rollout.temperature, with_entropy=True, entropy_grad=a.entropy_coef > 0,
            share_prompts=slot.share_prompts)  # (B, C) each
        old = _old_logprobs(plan, micro, lp, mask, first_pass, store=not slot.padding)  # (B, C)
        ref = None
        if plan.need_ref and not plan.kl_in_reward:
            ref = pad_rows([r.ref_logprobs for r in micro], lp.shape[1])  # (B, C)
        loss_mask = loss_token_mask(_with_loss_masks(mask, micro),
                                    torch.tensor([r.truncated for r in micro], device=mask.device),
                                    a.mask_truncated)  # (B, C)
        adv = torch.tensor([r.advantage for r in micro], device=lp.device)  # (B,)
        pair_adv, pair_mask = _pair_terms(micro, mask)  # (B,), (B, C); None without pair terms
        loss, metrics = policy_loss(
            lp, old, adv, loss_mask, clip_low=a.clip_low, clip_high=a.clip_high, agg=a.loss_agg,
            norm_constant=s.cfg.rollout.max_new_tokens, ref_logprobs=ref,
            kl_coef=a.kl_coef if ref is not None else 0.0, kl_estimator=a.kl_estimator, entropy=ent,
            entropy_coef=a.entropy_coef, loss_mode=a.policy_loss, clip_ratio_c=a.clip_ratio_c or None,
            kl_clamp=a.kl_clamp or None, batch_tokens=batch_tokens, batch_rows=batch_rows,
            pair_advantages=pair_adv, pair_mask=pair_mask)
        if slot.padding:  # FSDP: another rank's micro-batch, run for the collectives; zero gradient
            (loss * 0.0).backward()
            continue
        loss.backward()  # this micro-batch's share of the mini-batch loss
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
    return sum(not slot.padding for slot in slots)


def optimizer_step(s: RLSession) -> float:
    """Clip the gradient (when `optim.max_grad_norm` > 0), step the optimizer and the schedule;
    returns the gradient norm before clipping."""
    max_norm = s.cfg.optim.max_grad_norm if s.cfg.optim.max_grad_norm > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), max_norm)
    s.optimizer.step()
    s.scheduler.step()
    if hasattr(s.generator, "sync_weights"):  # a backend with its own copy of the weights (vLLM)
        s.generator.sync_weights(s.model)
    return float(norm)


def _old_logprobs(plan: LogprobPlan, micro: list[Rollout], lp: torch.Tensor, mask: torch.Tensor,
                  first_pass: bool, store: bool = True) -> torch.Tensor:
    """(B, C) sampling-policy log-probs for the ratio: the stored ones, or (on-policy, and on the
    first pass when the plan takes them there) this pass's own, detached and then stored (unless
    `store` is off: an FSDP padding micro-batch holds another rank's rows)."""
    if plan.need_old and not (plan.old_from_first_pass and first_pass):
        return pad_rows([r.old_logprobs for r in micro], lp.shape[1])
    old = lp.detach()
    if plan.old_from_first_pass and store:
        for r, row, m in zip(micro, old, mask):
            r.old_logprobs = row[m]
    return old


# ----------------------------------------------------------------------------- 5. record


def batch_metrics(batch: StepBatch) -> dict[str, float]:
    """What the step's samples say: rewards, accuracy, format, group spread and lengths."""
    sampled = [r for r in batch.sampled if r.kind == "sample"]  # the policy's own samples
    lengths = [len(r.completion.token_ids) for r in sampled]
    return {
        **batch.reward_metrics,
        **batch.revision_metrics,
        "accuracy": _mean(r.verdict.correct for r in sampled),
        "format_rate": _mean(r.verdict.format_ok for r in sampled),
        "partial": _mean(r.verdict.partial for r in sampled),
        "groups/zero_spread": _mean(_spread(g) <= 1e-9 for g in batch.groups),
        "groups/kept": len(batch.groups),
        "response_length/mean": _mean(lengths),
        "response_length/min": min(lengths),
        "response_length/max": max(lengths),
        "truncated_share": _mean(r.truncated for r in sampled),
    }


def record(s: RLSession, step: int, batch: StepBatch, metrics: dict[str, Any], data_position: int,
           last: bool, stopping: bool = False) -> None:
    """Rollouts, validation, metrics and checkpoint of a finished step (`metrics` gains the
    validation figures). `last`: the run ends after this step; `stopping`: it stops early on a
    signal, with metrics and a checkpoint but no extra validation."""
    cfg = s.cfg
    if cfg.save_rollouts and s.world.main:
        _write_rollouts(s.run.path / "rollouts" / f"step_{step:05d}.jsonl", step, batch)
    if cfg.val_every and (step % cfg.val_every == 0 or (last and not stopping)):
        out_file = s.run.path / "eval" / f"val_step_{step:05d}.jsonl" if s.world.main else None
        with fsdp.gathered(s.model):  # FSDP: generation needs the full weights
            metrics.update(validate(s.model, s.tokenizer, s.generator, s.task, s.val_examples, cfg,
                                    preopens_think(s.task), out_file, world=s.world))
        s.model.train()
    if step % cfg.run.log_every == 0 or last or stopping:
        s.run.metrics.write(step, metrics)
    s.run.log.info(_summary(step, cfg.steps, metrics))
    if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last or stopping:
        s.save(step, data_position)
        s.world.barrier()  # every rank sees the checkpoint (the reset triggers look for it)


# ----------------------------------------------------------------------------- validation


def validate(model: Any, tokenizer: Any, generator: Any, task: Any, examples: list[Example], cfg: TrainConfig,
             think_preopened: bool, out_file: Path | None = None, world: World | None = None) -> dict[str, float]:
    """Single-sample accuracy on held-out examples, overall and per bucket (greedy unless
    val_temperature > 0). On N ranks (`world`) each rank generates and verifies its share of the
    examples and every rank gets all of them back (the figures are the whole set's)."""
    if not examples:
        return {}
    world = world or World.single()
    mine = world.share(len(examples))  # one process: all of them
    prompts = [render_prompt(tokenizer, ex.prompt, think_preopened) for ex in examples[mine.start:mine.stop]]
    params = SamplingParams(temperature=cfg.val_temperature, top_p=cfg.val_top_p,
                            max_new_tokens=cfg.val_max_new_tokens or cfg.rollout.max_new_tokens,
                            n=1, stop=list(cfg.rollout.stop), seed=cfg.run.seed, index_offset=mine.start)
    model.eval()
    with torch.no_grad():
        completions = generator.generate(prompts, params) if prompts else []
    verdicts = [safe_verify(task, c.text, examples[mine.start + c.prompt_index]) for c in completions]
    completions, verdicts = gather_completions(world, completions, verdicts, mine.start)
    out = {
        "val/accuracy": _mean(v.correct for v in verdicts),
        "val/format_rate": _mean(v.format_ok for v in verdicts),
        "val/response_length": _mean(len(c.token_ids) for c in completions),
    }
    buckets: dict[str, list[bool]] = {}
    for c, v in zip(completions, verdicts):
        buckets.setdefault(examples[c.prompt_index].bucket, []).append(v.correct)
    for name, values in sorted(buckets.items()):
        out[f"val/bucket/{name}"] = _mean(values)
    if out_file is not None:  # written whole: a resumed run that redoes this step replaces it
        write_jsonl(out_file, [{"id": examples[c.prompt_index].id, "bucket": examples[c.prompt_index].bucket,
                                 "completion": c.text, "num_tokens": len(c.token_ids), **v.to_dict()}
                                for c, v in zip(completions, verdicts)])
    return out


# ----------------------------------------------------------------------------- internals


def by_length(rollouts: list[Rollout]) -> list[Rollout]:
    """The rollouts ordered by completion length, then prompt length, so micro-batches pad little:
    completions pad to their micro-batch's longest, and prompts that repeat in a micro-batch (a
    group's samples) run once each (see `completion_logprobs`). Group and sample index break ties,
    so a set of rollouts always forms the same micro-batches whatever order it comes in (the
    reference pass and the update then round alike)."""
    return sorted(rollouts, key=lambda r: (len(r.completion_ids), len(r.prompt_ids), r.group,
                                           r.completion.sample_index))


def _length_mask(rollouts: list[Rollout]) -> torch.Tensor:
    """(N, C) bool: True on each rollout's completion positions (C = the longest)."""
    lengths = torch.tensor([len(r.completion_ids) for r in rollouts])  # (N,)
    return torch.arange(int(lengths.max()))[None, :] < lengths[:, None]


def _with_loss_masks(mask: torch.Tensor, rollouts: list[Rollout]) -> torch.Tensor:
    """(N, C) `mask` with the rollouts' own loss masks applied (revision template tokens); `mask`
    itself when no rollout has one."""
    if all(r.loss_mask is None for r in rollouts):
        return mask
    mask = mask.clone()
    for i, r in enumerate(rollouts):
        if r.loss_mask is not None:
            mask[i, :r.loss_mask.numel()] &= r.loss_mask.to(mask.device)
    return mask


def _pair_terms(rollouts: list[Rollout], mask: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """((N,) pair advantages, (N, C) bool pair-term tokens) of REA-RL's pair term; (None, None) when no
    rollout has one. mask: (N, C) the completion positions."""
    if all(r.pair_from is None for r in rollouts):
        return None, None
    starts = torch.tensor([r.pair_from if r.pair_from is not None else mask.shape[1] for r in rollouts],
                          device=mask.device)  # (N,)
    positions = torch.arange(mask.shape[1], device=mask.device)  # (C,)
    pair_mask = (positions[None, :] >= starts[:, None]) & mask  # (N, C)
    return torch.tensor([r.pair_advantage for r in rollouts], device=mask.device), pair_mask


def _spread(group: list[Rollout]) -> float:
    return max(r.reward for r in group) - min(r.reward for r in group)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _mean(values: Any) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else 0.0


def _write_rollouts(path: Path, step: int, batch: StepBatch) -> None:
    kept = {id(r) for r in batch.rollouts}
    write_jsonl(path, [{  # whole: a resumed run that redoes this step replaces the file
        "step": step, "id": r.example.id, "bucket": r.example.bucket, "group": r.group, "kept": id(r) in kept,
        "sample": r.completion.sample_index, "completion": r.completion.text,
        "num_tokens": len(r.completion.token_ids), "finish_reason": r.completion.finish_reason,
        "correct": r.verdict.correct, "format_ok": r.verdict.format_ok, "partial": r.verdict.partial,
        "error": r.verdict.error, "reward": r.reward, "rewards": r.components, "advantage": r.advantage,
        **({"kind": r.kind} if r.kind != "sample" else {}),
    } for r in batch.sampled])


def _summary(step: int, total: int, m: dict[str, Any]) -> str:
    parts = [f"step {step}/{total}", f"reward {m.get('reward/total/mean', float('nan')):.3f}",
             f"acc {m['accuracy']:.3f}", f"len {m['response_length/mean']:.0f}",
             f"gen {m['time/generation']:.1f}s", f"update {m['time/update']:.1f}s"]
    if "val/accuracy" in m:
        parts.append(f"val_acc {m['val/accuracy']:.3f}")
    return "  ".join(parts)
