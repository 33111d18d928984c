"""Pieces shared by the RL and SFT loops: policy loading with LoRA, optimizer and schedule, token
log-probs, padding."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

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


def pad_right(seqs: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, L), attention mask (B, L)) with sequences right-padded to the longest."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def token_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int,
                   temperature: float = 1.0, with_entropy: bool = False, entropy_grad: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of tokens input_ids[:, start+1:] given their prefixes, at `temperature`.

    input_ids, attention_mask: (B, L), right-padded.
    start: first position whose next-token prediction is needed (the shortest prompt length - 1),
        so the prompt-only prefix is not pushed through the vocabulary projection.
    Returns logprobs (B, L-1-start) for targets input_ids[:, start+1:], and entropy of the same
    positions when asked (else None); the entropy carries gradients only with `entropy_grad`
    (an entropy bonus), otherwise it is a detached metric.
    """
    width = input_ids.shape[1] - start  # positions start .. L-1; the last one predicts nothing we need
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=width)
    targets = input_ids[:, start + 1:]  # (B, T)
    return logprobs_from_logits(out.logits[:, :-1, :], targets, temperature, with_entropy, entropy_grad)


def logprobs_from_logits(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                         with_entropy: bool = False, entropy_grad: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (B, T) of targets (B, T) under next-token logits (B, T, V) at `temperature`, and the
    entropy (B, T) of the same distributions when asked (with gradients only with `entropy_grad`)."""
    logits = logits.float()
    if temperature and temperature != 1.0:
        logits = logits / temperature
    logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
    chosen = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    if not with_entropy:
        return chosen, None
    if entropy_grad:
        return chosen, -(logp.exp() * logp).sum(-1)
    with torch.no_grad():
        return chosen, -(logp.exp() * logp).sum(-1)
