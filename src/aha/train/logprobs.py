"""Log-probabilities of completions under a model: the forward passes of the RL update.

`completion_logprobs` is the one entry point: per-token log-probs (and entropies) of each
completion given its prompt, with each distinct prompt run once when a GRPO group's rows share it.
`reference_logprobs` runs it under the reference policy (a frozen copy, or the LoRA base with the
adapter switched off).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from aha.models import (
    activation_checkpointing,
    active_dropout,
    cache_keyword,
    hf_model,
    output_cache,
    plain_kv_cache,
)

# prompt logits (U x Lp x V floats, 16 MiB in fp32) are projected in full up to this size
FULL_PROMPT_LOGITS = 1 << 22


def pad_right(seqs: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, L), attention mask (B, L)) with sequences right-padded to the longest."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def pad_rows(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Stack 1-D tensors into (B, width), zero-padded on the right."""
    out = torch.zeros((len(rows), width), dtype=rows[0].dtype, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


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
    if share_prompts and len(distinct) < len(prompts) and can_share_prompts(model):
        logits, targets = shared_prompt_logits(model, list(distinct), row_prompt, completions, pad_id, device)
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


def reference_logprobs(model: Any, reference: Any, prompts: list[list[int]], completions: list[list[int]],
                       pad_id: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`completion_logprobs` under the reference policy: `reference` (a frozen copy) when given,
    else `model`'s base with its LoRA adapter switched off."""
    if reference is None:
        with model.disable_adapter():
            return completion_logprobs(model, prompts, completions, pad_id, temperature)
    return completion_logprobs(reference, prompts, completions, pad_id, temperature)


def can_share_prompts(model: Any) -> bool:
    """Whether a prompt's cache may serve several rows exactly (see `completion_logprobs`)."""
    if activation_checkpointing(model) and model.training and torch.is_grad_enabled():
        return False
    return plain_kv_cache(model) and not active_dropout(model)


def shared_prompt_logits(model: Any, distinct: list[tuple[int, ...]], row_prompt: list[int],
                         completions: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits (B, C, V) for every completion token, and the targets (B, C).

    distinct: the U distinct prompts; row_prompt: B indices into them. The U prompts go through
    the model once (right-padded: causal attention keeps real tokens off the pads), their cache is
    expanded to the B rows, then the completions run on top of it with the prompt pads masked."""
    from transformers import DynamicCache

    p_ids, p_attn = pad_right([list(p) for p in distinct], pad_id, device)  # (U, Lp)
    p_len = p_attn.sum(1)  # (U,)
    U, Lp = p_ids.shape
    if U * Lp * int(hf_model(model).config.vocab_size) <= FULL_PROMPT_LOGITS:
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
