"""Supervised fine-tuning on (prompt messages, response) pairs, loss on the response tokens only.

Data comes from data files (JSONL, JSON, CSV, Parquet, Arrow; `{"messages": [...]}` whose last turn is the assistant's, or
`{"prompt": [...messages] | str, "response": str}`) or from a task's teacher traces
(`meta["trace"]`, e.g. the Knights-and-Knaves solver). Each example is rendered as the chat prompt
(with the assistant turn opened) followed by the response and the end-of-turn token; the loss
covers the response and end-of-turn tokens only.

Batches are built by token budget: examples are sorted by length inside shuffled windows and
packed into batches of at most `batch_tokens` tokens including padding, so short examples do not
pay for long ones. The optimizer and its schedule are `aha train`'s (the `optim` section,
`make_optimizer`: AdamW, linear warmup, then constant or cosine over `steps`), with SFT's own
defaults. The schedule follows optimizer steps only, so a run's learning rates do not depend on how
busy the machine is; `max_seconds` only stops the run early (the schedule then ends before its floor).

Run: `aha sft recipes/kk_sft_nano.yaml [key=value ...]`; the trained model is written to
RUN_DIR/model as a standalone Hugging Face folder (or a LoRA adapter folder).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from aha.config import LoraConfig, ModelConfig, RunConfig, option, section
from aha.errors import AhaError
from aha.prompts import render_prompt
from aha.runs import RunDir, progress, truncate_metrics
from aha.tasks.base import preopens_think
from aha.tasks.datafiles import read_rows
from aha.train import fsdp
from aha.train.checkpoint import list_checkpoints, restore_latest, save_checkpoint
from aha.train.common import check_resume_config, load_policy, make_optimizer
from aha.train.config import OptimConfig
from aha.train.distributed import World, init_world, open_run
from aha.train.stopping import GracefulStop

# config keys that may differ between a run and its resumption
_RESUME_FREE_KEYS = ("resume", "allow_config_change", "max_seconds", "parallel")
_RESUME_FREE_RUN_KEYS = ("out_dir", "progress")
# the optimizer keys that moved into the `optim` section
_OPTIM_KEYS = ("lr", "warmup_steps", "schedule", "min_lr_ratio", "weight_decay", "beta1", "beta2", "max_grad_norm")


@dataclass
class SftDataConfig:
    """Where the training pairs come from."""

    files: list[str] = option([], "data files of {messages: [...]} or {prompt, response} records: JSONL, "
                              "JSON, CSV (prompt and response columns), Parquet, Arrow, or saved dataset folders")
    task: str = option("", "alternatively a task whose examples carry teacher traces in meta.trace")
    task_options: dict[str, Any] = option({}, "keyword options of that task (e.g. {people: '2-3', count: 20000})")
    val_files: list[str] = option([], "held-out data files (as data.files) for validation loss (default: a split "
                                  "of the data)")
    val_fraction: float = option(0.02, "share of the data held out for validation when no val_files", min=0.0,
                                 max=0.5)
    max_length: int = option(2048, "drop examples longer than this many tokens", min=8)


@dataclass
class SftConfig:
    """`aha sft RECIPE [key=value ...]`: supervised fine-tuning."""

    model: ModelConfig = section(ModelConfig, "model to fine-tune")
    lora: LoraConfig = section(LoraConfig, "LoRA adapter")
    data: SftDataConfig = section(SftDataConfig, "training data")
    run: RunConfig = section(RunConfig, "run directory and logging")
    optim: OptimConfig = section(OptimConfig, "AdamW and its schedule (the schedule spans `steps`)", lr=1e-3,
                                 warmup_steps=50, schedule="cosine", min_lr_ratio=0.1, beta2=0.98)
    batch_tokens: int = option(8192, "tokens per batch, padding included", min=16)
    steps: int = option(1000, "optimizer steps at most; the learning-rate schedule spans them", min=1)
    epochs: int = option(0, "train this many full passes over the data instead (> 0 replaces `steps`: the run "
                         "takes as many steps as the epochs' batches, and the schedule spans them; seed 000: 4)",
                         min=0)
    max_seconds: float = option(0.0, "stop after this much wall time (0 = no limit); a guard, the schedule "
                                "does not follow it", min=0.0)
    val_every: int = option(100, "validation loss every N steps (and at the end); 0 is off", min=0)
    checkpoint_every: int = option(0, "resumable checkpoint every N steps (and at the end); 0 = end only", min=0)
    keep_checkpoints: int = option(2, "keep the newest N checkpoints", min=1)
    resume: str = option("", "run directory to continue from its newest checkpoint")
    allow_config_change: bool = option(False, "resume even if the config differs from the run's config.yaml")
    parallel: str = option("ddp", "on N processes (torchrun): 'ddp' keeps a full replica per process; 'fsdp' "
                           "shards weights, gradients and AdamW state (FSDP2 full shard); 'fsdp_shard_grad_op' "
                           "keeps a block's weights gathered from forward to backward. accelerate's FSDP config "
                           "selects fsdp by itself; one process ignores it", choices=["ddp", "fsdp",
                                                                                   "fsdp_shard_grad_op"])

    RENAMED: ClassVar[dict[str, str]] = {key: f"optim.{key}" for key in _OPTIM_KEYS}

    def validate(self) -> None:
        if not self.data.files and not self.data.task:
            raise ValueError("no data: set data.files to data files or data.task to a task with traces")
        if self.data.task and not self.data.files:
            from aha.train.config import check_task_options

            check_task_options(self.data.task, self.data.task_options, "data.task_options")


# ----------------------------------------------------------------------------- data


def read_pairs(path: str | Path) -> list[tuple[list[dict[str, str]], str]]:
    """(prompt messages, response) pairs from a data file (JSONL, JSON, CSV, Parquet, Arrow or a saved
    dataset folder; see `aha.tasks.datafiles.read_rows`). A record is `{messages: [..., assistant]}`
    or `{prompt, response}` (a CSV has `prompt` and `response` columns); bad records name the file,
    the line (or record) and the field."""
    path = Path(path)
    if not path.exists():
        raise AhaError(f"SFT data file {str(path)!r} does not exist")
    pairs = []
    for row in read_rows(path):
        rec, where = row.data, row.where
        if "messages" in rec:
            msgs = rec["messages"]
            if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict) \
                    or msgs[-1].get("role") != "assistant":
                raise AhaError(f"{where}: field 'messages' must be a list ending with an assistant turn")
            _check_messages(msgs, where, "messages")
            pairs.append((msgs[:-1], msgs[-1]["content"]))
        elif "prompt" in rec and "response" in rec:
            prompt = rec["prompt"]
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            if not isinstance(prompt, list) or not prompt:
                raise AhaError(f"{where}: field 'prompt' must be a string or a non-empty list of messages")
            _check_messages(prompt, where, "prompt")
            if not isinstance(rec["response"], str):
                raise AhaError(f"{where}: field 'response' must be a string, got "
                               f"{_json_type(rec['response'])}; drop the record or give the response text")
            pairs.append((prompt, rec["response"]))
        else:
            raise AhaError(f"{where}: needs field 'messages' or fields 'prompt' and 'response'")
    return pairs


def _json_type(value: Any) -> str:
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _check_messages(msgs: list[Any], where: str, field: str) -> None:
    """Every message is {"role": str, "content": str}; `where` is "FILE, line N" for the errors."""
    for j, msg in enumerate(msgs):
        if not isinstance(msg, dict):
            raise AhaError(f"{where}: {field}[{j}] must be an object with 'role' and 'content', "
                           f"got {_json_type(msg)}")
        for key in ("role", "content"):
            if not isinstance(msg.get(key), str):
                got = "nothing" if key not in msg else _json_type(msg[key])
                raise AhaError(f"{where}: {field}[{j}].{key} must be a string, got {got}")


def encode_pair(tokenizer: Any, prompt: list[dict[str, str]], response: str, think_preopened: bool = False
                ) -> tuple[list[int], int]:
    """(token ids, number of prompt tokens): prompt + response + end-of-turn token."""
    prompt_ids = render_prompt(tokenizer, prompt, think_preopened)
    if think_preopened and response.lstrip().startswith("<think>"):
        response = response.lstrip()[len("<think>"):]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + response_ids, len(prompt_ids)


def token_budget_batches(lengths: list[int], batch_tokens: int, seed: int, epoch: int,
                         window: int = 64) -> list[list[int]]:
    """Index batches whose padded size (rows x longest) stays within `batch_tokens`.

    Examples are shuffled (seeded by epoch), sorted by length inside windows of `window` batches'
    worth, then cut greedily; the batch order is shuffled again so lengths do not trend.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    chunk = max(1, window * max(1, batch_tokens // max(1, int(np.mean(lengths)))))
    batches: list[list[int]] = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s:s + chunk], key=lambda i: lengths[i])
        current: list[int] = []
        longest = 0
        for i in part:
            new_longest = max(longest, lengths[i])
            if current and new_longest * (len(current) + 1) > batch_tokens:
                batches.append(current)
                current, new_longest = [], lengths[i]
            current.append(i)
            longest = new_longest
        if current:
            batches.append(current)
    perm = rng.permutation(len(batches)).tolist()
    return [batches[i] for i in perm]


def collate(encoded: list[tuple[list[int], int]], pad_id: int, device: Any
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids (B, L), attention mask (B, L), labels (B, L) with -100 outside the response)."""
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(encoded):
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        labels[i, n_prompt: len(seq)] = torch.tensor(seq[n_prompt:])
    return ids.to(device), attn.to(device), labels.to(device)


def response_loss(model: Any, ids: torch.Tensor, attn: torch.Tensor, labels: torch.Tensor
                  ) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over response tokens, and their count."""
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1]  # (B, L-1, V)
    targets = labels[:, 1:]  # (B, L-1)
    n = int((targets != -100).sum())
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)
    return loss, n


def backward_rank_share(world: World, model: Any, rows: list[tuple[list[int], int]], pad_id: int, device: Any,
                        lockstep: bool = False) -> tuple[float, int, int]:
    """On N ranks: backpropagate this rank's contiguous share of a batch's rows, its summed response-token
    cross-entropy divided by the whole batch's response-token count (summed over the ranks), so the
    gradients summed over the ranks are the whole batch's mean-loss gradient. Returns (the batch's
    loss, its response tokens, its tokens with padding), the same on every rank. A rank whose share is
    empty (a batch of fewer rows than ranks) backpropagates nothing; with `lockstep` (FSDP, where every
    forward and backward is a collective) it backpropagates the batch's first row times 0 instead."""
    mine = [rows[i] for i in world.share(len(rows))]
    n, padded, value = 0, 0, 0.0
    if mine:
        ids, attn, labels = collate(mine, pad_id, device)  # (B, L) each
        n, padded = int((labels[:, 1:] != -100).sum()), int(attn.sum())
    total, padded_total = world.sum([n, padded])
    if not mine and lockstep:
        ids, attn, labels = collate(rows[:1], pad_id, device)  # (1, L) each: a zero-gradient stand-in
    if mine or lockstep:
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1]  # (B, L-1, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                               ignore_index=-100, reduction="sum") / max(total, 1.0)
        if not mine:
            loss = loss * 0.0
        loss.backward()
        value = float(loss.detach())
    return world.sum([value])[0], int(total), int(padded_total)


PairSet = tuple[list[tuple[list[dict[str, str]], str]], list[tuple[list[dict[str, str]], str]], bool]


def read_sft_pairs(cfg: SftConfig) -> PairSet:
    """(train pairs, validation pairs from data.val_files, think_preopened): every data file read and
    checked, before any model loads."""
    think_preopened = False
    if cfg.data.files:
        pairs = [p for f in cfg.data.files for p in read_pairs(f)]
    else:
        from aha.tasks import get_task

        task = get_task(cfg.data.task, **cfg.data.task_options)
        think_preopened = preopens_think(task)
        pairs = []
        for ex in task.examples("train"):
            trace = ex.meta.get("trace")
            if trace is None:
                raise AhaError(f"task {cfg.data.task!r} gives no teacher trace (meta.trace) for example {ex.id}")
            pairs.append((ex.prompt, str(trace)))
    if not pairs:
        raise AhaError("the SFT data is empty")
    val_pairs = [p for f in cfg.data.val_files for p in read_pairs(f)]
    return pairs, val_pairs, think_preopened


def load_sft_data(cfg: SftConfig, tokenizer: Any, pairs: PairSet | None = None
                  ) -> tuple[list[tuple[list[int], int]], list[tuple[list[int], int]]]:
    """Encoded (train, validation) examples (`pairs`: what `read_sft_pairs` returned, read now if None)."""
    train_pairs, val_pairs, think_preopened = pairs if pairs is not None else read_sft_pairs(cfg)
    encoded = [encode_pair(tokenizer, p, r, think_preopened) for p, r in train_pairs]
    encoded = [e for e in encoded if len(e[0]) <= cfg.data.max_length]
    if cfg.data.val_files:
        return encoded, [encode_pair(tokenizer, p, r, think_preopened) for p, r in val_pairs]
    rng = np.random.default_rng(cfg.run.seed)
    order = rng.permutation(len(encoded)).tolist()
    n_val = int(len(encoded) * cfg.data.val_fraction) if cfg.val_every else 0
    val = [encoded[i] for i in order[:n_val]]
    train_set = [encoded[i] for i in sorted(order[n_val:])]
    if not train_set:
        raise AhaError("no SFT examples left for training after the validation split")
    return train_set, val


# ----------------------------------------------------------------------------- the loop


def epoch_steps(lengths: list[int], cfg: SftConfig) -> int:
    """Steps of `cfg.epochs` full passes: the batches of each epoch, cut as the loop cuts them (the
    batching is seeded by epoch, so the count is known before training and the same on resume)."""
    return sum(len(token_budget_batches(lengths, cfg.batch_tokens, cfg.run.seed, e)) for e in range(cfg.epochs))


def sft(cfg: SftConfig) -> Path:
    """Fine-tune as configured; returns the run directory (the model is in RUN_DIR/model).

    Resume (`resume=RUN_DIR`) is exact: N steps equal N/2, a kill (even kill -9) and a resume for the
    rest, metrics included (lines of steps after the checkpoint are dropped and redone; `loss_ema`
    and the data position come from the checkpoint). The first Ctrl-C or SIGTERM finishes the step in
    progress, saves a checkpoint of it and stops; a second one stops at once."""
    resume_from = Path(cfg.resume) if cfg.resume else None
    if resume_from is not None:
        # everything that can refuse the folder, before anything is written into it
        check_resume_config(cfg, resume_from, _RESUME_FREE_KEYS, _RESUME_FREE_RUN_KEYS, "sft",
                            allow_change=cfg.allow_config_change)
        for ckpt in list_checkpoints(resume_from):
            try:
                state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a damaged checkpoint: restore_latest reports it and falls back
            if not isinstance(state, dict) or "batch_index" not in state:
                raise AhaError(f"{ckpt} is not an SFT checkpoint (its state.json has no batch_index); pass the "
                               "folder of an aha sft run")
    pairs = read_sft_pairs(cfg)  # a bad data file fails before a run folder exists
    world = init_world()  # one process unless launched by torchrun / accelerate (aha.train.distributed)
    strategy = fsdp.resolve_strategy(cfg.parallel, world.size)
    fsdp.check_supported(cfg, strategy)
    run = open_run(world, lambda: RunDir.create(resume_from or cfg.run.out_dir or None, "sft",
                                                resume=resume_from is not None, tensorboard=cfg.run.tensorboard,
                                                wandb_project=cfg.run.wandb_project))  # rank 0 writes it
    if resume_from is None:
        run.write_config(cfg)
    log = run.log
    torch.manual_seed(cfg.run.seed)
    model, tokenizer = load_policy(cfg.model, cfg.lora)
    device = next(model.parameters()).device
    train_set, val_set = load_sft_data(cfg, tokenizer, pairs)
    lengths = [len(ids) for ids, _ in train_set]
    log.info(f"run directory: {run.path}")
    log.info(f"{len(train_set)} training examples ({sum(lengths)} tokens), {len(val_set)} validation examples")
    if world.distributed:
        log.info(f"world size {world.size} ({strategy.describe()}): each batch of up to {cfg.batch_tokens} tokens is split into "
                 f"{world.size} row shares, one per rank; the loss is averaged over the batch's response tokens")

    total_steps = epoch_steps(lengths, cfg) if cfg.epochs else cfg.steps
    if cfg.epochs:
        log.info(f"{cfg.epochs} epochs: {total_steps} steps")
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim

    def build_optimizer(m: Any) -> tuple[Any, Any]:
        return make_optimizer(m, o.lr, o.weight_decay, (o.beta1, o.beta2), o.schedule, o.warmup_steps, total_steps,
                              o.min_lr_ratio, o.master_weights)

    optimizer, scheduler = build_optimizer(model)
    step, epoch, batch_index, elapsed_before = 0, 0, 0, 0.0
    ema: float | None = None
    restored = None
    if resume_from is not None:
        restored = restore_latest(resume_from, model, optimizer, scheduler, warn=log.info)
        if restored is None:
            log.info(f"{resume_from} has no checkpoint yet: starting it again from step 0")
            if world.main:
                truncate_metrics(run.path / "metrics.jsonl", 0)
    if restored is not None:
        ckpt, state = restored
        step, epoch, batch_index = state["step"], state["epoch"], state["batch_index"]
        elapsed_before = state.get("elapsed", 0.0)
        ema = state.get("loss_ema")
        # the steps after the checkpoint are redone: drop their lines; the metrics clock goes on
        last_time = truncate_metrics(run.path / "metrics.jsonl", step) if world.main else 0.0
        run.metrics.start = time.time() - max(last_time, elapsed_before)
        log.info(f"resumed from {ckpt} at step {step}")
    if strategy.sharded:  # after the resume: a checkpoint loads into the plain model as in one process
        optimizer, scheduler = fsdp.shard_training(world, model, optimizer, scheduler, build_optimizer, strategy)
        params = [p for p in model.parameters() if p.requires_grad]

    def validation_loss() -> float:
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for b in token_budget_batches([len(x[0]) for x in val_set], cfg.batch_tokens, cfg.run.seed, 0):
                loss, n = response_loss(model, *collate([val_set[i] for i in b], tokenizer.pad_token_id, device))
                total += float(loss) * n
                count += n
        model.train()
        return total / max(count, 1)

    saved_at = step if restored is not None else -1

    def checkpoint() -> None:
        nonlocal saved_at
        if saved_at == step:
            return
        full: dict[str, Any] = {}
        if strategy.sharded:  # every rank gathers; rank 0 writes the one-process format
            full = fsdp.checkpoint_state(model, optimizer)
        with fsdp.writing(model):
            if world.main:  # every rank holds the same state
                save_checkpoint(run.path, step, model, tokenizer, optimizer, scheduler,
                                {"epoch": epoch, "batch_index": batch_index, "elapsed": elapsed(), "loss_ema": ema},
                                keep=cfg.keep_checkpoints, **full)
        world.barrier()
        saved_at = step

    start = time.time()

    def elapsed() -> float:
        return elapsed_before + time.time() - start

    batches = token_budget_batches(lengths, cfg.batch_tokens, cfg.run.seed, epoch)
    window_tokens, window_start = 0, time.time()
    model.train()
    with GracefulStop(log.info) as stop, progress(total_steps - step, "sft", cfg.run.progress and world.main) as bar:
        # on N ranks the clock and a signal decide for every rank together
        while step < total_steps and not world.any(bool(cfg.max_seconds and elapsed() >= cfg.max_seconds)
                                                   or stop.requested is not None):
            # one step; the data position, counters and ema change together at its end, so a
            # checkpoint (periodic, or after a stop request) holds a state a step boundary really had
            next_epoch, next_index = epoch, batch_index
            if next_index >= len(batches):
                next_epoch, next_index = epoch + 1, 0
                batches = token_budget_batches(lengths, cfg.batch_tokens, cfg.run.seed, next_epoch)
            optimizer.zero_grad(set_to_none=True)
            if world.distributed:  # this rank's rows of the batch; the gradients summed over the ranks
                loss_value, n_tokens, padded = backward_rank_share(
                    world, model, [train_set[i] for i in batches[next_index]], tokenizer.pad_token_id, device,
                    lockstep=strategy.sharded)
                if not strategy.sharded:  # FSDP reduce-scattered them in the backward
                    world.sync_gradients(params)
            else:
                ids, attn, labels = collate([train_set[i] for i in batches[next_index]], tokenizer.pad_token_id,
                                            device)
                loss, n_tokens = response_loss(model, ids, attn, labels)
                loss.backward()
                loss_value, padded = float(loss.detach()), int(attn.sum())
            norm = torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm or float("inf"))
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            optimizer.step()
            scheduler.step()
            step, epoch, batch_index = step + 1, next_epoch, next_index + 1
            ema = loss_value if ema is None else 0.95 * ema + 0.05 * loss_value
            window_tokens += padded
            metrics = {"train/loss": loss_value, "train/loss_ema": ema, "lr": lr,
                       "grad_norm": float(norm), "epoch": epoch, "response_tokens": n_tokens}
            last = step >= total_steps or world.any(bool(cfg.max_seconds and elapsed() >= cfg.max_seconds))
            if cfg.val_every and val_set and (step % cfg.val_every == 0 or last):
                with fsdp.gathered(model):  # FSDP: every rank gathers, rank 0 runs the forwards
                    if world.main:
                        metrics["val/loss"] = validation_loss()
            if step % cfg.run.log_every == 0 or last:
                now = time.time()
                metrics["tokens_per_s"] = window_tokens / max(now - window_start, 1e-9)
                window_tokens, window_start = 0, now
                run.metrics.write(step, metrics)
            if "val/loss" in metrics:
                log.info(f"step {step}: train loss {ema:.4f}, val loss {metrics['val/loss']:.4f}")
            bar.update(1, loss=ema)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint()
        checkpoint()
    if world.any(stop.requested is not None):  # every rank stops, whichever got the signal
        by = stop.requested or "a signal to another rank"
        log.info(f"{by}: stopped with a checkpoint at step {step}; continue with `aha sft resume={run.path}`")
        run.metrics.close()
        raise KeyboardInterrupt
    run.metrics.close()
    out = run.path / "model"
    state = fsdp.full_model_state(model) if strategy.sharded else None  # every rank gathers
    with fsdp.writing(model):
        if world.main:
            if state is not None:
                fsdp.save_pretrained(model, out, state)
            else:
                model.save_pretrained(str(out))
            tokenizer.save_pretrained(str(out))
    world.finish()  # the model folder is complete before any rank returns
    log.info(f"done after {step} steps ({elapsed():.0f}s): model in {out}")
    return run.path
