"""Pieces shared by the RL and SFT loops: policy loading with LoRA, and the optimizer with its schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from aha.config import LoraConfig, ModelConfig
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
    base first ("cold start"); then a new adapter is attached when LoRA is enabled."""
    from aha.models import is_adapter_folder, load_model, load_tokenizer

    model = load_model(model_cfg.path, device=model_cfg.device, dtype=model_cfg.dtype)
    tokenizer = load_tokenizer(model_cfg.path)
    if is_adapter_folder(model_cfg.path):
        model = merge_lora(model)
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
                   warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> tuple[Any, Any]:
    """AdamW over trainable parameters plus a LambdaLR: linear warmup, then constant or cosine."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AhaError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
