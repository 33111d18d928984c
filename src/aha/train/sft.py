"""Supervised fine-tuning on (prompt messages, response) pairs, loss on the response tokens only.

Data comes from JSONL files (`{"messages": [...]}` whose last turn is the assistant's, or
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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from aha.config import LoraConfig, ModelConfig, RunConfig, option, section
from aha.errors import AhaError
from aha.jsonl import iter_json_objects
from aha.prompts import render_prompt
from aha.runs import RunDir, progress
from aha.tasks.base import preopens_think
from aha.train.checkpoint import latest_checkpoint, load_training_state, load_weights, save_checkpoint
from aha.train.common import load_policy, make_optimizer
from aha.train.config import OptimConfig

# the optimizer keys that moved into the `optim` section
_OPTIM_KEYS = ("lr", "warmup_steps", "schedule", "min_lr_ratio", "weight_decay", "beta1", "beta2", "max_grad_norm")


@dataclass
class SftDataConfig:
    """Where the training pairs come from."""

    files: list[str] = option([], "JSONL files of {messages: [...]} or {prompt, response} records")
    task: str = option("", "alternatively a task whose examples carry teacher traces in meta.trace")
    task_options: dict[str, Any] = option({}, "keyword options of that task (e.g. {people: '2-3', count: 20000})")
    val_files: list[str] = option([], "held-out JSONL files for validation loss (default: a split of the data)")
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
    max_seconds: float = option(0.0, "stop after this much wall time (0 = no limit); a guard, the schedule "
                                "does not follow it", min=0.0)
    val_every: int = option(100, "validation loss every N steps (and at the end); 0 is off", min=0)
    checkpoint_every: int = option(0, "resumable checkpoint every N steps (and at the end); 0 = end only", min=0)
    keep_checkpoints: int = option(2, "keep the newest N checkpoints", min=1)
    resume: str = option("", "run directory to continue from its newest checkpoint")

    RENAMED: ClassVar[dict[str, str]] = {key: f"optim.{key}" for key in _OPTIM_KEYS}

    def validate(self) -> None:
        if not self.data.files and not self.data.task:
            raise ValueError("no data: set data.files to JSONL files or data.task to a task with traces")


# ----------------------------------------------------------------------------- data


def read_pairs(path: str | Path) -> list[tuple[list[dict[str, str]], str]]:
    """(prompt messages, response) pairs from a JSONL file; bad records name file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise AhaError(f"SFT data file {str(path)!r} does not exist")
    pairs = []
    for i, rec in iter_json_objects(path):
        if "messages" in rec:
            msgs = rec["messages"]
            if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict) \
                    or msgs[-1].get("role") != "assistant":
                raise AhaError(f"{path}, line {i}: field 'messages' must be a list ending with an assistant turn")
            pairs.append((msgs[:-1], str(msgs[-1].get("content", ""))))
        elif "prompt" in rec and "response" in rec:
            prompt = rec["prompt"]
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            if not isinstance(prompt, list):
                raise AhaError(f"{path}, line {i}: field 'prompt' must be a string or a list of messages")
            pairs.append((prompt, str(rec["response"])))
        else:
            raise AhaError(f"{path}, line {i}: needs field 'messages' or fields 'prompt' and 'response'")
    return pairs


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


def load_sft_data(cfg: SftConfig, tokenizer: Any) -> tuple[list[tuple[list[int], int]], list[tuple[list[int], int]]]:
    """Encoded (train, validation) examples."""
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
    encoded = [encode_pair(tokenizer, p, r, think_preopened) for p, r in pairs]
    encoded = [e for e in encoded if len(e[0]) <= cfg.data.max_length]
    if cfg.data.val_files:
        val = [encode_pair(tokenizer, p, r, think_preopened) for f in cfg.data.val_files for p, r in read_pairs(f)]
        return encoded, val
    rng = np.random.default_rng(cfg.run.seed)
    order = rng.permutation(len(encoded)).tolist()
    n_val = int(len(encoded) * cfg.data.val_fraction) if cfg.val_every else 0
    val = [encoded[i] for i in order[:n_val]]
    train_set = [encoded[i] for i in sorted(order[n_val:])]
    if not train_set:
        raise AhaError("no SFT examples left for training after the validation split")
    return train_set, val


# ----------------------------------------------------------------------------- the loop


def sft(cfg: SftConfig) -> Path:
    """Fine-tune as configured; returns the run directory (the model is in RUN_DIR/model)."""
    resume_from = Path(cfg.resume) if cfg.resume else None
    run = RunDir.create(resume_from or cfg.run.out_dir or None, "sft", resume=resume_from is not None,
                        tensorboard=cfg.run.tensorboard, wandb_project=cfg.run.wandb_project)
    if resume_from is None:
        run.write_config(cfg)
    log = run.log
    torch.manual_seed(cfg.run.seed)
    model, tokenizer = load_policy(cfg.model, cfg.lora)
    device = next(model.parameters()).device
    train_set, val_set = load_sft_data(cfg, tokenizer)
    lengths = [len(ids) for ids, _ in train_set]
    log.info(f"run directory: {run.path}")
    log.info(f"{len(train_set)} training examples ({sum(lengths)} tokens), {len(val_set)} validation examples")

    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim
    optimizer, scheduler = make_optimizer(model, o.lr, o.weight_decay, (o.beta1, o.beta2), o.schedule,
                                          o.warmup_steps, cfg.steps, o.min_lr_ratio)
    step, epoch, batch_index, elapsed_before = 0, 0, 0, 0.0
    if resume_from is not None:
        ckpt = latest_checkpoint(resume_from)
        load_weights(model, ckpt / "model")
        state = load_training_state(ckpt, optimizer, scheduler)
        step, epoch, batch_index = state["step"], state["epoch"], state["batch_index"]
        elapsed_before = state.get("elapsed", 0.0)
        log.info(f"resumed from {ckpt} at step {step}")

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

    def checkpoint() -> None:
        save_checkpoint(run.path, step, model, tokenizer, optimizer, scheduler,
                        {"epoch": epoch, "batch_index": batch_index, "elapsed": elapsed()},
                        keep=cfg.keep_checkpoints)

    start = time.time()

    def elapsed() -> float:
        return elapsed_before + time.time() - start

    batches = token_budget_batches(lengths, cfg.batch_tokens, cfg.run.seed, epoch)
    ema = None
    window_tokens, window_start = 0, time.time()
    model.train()
    try:
        with progress(cfg.steps - step, "sft", cfg.run.progress) as bar:
            while step < cfg.steps and not (cfg.max_seconds and elapsed() >= cfg.max_seconds):
                if batch_index >= len(batches):
                    epoch, batch_index = epoch + 1, 0
                    batches = token_budget_batches(lengths, cfg.batch_tokens, cfg.run.seed, epoch)
                ids, attn, labels = collate([train_set[i] for i in batches[batch_index]], tokenizer.pad_token_id,
                                            device)
                batch_index += 1
                loss, n_tokens = response_loss(model, ids, attn, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm or float("inf"))
                lr = optimizer.param_groups[0]["lr"]  # the rate this step used
                optimizer.step()
                scheduler.step()
                step += 1
                loss_value = float(loss.detach())
                ema = loss_value if ema is None else 0.95 * ema + 0.05 * loss_value
                window_tokens += int(attn.sum())
                metrics = {"train/loss": loss_value, "train/loss_ema": ema, "lr": lr,
                           "grad_norm": float(norm), "epoch": epoch, "response_tokens": n_tokens}
                last = step >= cfg.steps or (cfg.max_seconds and elapsed() >= cfg.max_seconds)
                if cfg.val_every and val_set and (step % cfg.val_every == 0 or last):
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
    except KeyboardInterrupt:
        log.info(f"interrupted: saving a checkpoint at step {step}")
        checkpoint()
        raise
    checkpoint()
    out = run.path / "model"
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    log.info(f"done after {step} steps ({elapsed():.0f}s): model in {out}")
    return run.path
