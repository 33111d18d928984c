"""Pieces shared by the RL and SFT loops: policy loading with LoRA, the optimizer with its schedule
(fp32 master weights for bf16/fp16 models, see `aha.train.precision`), and the resume check."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml

from aha.config import LoraConfig, ModelConfig, to_dict
from aha.errors import AhaError


def attach_lora(model: Any, lora: LoraConfig) -> Any:
    """Wrap `model` in a fresh, trainable peft LoRA adapter."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets: Any = lora.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                            task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise AhaError(f"cannot attach LoRA: {exc}; check lora.target_modules") from exc


def merge_lora(model: Any) -> Any:
    """Fold a peft adapter into its base weights and return the plain model."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def load_policy(model_cfg: ModelConfig, lora: LoraConfig) -> tuple[Any, Any]:
    """(model, tokenizer) ready to train. An adapter folder (e.g. an SFT output) is merged into its
    base first ("cold start"; an adapter whose base is itself an adapter folder merges the whole
    chain, see `aha.models.load_model`); then a new adapter is attached when LoRA is enabled.

    The model's `name_or_path` is then `model.path` made absolute, so an adapter this run saves
    names it as its base: loadable from any working directory, and after a cold start the adapter
    folder rather than the original base model (which would drop the cold-start delta when the new
    adapter is loaded or exported)."""
    from aha.models import is_adapter_folder, load_model, load_tokenizer, looks_local, require_chat_template

    tokenizer = load_tokenizer(model_cfg.path)
    require_chat_template(tokenizer, model_cfg.path)  # before the weights load
    model = load_model(model_cfg.path, device=model_cfg.device, dtype=model_cfg.dtype)
    if is_adapter_folder(model_cfg.path):
        model = merge_lora(model)
    if looks_local(model_cfg.path) and Path(model_cfg.path).exists():
        model.name_or_path = str(Path(model_cfg.path).resolve())  # what a saved adapter names as its base
    if model_cfg.gradient_checkpointing:
        # transformers 5 renamed it (the old name warns); older versions only have the old one
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
        model.config.use_cache = False
    if lora.enabled:
        model = attach_lora(model, lora)
    model.train()
    return model, tokenizer


def make_optimizer(model: Any, lr: float, weight_decay: float, betas: tuple[float, float], schedule: str,
                   warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0,
                   master_weights: bool = True) -> tuple[Any, Any]:
    """AdamW over trainable parameters plus a LambdaLR: linear warmup, then constant or cosine.

    master_weights: trainable weights stored in bf16/fp16 are stepped through fp32 master copies
    (`aha.train.precision.MasterWeightAdamW`); float32 weights are stepped by a plain AdamW either way.
    False steps low-precision weights in place (updates below their resolution are lost)."""
    from aha.train.precision import MasterWeightAdamW, low_precision_params

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AhaError("the model has no trainable parameters")
    if master_weights and low_precision_params(params):
        optimizer: Any = MasterWeightAdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    return optimizer, make_scheduler(optimizer, schedule, warmup_steps, total_steps, min_lr_ratio)


def make_scheduler(optimizer: Any, schedule: str, warmup_steps: int, total_steps: int,
                   min_lr_ratio: float = 0.0) -> Any:
    """A LambdaLR over `optimizer` (from its groups' initial_lr, else their lr): linear warmup, then
    constant or cosine down to `min_lr_ratio` at `total_steps` optimizer steps."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------- resuming


def check_resume_config(cfg: Any, run_dir: str | Path, free_keys: Iterable[str], free_run_keys: Iterable[str],
                        command: str, allow_change: bool = False) -> None:
    """Refuse to resume `run_dir` unless it is a run of this command whose config.yaml equals `cfg`
    apart from `free_keys` (top level) and `free_run_keys` (under `run`). Keys added to the config
    class since the run began count as their defaults. Writes nothing: call it before the run folder
    is opened.

    allow_change: accept a differing config (the user's `allow_config_change=true`); a folder that
    is not a run of `command` is refused even then."""
    run_dir = Path(run_dir)
    saved_path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise AhaError(f"resume={str(run_dir)!r} does not exist; pass the folder of an aha {command} run")
    if not saved_path.is_file():
        raise AhaError(f"{run_dir} has no config.yaml: it is not an aha {command} run directory; pass the folder "
                       f"an earlier `aha {command}` wrote")
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        raise AhaError(f"{saved_path} is not a readable YAML config; it is not an aha {command} run") from None
    defaults = json.loads(json.dumps(to_dict(type(cfg)())))
    if not isinstance(saved, dict) or not set(saved) <= set(defaults):
        extra = sorted(set(saved) - set(defaults)) if isinstance(saved, dict) else []
        raise AhaError(f"{run_dir} is not an aha {command} run (its config.yaml has "
                       f"{', '.join(map(str, extra[:5])) or 'no mapping'}, which `aha {command}` does not know); "
                       f"pass the folder of an aha {command} run")
    current = json.loads(json.dumps(to_dict(cfg)))
    fill_missing(saved, defaults)  # keys added since the run began
    for d in (saved, current):
        for k in free_keys:
            d.pop(k, None)
        for k in free_run_keys:
            run = d.get("run")
            if isinstance(run, dict):
                run.pop(k, None)
    if saved != current and not allow_change:
        diffs = sorted(diff_keys(saved, current))
        raise AhaError(f"the config differs from {saved_path} at {', '.join(diffs[:5])}; "
                       "resume with the run's own recipe, or pass allow_config_change=true")


def fill_missing(saved: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Give `saved` the default of every key it lacks (a run written before the key existed ran
    with what is now its default)."""
    for k, v in defaults.items():
        if k not in saved:
            saved[k] = v
        elif isinstance(v, dict) and isinstance(saved[k], dict):
            fill_missing(saved[k], v)


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys at which two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
