"""RL post-training: GRPO and its published variants in one loop.

What one step does, top to bottom:
  1. take `prompts_per_step` prompts (a seeded permutation of the train split, epoch after epoch);
  2. sample `samples_per_prompt` completions each (the group);
  3. verify every completion with the task and compute the weighted rewards;
  4. (optional) drop groups whose rewards are all equal and sample more prompts (DAPO);
  5. advantages per group from the registered estimator (grpo, dr_grpo, rloo, reinforce_pp);
  6. `num_iterations` passes over the batch, each in `mini_batches` optimizer steps, with the clipped
     policy loss (plus KL to the reference and an entropy bonus when their coefficients are > 0);
  7. metrics, rollouts, validation every `val_every` steps, a checkpoint every `checkpoint_every`.

Variants are settings, not code paths: Dr. GRPO is `algo.advantage=dr_grpo
algo.loss_agg=seq_mean_token_sum_norm`; DAPO is `algo.clip_high=0.28 algo.dynamic_sampling=true
algo.loss_agg=token_mean` with the overlong reward; REINFORCE++ is `algo.advantage=reinforce_pp`.

Run: `aha train recipes/kk_grpo_tiny.yaml [key=value ...]`; continue: `aha train resume=RUN_DIR`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import time
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from aha.config import to_dict
from aha.errors import AhaError
from aha.models import (
    activation_checkpointing,
    active_dropout,
    cache_keyword,
    hf_model,
    output_cache,
    plain_kv_cache,
)
from aha.prompts import render_prompt
from aha.rewards.base import RewardBatch
from aha.rollout.base import Completion, SamplingParams
from aha.runs import RunDir, append_jsonl, progress, read_jsonl
from aha.tasks.base import Example, Verdict, preopens_think, safe_verify
from aha.train.checkpoint import latest_checkpoint, load_training_state, load_weights, save_checkpoint
from aha.train.common import (
    load_policy,
    logprobs_from_logits,
    make_optimizer,
    pad_right,
    token_logprobs,
)
from aha.train.config import TrainConfig

# config keys that may differ between a run and its resumption
_RESUME_FREE_KEYS = {"resume", "allow_config_change", "max_seconds"}
_RESUME_FREE_RUN_KEYS = {"out_dir", "progress"}
# take the old log-probs from the first update pass when that is exact (a switch so a test can compare)
_OLD_FROM_FIRST_PASS = True
# metrics that micro-batches contribute as shares of their mini-batch's value
_ADDITIVE = ("loss", "pg_loss")


# ----------------------------------------------------------------------------- small helpers


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


def completion_logprobs(model: Any, prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                        temperature: float, with_entropy: bool = False, entropy_grad: bool = False,
                        share_prompts: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per-token log-probs of each completion given its prompt.

    prompts, completions: B lists of token ids (completion lengths c_i >= 1).
    Returns logprobs (B, C) with C = max c_i, entropy (B, C) or None, and mask (B, C) (True on real tokens).

    When rows share prompts (a GRPO group's samples) and `share_prompts` is on, each distinct prompt
    is run once and its key/value cache is reused by every row that has it, gradients included; the
    numbers are those of running each row whole, up to float rounding. Rows are run whole instead
    when that would not hold or not work: a model whose cache is not plain full attention (sliding
    windows, linear attention), active dropout (one draw would be shared by a group), or activation
    checkpointing in a forward with gradients (transformers then drops the cache).
    """
    device = next(model.parameters()).device
    width = max(len(c) for c in completions)
    lengths = torch.tensor([len(c) for c in completions], device=device)
    mask = torch.arange(width, device=device)[None, :] < lengths[:, None]  # (B, C)
    distinct: dict[tuple[int, ...], int] = {}
    row_prompt = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
    if share_prompts and len(distinct) < len(prompts) and _can_share_prompts(model):
        logits, targets = _shared_prompt_logits(model, list(distinct), row_prompt, completions, pad_id, device)
        out, ent = logprobs_from_logits(logits, targets, temperature, with_entropy, entropy_grad)  # (B, C) each
        return out * mask, (ent * mask if ent is not None else None), mask
    seqs = [p + c for p, c in zip(prompts, completions)]
    ids, attn = pad_right(seqs, pad_id, device)  # (B, L)
    start = min(len(p) for p in prompts) - 1
    lp, ent = token_logprobs(model, ids, attn, start, temperature, with_entropy, entropy_grad)  # (B, L-1-start)
    offsets = torch.tensor([len(p) - 1 - start for p in prompts], device=device)  # (B,)
    index = offsets[:, None] + torch.arange(width, device=device)[None, :]  # (B, C)
    index = index.clamp(max=lp.shape[1] - 1)
    out = lp.gather(1, index) * mask  # (B, C)
    out_ent = ent.gather(1, index) * mask if ent is not None else None
    return out, out_ent, mask


def _can_share_prompts(model: Any) -> bool:
    """Whether a prompt's cache may serve several rows exactly (see `completion_logprobs`)."""
    if activation_checkpointing(model) and model.training and torch.is_grad_enabled():
        return False
    return plain_kv_cache(model) and not active_dropout(model)


def _shared_prompt_logits(model: Any, distinct: list[tuple[int, ...]], row_prompt: list[int],
                          completions: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits (B, C, V) for every completion token, and the targets (B, C).

    distinct: the U distinct prompts; row_prompt: B indices into them. The U prompts go through
    the model once (right-padded: causal attention keeps real tokens off the pads), their cache is
    expanded to the B rows, then the completions run on top of it with the prompt pads masked."""
    from transformers import DynamicCache

    p_ids, p_attn = pad_right([list(p) for p in distinct], pad_id, device)  # (U, Lp)
    p_len = p_attn.sum(1)  # (U,)
    U, Lp = p_ids.shape
    if U * Lp * _vocab_size(model) <= _FULL_PROMPT_LOGITS:
        prompt_out = model(input_ids=p_ids, use_cache=True)  # (U, Lp, V) logits: small, one plain matmul
        first = prompt_out.logits[torch.arange(U, device=device), p_len - 1]  # (U, V): predicts token 0
    else:
        # only each prompt's last position predicts a completion token; projecting every prompt
        # position would cost U x Lp x V floats and as much again for their gradient
        last, slot = torch.unique(p_len - 1, return_inverse=True)  # (K,), (U,)
        prompt_out = model(input_ids=p_ids, use_cache=True, logits_to_keep=last)
        first = prompt_out.logits[torch.arange(U, device=device), slot]  # (U, V)
    rows = torch.tensor(row_prompt, device=device)  # (B,)
    cache = DynamicCache()
    for layer, kv in enumerate(output_cache(prompt_out).layers):
        cache.update(kv.keys.index_select(0, rows), kv.values.index_select(0, rows), layer)  # (B, kvh, Lp, d)
    c_ids, c_attn = pad_right(completions, pad_id, device)  # (B, C)
    positions = p_len.index_select(0, rows)[:, None] + torch.arange(c_ids.shape[1], device=device)[None, :]  # (B, C)
    attn = torch.cat([p_attn.index_select(0, rows), c_attn], dim=1)  # (B, Lp + C)
    out = model(input_ids=c_ids, attention_mask=attn, position_ids=positions, use_cache=True,
                **{cache_keyword(model): cache})
    logits = torch.cat([first.index_select(0, rows)[:, None, :], out.logits[:, :-1, :]], dim=1)  # (B, C, V)
    return logits, c_ids


_FULL_PROMPT_LOGITS = 1 << 22  # prompt logits (U x Lp x V floats, 16 MiB in fp32) projected in full


def _vocab_size(model: Any) -> int:
    return int(hf_model(model).config.vocab_size)


def pad_rows(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Stack 1-D tensors into (B, width), zero-padded on the right."""
    out = torch.zeros((len(rows), width), dtype=rows[0].dtype, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


@dataclasses.dataclass
class Rollout:
    """One completion in the training batch."""

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


# ----------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig) -> Path:
    """Run RL training as configured; returns the run directory."""
    from aha.algo.advantages import ADVANTAGES
    from aha.algo.kl import kl_estimate
    from aha.algo.losses import policy_loss
    from aha.rewards.compose import RewardComposer
    from aha.rollout import get_generator
    from aha.tasks import get_task

    # ---------------------------------------------------------------- set-up (cheap checks first)
    composer = RewardComposer(cfg.rewards, policy_path=cfg.model.path)  # bad reward names/options fail here
    estimator = ADVANTAGES.get(cfg.algo.advantage)
    resume_from = Path(cfg.resume) if cfg.resume else None
    if resume_from is not None:
        _check_resume_config(cfg, resume_from)
    task = get_task(cfg.task.name, **cfg.task.options)
    train_examples = list(task.examples(cfg.task.train_split))
    if not train_examples:
        raise AhaError(f"task {cfg.task.name!r} has no examples in split {cfg.task.train_split!r}")
    val_examples = list(islice(task.examples(cfg.task.val_split), cfg.val_size)) if cfg.val_every else []
    think_preopened = preopens_think(task)

    run = RunDir.create(resume_from or cfg.run.out_dir or None, "train", resume=resume_from is not None,
                        tensorboard=cfg.run.tensorboard, wandb_project=cfg.run.wandb_project)
    if resume_from is None:
        run.write_config(cfg)
    log = run.log
    seed_everything(cfg.run.seed)
    model, tokenizer = load_policy(cfg.model, cfg.lora)
    pad_id = tokenizer.pad_token_id
    reference = None
    if cfg.algo.kl_coef > 0 and not cfg.lora.enabled:
        reference = copy.deepcopy(model).eval().requires_grad_(False)  # frozen copy for full fine-tuning
    generator = get_generator(cfg.rollout.backend, model, tokenizer)
    prompt_cache: dict[str, list[int]] = {}

    def prompt_ids(ex: Example) -> list[int]:
        if ex.id not in prompt_cache:
            prompt_cache[ex.id] = render_prompt(tokenizer, ex.prompt, think_preopened)
        return prompt_cache[ex.id]

    updates_per_step = cfg.algo.num_iterations * cfg.batch.mini_batches
    optimizer, scheduler = make_optimizer(
        model, cfg.optim.lr, cfg.optim.weight_decay, (cfg.optim.beta1, cfg.optim.beta2), cfg.optim.schedule,
        cfg.optim.warmup_steps, cfg.steps * updates_per_step, cfg.optim.min_lr_ratio)

    start_step, data_position = 0, 0
    if resume_from is not None:
        ckpt = latest_checkpoint(resume_from)
        load_weights(model, ckpt / "model")
        state = load_training_state(ckpt, optimizer, scheduler)
        start_step, data_position = state["step"], state["data_position"]
        composer.load_state_dict(state.get("rewards", {}))
        _truncate_metrics(run.path / "metrics.jsonl", start_step)
        log.info(f"resumed from {ckpt} at step {start_step}")
    log.info(f"run directory: {run.path}")
    log.info(f"{len(train_examples)} train prompts, {len(val_examples)} validation prompts; "
             f"{cfg.batch.prompts_per_step} prompts x {cfg.batch.samples_per_prompt} samples per step")

    def sampling(step: int, round_: int, n: int) -> SamplingParams:
        r = cfg.rollout
        return SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                              max_new_tokens=r.max_new_tokens, n=n, stop=list(r.stop),
                              seed=step_seed(cfg.run.seed, step, round_))

    def checkpoint(step: int) -> None:
        save_checkpoint(run.path, step, model, tokenizer, optimizer, scheduler,
                        {"data_position": data_position, "rewards": composer.state_dict()},
                        keep=cfg.keep_checkpoints)

    step = start_step
    loop_start = time.time()
    try:
        with progress(cfg.steps - start_step, "train", cfg.run.progress) as bar:
            for step in range(start_step + 1, cfg.steps + 1):
                t0 = time.time()
                position_at_step_start = data_position
                G = cfg.batch.samples_per_prompt
                # ------------------------------------------------ 1-4. sample, verify, reward
                kept: list[list[Rollout]] = []
                gen_seconds, score_seconds, gen_tokens = 0.0, 0.0, 0
                reward_metrics: dict[str, float] = {}
                all_rollouts: list[Rollout] = []
                rounds = 1 + (cfg.algo.max_resample_rounds if cfg.algo.dynamic_sampling else 0)
                for round_ in range(rounds):
                    need = cfg.batch.prompts_per_step - len(kept)
                    examples = [example_at(train_examples, data_position + i, cfg.run.seed) for i in range(need)]
                    data_position += need
                    prompts = [prompt_ids(ex) for ex in examples]
                    tg = time.time()
                    model.eval()
                    with torch.no_grad():
                        completions = generator.generate(prompts, sampling(step, round_, G))
                    model.train()
                    gen_seconds += time.time() - tg
                    gen_tokens += sum(len(c.token_ids) for c in completions)
                    ts = time.time()
                    groups = [[Rollout(examples[c.prompt_index], len(kept) + c.prompt_index, prompts[c.prompt_index],
                                       c, safe_verify(task, c.text, examples[c.prompt_index]))
                               for c in completions[i * G:(i + 1) * G]] for i in range(need)]
                    flat = [r for g in groups for r in g]
                    batch = RewardBatch(
                        completions=[r.completion.text for r in flat], examples=[r.example for r in flat],
                        verdicts=[r.verdict for r in flat], num_tokens=[len(r.completion.token_ids) for r in flat],
                        group_ids=[r.group for r in flat], truncated=[r.completion.finish_reason == "length"
                                                                     for r in flat],
                        max_new_tokens=cfg.rollout.max_new_tokens)
                    totals, components, reward_metrics = composer(batch)
                    for i, r in enumerate(flat):
                        r.reward = totals[i]
                        r.components = {name: values[i] for name, values in components.items()}
                    score_seconds += time.time() - ts
                    all_rollouts.extend(flat)
                    for g in groups:
                        spread = max(r.reward for r in g) - min(r.reward for r in g)
                        if not cfg.algo.dynamic_sampling or spread > 1e-9 or round_ == rounds - 1:
                            kept.append(g)
                    kept = kept[: cfg.batch.prompts_per_step]
                    if len(kept) >= cfg.batch.prompts_per_step:
                        break
                for gi, g in enumerate(kept):
                    for r in g:
                        r.group = gi
                rollouts = [r for g in kept for r in g]
                P = len(kept)

                # ------------------------------------------------ old and reference log-probs
                tu = time.time()
                need_ref = cfg.algo.kl_coef > 0
                # stored old log-probs: for the ratio when mu > 1, and for the KL when it goes into the reward
                need_old = cfg.algo.num_iterations > 1 or (need_ref and cfg.algo.kl_in_reward)
                # with one mini-batch, the first update pass runs on the sampling weights, so its
                # log-probs are the old ones: take them there instead of in a separate forward
                old_from_first_pass = (_OLD_FROM_FIRST_PASS and need_old and cfg.batch.mini_batches == 1
                                       and not (need_ref and cfg.algo.kl_in_reward))
                if (need_old and not old_from_first_pass) or need_ref:
                    with torch.no_grad():
                        for mb in _chunks(_by_length(rollouts), cfg.batch.micro_batch_size):
                            args = ([r.prompt_ids for r in mb], [_completion_ids(r) for r in mb], pad_id,
                                    cfg.rollout.temperature)
                            if need_old and not old_from_first_pass:
                                lp, _, mask = completion_logprobs(model, *args)
                                for r, row, m in zip(mb, lp, mask):
                                    r.old_logprobs = row[m].detach()
                            if need_ref:
                                lp, _, mask = _reference_logprobs(model, reference, cfg.lora.enabled, args)
                                for r, row, m in zip(mb, lp, mask):
                                    r.ref_logprobs = row[m].detach()

                # ------------------------------------------------ 5. advantages
                rewards = torch.tensor([[r.reward for r in g] for g in kept], dtype=torch.float32)  # (P, G)
                kl_reward_mean = 0.0
                if need_ref and cfg.algo.kl_in_reward:
                    # sequence KL (sum over tokens) under the sampling policy, subtracted from the reward
                    seq_kl = torch.tensor([[float(kl_estimate(r.old_logprobs, r.ref_logprobs,
                                                              cfg.algo.kl_estimator).sum())
                                            for r in g] for g in kept])  # (P, G)
                    rewards = rewards - cfg.algo.kl_coef * seq_kl
                    kl_reward_mean = float(seq_kl.mean())
                valid = torch.ones_like(rewards, dtype=torch.bool)  # (P, G)
                advantages = estimator(rewards, valid, **cfg.algo.advantage_options)  # (P, G)
                for gi, g in enumerate(kept):
                    for j, r in enumerate(g):
                        r.advantage = float(advantages[gi, j])

                # ------------------------------------------------ 6. policy update
                loss_sums: dict[str, float] = {}
                n_micro, n_mini, grad_norms = 0, 0, []
                order_gen = torch.Generator().manual_seed(step_seed(cfg.run.seed, step, 99))
                mini_size = math.ceil(len(rollouts) / cfg.batch.mini_batches)
                for iteration in range(cfg.algo.num_iterations):
                    order = torch.randperm(len(rollouts), generator=order_gen).tolist()
                    for mb_start in range(0, len(rollouts), mini_size):
                        # micro-batches of similar lengths pad less and share prompts
                        # (benchmarks/grpo_update.py); the loss divisors are the whole mini-batch's,
                        # so how it is split into micro-batches does not change the gradient
                        mini = _by_length([rollouts[i] for i in order[mb_start:mb_start + mini_size]])
                        counts = [0 if cfg.algo.mask_truncated and r.completion.finish_reason == "length"
                                  else len(_completion_ids(r)) for r in mini]
                        batch_tokens = float(sum(counts))
                        batch_rows = float(len(mini) if cfg.algo.loss_agg == "seq_mean_token_sum_norm"
                                           else sum(c > 0 for c in counts))
                        n_mini += 1
                        optimizer.zero_grad(set_to_none=True)
                        for micro in _chunks(mini, cfg.batch.micro_batch_size):
                            comp = [_completion_ids(r) for r in micro]
                            lp, ent, mask = completion_logprobs(
                                model, [r.prompt_ids for r in micro], comp, pad_id, cfg.rollout.temperature,
                                with_entropy=True, entropy_grad=cfg.algo.entropy_coef > 0)  # (B, C) each
                            width = lp.shape[1]
                            if need_old and not (old_from_first_pass and iteration == 0):
                                old = pad_rows([r.old_logprobs for r in micro], width)
                            else:
                                old = lp.detach()
                                if old_from_first_pass:
                                    for r, row, m in zip(micro, old, mask):
                                        r.old_logprobs = row[m]
                            ref = None
                            if need_ref and not cfg.algo.kl_in_reward:
                                ref = pad_rows([r.ref_logprobs for r in micro], width)
                            loss_mask = mask.clone()
                            if cfg.algo.mask_truncated:
                                for i, r in enumerate(micro):
                                    if r.completion.finish_reason == "length":
                                        loss_mask[i] = False
                            adv = torch.tensor([r.advantage for r in micro], device=lp.device)  # (B,)
                            loss, metrics = policy_loss(
                                lp, old, adv, loss_mask, clip_low=cfg.algo.clip_low, clip_high=cfg.algo.clip_high,
                                agg=cfg.algo.loss_agg, norm_constant=cfg.rollout.max_new_tokens,
                                ref_logprobs=ref, kl_coef=cfg.algo.kl_coef if ref is not None else 0.0,
                                kl_estimator=cfg.algo.kl_estimator, entropy=ent, entropy_coef=cfg.algo.entropy_coef,
                                batch_tokens=batch_tokens, batch_rows=batch_rows)
                            loss.backward()  # this micro-batch's share of the mini-batch loss
                            n_micro += 1
                            for k, v in metrics.items():
                                loss_sums[k] = loss_sums.get(k, 0.0) + float(v)
                            loss_sums["loss"] = loss_sums.get("loss", 0.0) + float(loss.detach())
                        if cfg.optim.max_grad_norm > 0:
                            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                        else:
                            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
                        grad_norms.append(float(norm))
                        optimizer.step()
                        scheduler.step()
                update_seconds = time.time() - tu

                # ------------------------------------------------ 7. metrics, rollouts, validation, checkpoint
                lengths = [len(r.completion.token_ids) for r in all_rollouts]
                spreads = [max(r.reward for r in g) - min(r.reward for r in g) for g in kept]
                metrics = {
                    **reward_metrics,
                    "accuracy": _mean(r.verdict.correct for r in all_rollouts),
                    "format_rate": _mean(r.verdict.format_ok for r in all_rollouts),
                    "partial": _mean(r.verdict.partial for r in all_rollouts),
                    "groups/zero_spread": _mean(s <= 1e-9 for s in spreads),
                    "groups/kept": P,
                    "response_length/mean": _mean(lengths),
                    "response_length/min": min(lengths),
                    "response_length/max": max(lengths),
                    "truncated_share": _mean(r.completion.finish_reason == "length" for r in all_rollouts),
                    # loss and pg_loss are shares that add up per mini-batch; the rest are per micro-batch
                    **{k: v / max(n_mini if k in _ADDITIVE else n_micro, 1) for k, v in loss_sums.items()},
                    "grad_norm": _mean(grad_norms),
                    "lr": scheduler.get_last_lr()[0],
                    "time/generation": gen_seconds,
                    "time/scoring": score_seconds,
                    "time/update": update_seconds,
                    "time/step": time.time() - t0,
                    "tokens_per_s": gen_tokens / max(gen_seconds, 1e-9),
                }
                if need_ref and cfg.algo.kl_in_reward:
                    metrics["kl_in_reward"] = kl_reward_mean
                if cfg.save_rollouts:
                    _write_rollouts(run.path / "rollouts" / f"step_{step:05d}.jsonl", step, all_rollouts)
                out_of_time = bool(cfg.max_seconds) and time.time() - loop_start >= cfg.max_seconds
                last = step == cfg.steps or out_of_time
                if cfg.val_every and (step % cfg.val_every == 0 or last):
                    metrics.update(validate(model, tokenizer, generator, task, val_examples, cfg, think_preopened,
                                            run.path / "eval" / f"val_step_{step:05d}.jsonl"))
                    model.train()
                if step % cfg.run.log_every == 0 or last:
                    run.metrics.write(step, metrics)
                log.info(_summary(step, cfg.steps, metrics))
                bar.update(1, reward=metrics.get("reward/total/mean", float("nan")), acc=metrics["accuracy"])
                if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last:
                    checkpoint(step)
                if out_of_time:
                    log.info(f"time budget of {cfg.max_seconds:.0f}s reached after step {step}")
                    break
    except KeyboardInterrupt:
        done = step - 1 if step > start_step else start_step
        if done > start_step:
            log.info(f"interrupted: saving a checkpoint at step {done}")
            # resume redoes the interrupted step with the same prompts (an optimizer step it had
            # already taken stays in the weights)
            data_position = position_at_step_start
            checkpoint(done)
        raise
    run.metrics.close()
    model.save_pretrained(str(run.path / "model"))
    tokenizer.save_pretrained(str(run.path / "model"))
    log.info(f"done: {run.path} (model in {run.path / 'model'})")
    return run.path


# ----------------------------------------------------------------------------- validation


def validate(model: Any, tokenizer: Any, generator: Any, task: Any, examples: list[Example], cfg: TrainConfig,
             think_preopened: bool, out_file: Path | None = None) -> dict[str, float]:
    """Greedy single-sample accuracy on held-out examples, overall and per bucket."""
    if not examples:
        return {}
    prompts = [render_prompt(tokenizer, ex.prompt, think_preopened) for ex in examples]
    params = SamplingParams(temperature=0.0, max_new_tokens=cfg.val_max_new_tokens or cfg.rollout.max_new_tokens,
                            n=1, stop=list(cfg.rollout.stop), seed=cfg.run.seed)
    model.eval()
    with torch.no_grad():
        completions = generator.generate(prompts, params)
    verdicts = [safe_verify(task, c.text, examples[c.prompt_index]) for c in completions]
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
    if out_file is not None:
        append_jsonl(out_file, [{"id": examples[c.prompt_index].id, "bucket": examples[c.prompt_index].bucket,
                                 "completion": c.text, "num_tokens": len(c.token_ids), **v.to_dict()}
                                for c, v in zip(completions, verdicts)])
    return out


# ----------------------------------------------------------------------------- internals


def _completion_ids(r: Rollout) -> list[int]:
    ids = r.completion.token_ids
    return ids if ids else [r.prompt_ids[-1]]  # an empty completion still needs one position


def _by_length(rollouts: list[Rollout]) -> list[Rollout]:
    """The rollouts ordered by completion length, then prompt length, so micro-batches pad little:
    completions pad to their micro-batch's longest, and prompts that repeat in a micro-batch (a
    group's samples) run once each (see `completion_logprobs`). Group and sample index break ties,
    so a set of rollouts always forms the same micro-batches whatever order it comes in (the
    reference pass and the update then round alike)."""
    return sorted(rollouts, key=lambda r: (len(_completion_ids(r)), len(r.prompt_ids), r.group,
                                           r.completion.sample_index))


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _mean(values: Any) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else 0.0


def _reference_logprobs(model: Any, reference: Any, lora: bool, args: tuple) -> tuple:
    if lora:
        with model.disable_adapter():
            return completion_logprobs(model, *args)
    return completion_logprobs(reference, *args)


def _write_rollouts(path: Path, step: int, rollouts: list[Rollout]) -> None:
    if path.exists():
        path.unlink()  # a resumed run rewrites the steps after its checkpoint
    append_jsonl(path, [{
        "step": step, "id": r.example.id, "bucket": r.example.bucket, "group": r.group,
        "sample": r.completion.sample_index, "completion": r.completion.text,
        "num_tokens": len(r.completion.token_ids), "finish_reason": r.completion.finish_reason,
        "correct": r.verdict.correct, "format_ok": r.verdict.format_ok, "partial": r.verdict.partial,
        "error": r.verdict.error, "reward": r.reward, "rewards": r.components, "advantage": r.advantage,
    } for r in rollouts])


def _summary(step: int, total: int, m: dict[str, Any]) -> str:
    parts = [f"step {step}/{total}", f"reward {m.get('reward/total/mean', float('nan')):.3f}",
             f"acc {m['accuracy']:.3f}", f"len {m['response_length/mean']:.0f}",
             f"gen {m['time/generation']:.1f}s", f"update {m['time/update']:.1f}s"]
    if "val/accuracy" in m:
        parts.append(f"val_acc {m['val/accuracy']:.3f}")
    return "  ".join(parts)


def _check_resume_config(cfg: TrainConfig, run_dir: Path) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise AhaError(f"{run_dir} has no config.yaml: is it an aha train run directory?")
    saved = yaml.safe_load(saved_path.read_text())
    current = json.loads(json.dumps(to_dict(cfg)))
    for d in (saved, current):
        for k in _RESUME_FREE_KEYS:
            d.pop(k, None)
        for k in _RESUME_FREE_RUN_KEYS:
            d.get("run", {}).pop(k, None)
    if saved != current and not cfg.allow_config_change:
        diffs = sorted(_diff_keys(saved, current))
        raise AhaError(f"the config differs from {saved_path} at {', '.join(diffs[:5])}; "
                       "resume with the run's own recipe, or pass allow_config_change=true")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics lines written after the checkpoint we resume from (those steps are redone)."""
    if not path.is_file():
        return
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
