"""Policy-gradient losses and their aggregation over tokens (pure tensor functions).

`policy_loss` is the one entry point the trainer calls. It computes, per token,

    L_t = pg_t + kl_coef * KL_t - entropy_coef * H_t

where pg_t comes from the registered policy loss (`POLICY_LOSSES`, default "vanilla" = PPO clip
with decoupled bounds), KL_t from `aha.algo.kl`, H_t is the policy's entropy at t, and reduces the
(B, T) matrix to a scalar with `aggregate`, which owns every aggregation mode.

Shapes: B sequences (rollouts) in the micro-batch, T response positions (padded); `mask` marks
the real response tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from aha.algo.kl import kl_estimate
from aha.registry import Registry

PolicyLossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]

# name -> `fn(logprobs (B,T), old_logprobs (B,T), advantages (B,T), mask (B,T) bool, **options)
#            -> (per-token loss (B,T), metrics {name: 0-dim tensor})`
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")

AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm", "token_sum", "seq_mean_token_sum",
             "micro_token_mean")

# verl clamps the log ratio before exp so a stale old_logprob cannot overflow the ratio
LOG_RATIO_LIMIT = 20.0


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of `x` over positions where `mask` is True (0 when nothing is masked in). Any shape."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def aggregate(loss_mat: Tensor, mask: Tensor, mode: str = "token_mean", norm_constant: float | None = None,
              batch_tokens: float | None = None, batch_rows: float | None = None) -> Tensor:
    """Reduce a per-token loss matrix to a scalar.

    With m the mask, B the number of rows and |o_i| = sum_t m_{i,t}:

    - "token_mean" (DAPO; verl "token-mean", TRL "bnpo"/"dapo"): sum_{i,t} m L / sum_{i,t} m.
      Every token of the micro-batch weighs the same, so long responses weigh more in total.
    - "seq_mean_token_mean" (original GRPO, DeepSeekMath eq. 3; verl "seq-mean-token-mean", TRL
      "grpo"): mean over sequences of (sum_t m L / |o_i|). Rows without tokens are left out of
      the outer mean.
    - "seq_mean_token_sum_norm" (Dr. GRPO, Liu et al. 2025 arXiv 2503.20783; TRL "dr_grpo"):
      sum_{i,t} m L / (B * norm_constant), norm_constant a fixed length (the generation cap;
      understand-r1-zero uses `generate_max_length`), so no length-dependent normaliser is left.
      norm_constant defaults to T = loss_mat.shape[-1]. All B rows count, with or without tokens.
      (verl's mode of the same name divides by norm_constant only, not by B; the trainer's
      gradient accumulation is what makes the two differ by a constant.)
    - "token_sum": sum_{i,t} m L.
    - "seq_mean_token_sum" (verl "seq-mean-token-sum"): mean over rows with tokens of sum_t m L.
    - "micro_token_mean" (TRL 0.16 under gradient accumulation, which REA-RL's released numbers
      come from): each micro-batch's own token mean, sum_{i,t} m L / sum_{i,t} m over the
      micro-batch, divided by the number of micro-batches of the batch (`batch_rows`, see
      `batch_divisors`). A token of a micro-batch with few tokens weighs more than one of a
      micro-batch with many, so the loss depends on how the batch is split: a parity option, not
      a better default.

    Args:
        loss_mat: (B, T) per-token loss.
        mask: (B, T) bool (or 0/1) mask of the tokens that count.
        mode: one of `AGG_MODES`.
        norm_constant: the fixed divisor of "seq_mean_token_sum_norm" (ignored otherwise).
        batch_tokens, batch_rows: when loss_mat is one micro-batch of a larger batch, that batch's
            number of masked-in tokens (the "token_mean" divisor) and of rows (rows with tokens for
            the seq means, all rows for "seq_mean_token_sum_norm", the number of micro-batches for
            "micro_token_mean"). The divisors are then the whole batch's, so the micro-batch losses
            add up to the batch's loss exactly and (except for "micro_token_mean") the split into
            micro-batches does not change the gradient. None: this matrix's own counts.

    Returns:
        0-dim tensor (differentiable w.r.t. loss_mat). An all-False mask gives 0.
    """
    if loss_mat.shape != mask.shape:
        raise ValueError(f"loss_mat shape {tuple(loss_mat.shape)} != mask shape {tuple(mask.shape)}")
    m = mask.to(loss_mat.dtype)  # (B, T)
    masked = loss_mat * m  # (B, T)
    if mode == "token_mean":
        return masked.sum() / (m.sum().clamp(min=1.0) if batch_tokens is None else max(batch_tokens, 1.0))
    if mode == "token_sum":
        return masked.sum()
    if mode == "micro_token_mean":
        return masked.sum() / m.sum().clamp(min=1.0) / (1.0 if batch_rows is None else max(batch_rows, 1.0))
    if mode in ("seq_mean_token_mean", "seq_mean_token_sum"):
        counts = m.sum(dim=-1)  # (B,)
        seq = masked.sum(dim=-1)  # (B,)
        if mode == "seq_mean_token_mean":
            seq = seq / counts.clamp(min=1.0)
        has_tokens = (counts > 0).to(loss_mat.dtype)  # (B,)
        rows = has_tokens.sum().clamp(min=1.0) if batch_rows is None else max(batch_rows, 1.0)
        return (seq * has_tokens).sum() / rows
    if mode == "seq_mean_token_sum_norm":
        norm = float(loss_mat.shape[-1] if norm_constant is None else norm_constant)
        if norm <= 0:
            raise ValueError(f"norm_constant must be positive, got {norm}")
        return masked.sum() / ((loss_mat.shape[0] if batch_rows is None else batch_rows) * norm)
    raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(AGG_MODES)}")


def batch_divisors(mask: Tensor, mode: str, micro_batch_size: int | None = None) -> tuple[float, float]:
    """The divisors `aggregate` uses when a batch is processed in micro-batches: (batch_tokens,
    batch_rows) of the whole batch under `mode`'s own definition.

    mask: (B, T) bool, the tokens that count, for every row of the batch (see `loss_token_mask`).
    batch_tokens is the number of counted tokens (the "token_mean" divisor). batch_rows is every row
    for "seq_mean_token_sum_norm" (Dr. GRPO divides by B whatever the rows hold), the rows with
    at least one counted token for the sequence means (an empty row is left out of their mean), and
    for "micro_token_mean" the number of micro-batches, ceil(B / micro_batch_size) (the batch in
    one micro-batch when micro_batch_size is None).
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(AGG_MODES)}")
    counts = mask.to(torch.long).sum(dim=-1)  # (B,)
    tokens = float(counts.sum())
    if mode == "micro_token_mean":
        return tokens, float(math.ceil(mask.shape[0] / micro_batch_size) if micro_batch_size else 1)
    rows = float(mask.shape[0]) if mode == "seq_mean_token_sum_norm" else float((counts > 0).sum())
    return tokens, rows


def loss_token_mask(mask: Tensor, truncated: Tensor, mask_truncated: bool) -> Tensor:
    """The response tokens that enter the loss: (B, T) bool.

    mask: (B, T) bool, the real response tokens; truncated: (B,) bool, the completions cut at the
    generation cap. With `mask_truncated` (DAPO's overlong filtering, Yu et al. 2025 sec. 3.4) a
    truncated completion contributes no token, so an unfinished answer is neither rewarded nor
    penalised through the policy gradient; otherwise `mask` is returned as it is.
    """
    if not mask_truncated:
        return mask
    return mask & ~truncated.to(torch.bool)[:, None]


@POLICY_LOSSES.register("vanilla")
def ppo_clip_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
                  clip_low: float = 0.2, clip_high: float = 0.2,
                  clip_ratio_c: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with decoupled bounds (clip-higher) and optional dual clip.

    ratio_t = exp(logprobs_t - old_logprobs_t)   (log ratio clamped to +-20 before exp)
    pg_t    = max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - clip_low, 1 + clip_high))
    dual clip (A_t < 0 only): pg_t = min(pg_t, -A_t * clip_ratio_c)

    Sources: PPO (Schulman et al. 2017, eq. 7); decoupled eps_low / eps_high = "clip-higher" of
    DAPO (Yu et al. 2025, arXiv 2503.14476, sec. 3.1; 0.2 / 0.28); dual clip (Ye et al. 2020,
    arXiv 1912.09729; verl `clip_ratio_c` = 3). Where the clipped branch is taken, pg_t is
    constant in logprobs, so its gradient is 0: for A > 0 above 1 + clip_high, for A < 0 below
    1 - clip_low, and (dual) for A < 0 above clip_ratio_c.

    Args:
        logprobs: (B, T) log-probs of the sampled tokens under the current policy (with grad).
        old_logprobs: (B, T) log-probs under the policy that sampled them (no grad).
        advantages: (B, T) per-token advantages.
        mask: (B, T) bool, the tokens that count.
        clip_low: eps_low, the ratio is clipped below at 1 - clip_low.
        clip_high: eps_high, the ratio is clipped above at 1 + clip_high.
        clip_ratio_c: dual-clip constant (> 1), None to disable.

    Returns:
        (pg (B, T), metrics) with metrics clip_frac (share of masked tokens on a clipped branch,
        low or high), clip_frac_low (A < 0, ratio < 1 - clip_low), clip_frac_high (A > 0,
        ratio > 1 + clip_high), ratio_mean, ratio_max, and dual_clip_frac when dual clip is on.
        Definitions of the low/high shares as in TRL's GRPOTrainer.
    """
    log_ratio = (logprobs - old_logprobs).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    pg1 = -advantages * ratio  # (B, T)
    pg2 = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T)
    pg = torch.maximum(pg1, pg2)  # (B, T)
    metrics: dict[str, Tensor] = {}
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1 for dual clip, got {clip_ratio_c}")
        pg3 = -advantages * clip_ratio_c  # (B, T)
        dual = (advantages < 0) & (pg3 < pg)  # (B, T)
        pg = torch.where(advantages < 0, torch.minimum(pg, pg3), pg)
        with torch.no_grad():
            metrics["dual_clip_frac"] = masked_mean(dual.float(), mask)
    with torch.no_grad():
        low = (ratio < 1.0 - clip_low) & (advantages < 0)  # (B, T)
        high = (ratio > 1.0 + clip_high) & (advantages > 0)  # (B, T)
        m = mask.to(torch.bool)
        metrics["clip_frac"] = masked_mean((low | high).float(), m)
        metrics["clip_frac_low"] = masked_mean(low.float(), m)
        metrics["clip_frac_high"] = masked_mean(high.float(), m)
        metrics["ratio_mean"] = masked_mean(ratio, m)
        metrics["ratio_max"] = ratio[m].max() if m.any() else ratio.new_zeros(())
    return pg, metrics


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token_mean",
    norm_constant: float | None = None,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    *,
    loss_mode: str = "vanilla",
    clip_ratio_c: float | None = None,
    kl_clamp: float | None = None,
    batch_tokens: float | None = None,
    batch_rows: float | None = None,
    pair_advantages: Tensor | None = None,
    pair_mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The scalar training loss of one micro-batch and its metrics.

    loss = aggregate(pg + kl_coef * KL - entropy_coef * H, mask, agg, norm_constant)

    With a pair term (REA-RL's `custom_loss`, see aha.algo.overthinking), the per-token loss gains
    pair_mask * (pg' + kl_coef * KL), pg' the same surrogate with `pair_advantages`, inside the same
    aggregate (so its divisors are the main term's): the released trainer's second loss, whose KL
    part counts those tokens' KL a second time.

    With on-policy data (one update per rollout batch, mu = 1) pass `old_logprobs =
    logprobs.detach()`: the ratio is then 1, nothing is clipped, and the gradient of the pg part is
    exactly the vanilla policy gradient -A * grad log pi aggregated the same way.

    Args:
        logprobs: (B, T) log pi_theta of the sampled tokens (with grad).
        old_logprobs: (B, T) log-probs under the sampling policy (detached).
        advantages: (B,) one per sequence (broadcast over tokens) or (B, T) per token.
        mask: (B, T) bool, the response tokens that count.
        clip_low: PPO eps_low (ratio >= 1 - clip_low).
        clip_high: PPO eps_high (ratio <= 1 + clip_high); 0.28 is DAPO's clip-higher.
        agg: aggregation mode, see `aggregate` ("token_mean", "seq_mean_token_mean",
            "seq_mean_token_sum_norm", "token_sum", "seq_mean_token_sum").
        norm_constant: fixed divisor of "seq_mean_token_sum_norm" (Dr. GRPO); default T.
        ref_logprobs: (B, T) log pi_ref of the same tokens, or None for no KL term.
        kl_coef: beta of the KL-in-loss term (GRPO; TRL <= 0.18 used 0.04, Logic-RL 0.001).
        kl_estimator: "k1", "k2" or "k3" (see aha.algo.kl); GRPO/TRL use k3.
        entropy: (B, T) entropy of the policy at each position, or None.
        entropy_coef: weight of the entropy bonus (subtracted from the loss).
        loss_mode: registered policy loss (`POLICY_LOSSES`), default "vanilla".
        clip_ratio_c: dual-clip constant (> 1) for "vanilla", None = off (verl uses 3.0).
        kl_clamp: clamp the per-token KL estimate to [-kl_clamp, kl_clamp] (Logic-RL: 10).
        batch_tokens, batch_rows: the whole batch's counts when this is one micro-batch of it (see
            `aggregate`); the returned loss and pg_loss are then this micro-batch's share of the
            batch's, and the shares add up to the batch's values.
        pair_advantages: (B,) the pair term's advantage of each sequence (0 where it has none).
        pair_mask: (B, T) bool, the tokens of the pair term (only those also in `mask` count).

    Returns:
        (loss, metrics): loss a 0-dim differentiable tensor; metrics plain floats: pg_loss (the
        aggregated pg part), clip_frac, clip_frac_low, clip_frac_high, ratio_mean, ratio_max,
        kl (token mean of the estimate over the mask, when ref_logprobs is given), entropy (token
        mean, when entropy is given), dual_clip_frac (when dual clip is on), pair_loss (the
        aggregated pair term, when there is one).
    """
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be (B, T), got shape {tuple(logprobs.shape)}")
    for name, t in (("old_logprobs", old_logprobs), ("mask", mask), ("ref_logprobs", ref_logprobs),
                    ("entropy", entropy)):
        if t is not None and t.shape != logprobs.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != logprobs shape {tuple(logprobs.shape)}")
    if advantages.dim() == 1:
        if advantages.shape[0] != logprobs.shape[0]:
            raise ValueError(f"advantages has {advantages.shape[0]} entries for {logprobs.shape[0]} sequences")
        advantages = advantages.unsqueeze(-1)  # (B, 1), broadcasts over T
    elif advantages.shape != logprobs.shape:
        raise ValueError(f"advantages must be (B,) or (B, T), got shape {tuple(advantages.shape)}")
    advantages = advantages.to(logprobs.dtype).expand_as(logprobs)  # (B, T)
    mask = mask.to(torch.bool)

    pg_fn = POLICY_LOSSES.get(loss_mode)
    options = {"clip_low": clip_low, "clip_high": clip_high}
    if clip_ratio_c is not None:
        options["clip_ratio_c"] = clip_ratio_c
    pg_mat, pg_metrics = pg_fn(logprobs, old_logprobs.detach(), advantages, mask, **options)  # (B, T)
    loss_mat = pg_mat  # (B, T)
    metrics: dict[str, float] = {k: float(v) for k, v in pg_metrics.items()}
    with torch.no_grad():
        metrics["pg_loss"] = float(aggregate(pg_mat, mask, agg, norm_constant, batch_tokens, batch_rows))

    kl_mat = None
    if ref_logprobs is not None:
        kl_mat = kl_estimate(logprobs, ref_logprobs.detach(), kl_estimator, clamp=kl_clamp)  # (B, T)
        metrics["kl"] = float(masked_mean(kl_mat.detach(), mask))
        if kl_coef != 0.0:
            loss_mat = loss_mat + kl_coef * kl_mat
    if pair_advantages is not None:
        if pair_mask is None or pair_mask.shape != logprobs.shape or pair_advantages.shape != logprobs.shape[:1]:
            raise ValueError("pair_advantages must be (B,) and pair_mask (B, T) like logprobs")
        pair_adv = pair_advantages.to(logprobs.dtype).unsqueeze(-1).expand_as(logprobs)  # (B, T)
        pair_mat, _ = pg_fn(logprobs, old_logprobs.detach(), pair_adv, mask, **options)  # (B, T)
        if kl_mat is not None and kl_coef != 0.0:
            pair_mat = pair_mat + kl_coef * kl_mat
        pair_mat = pair_mat * pair_mask.to(pair_mat.dtype)  # (B, T)
        with torch.no_grad():
            metrics["pair_loss"] = float(aggregate(pair_mat, mask, agg, norm_constant, batch_tokens, batch_rows))
        loss_mat = loss_mat + pair_mat
    if entropy is not None:
        metrics["entropy"] = float(masked_mean(entropy.detach(), mask))
        if entropy_coef != 0.0:
            loss_mat = loss_mat - entropy_coef * entropy
    loss = aggregate(loss_mat, mask, agg, norm_constant, batch_tokens, batch_rows)
    return loss, metrics


@torch.no_grad()
def kl_penalty_rewards(
    rewards: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kl_coef: float,
    kind: str = "k1",
    clamp: float | None = None,
) -> tuple[Tensor, Tensor]:
    """KL as a reward penalty: r'_i = r_i - kl_coef * sum_t m_{i,t} KL_{i,t}.

    The per-token KL of the sampled tokens under the sampling policy vs the reference, summed over
    the response, is subtracted from the sequence reward before advantages are computed. With
    gamma = 1 and the outcome reward on the last token, this is the return of REINFORCE++'s
    r_t = 1[t = EOS] r - beta KL_t at t = 0 (Hu 2025, arXiv 2501.03262; verl
    `use_kl_in_reward`, `kl_penalty="kl"` = k1 by default).

    Args:
        rewards: (N,) or (P, G) sequence rewards; N = P * G rows, in row-major order, match the
            rows of the log-prob tensors.
        logprobs: (N, T) log-probs of the sampled tokens under the sampling policy.
        ref_logprobs: (N, T) log-probs under the reference.
        mask: (N, T) bool, the response tokens.
        kl_coef: beta.
        kind: KL estimator ("k1" default, "k2", "k3").
        clamp: optional clamp of the per-token estimate (see `kl_estimate`).

    Returns:
        (penalised rewards, same shape as `rewards`; per-sequence KL sum, (N,)).
    """
    n = rewards.numel()
    if logprobs.dim() != 2 or logprobs.shape[0] != n:
        raise ValueError(f"logprobs must be (N, T) with N = rewards.numel() = {n}, got {tuple(logprobs.shape)}")
    kl = kl_estimate(logprobs, ref_logprobs, kind, clamp=clamp)  # (N, T)
    seq_kl = (kl * mask.to(kl.dtype)).sum(dim=-1)  # (N,)
    penalised = rewards - kl_coef * seq_kl.reshape(rewards.shape).to(rewards.dtype)
    return penalised, seq_kl
