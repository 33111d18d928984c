"""Sequence-level advantage estimators for outcome rewards (pure tensor functions).

Every estimator has one signature::

    fn(rewards: Tensor (P, G), mask: BoolTensor (P, G), **options) -> Tensor (P, G)

`rewards[p, g]` is the scalar reward of sample g of prompt p (the group of prompt p is row p);
`mask[p, g]` is True where that sample exists and takes part (padding of ragged groups, dropped
samples are False). The result is one advantage per sample; the trainer broadcasts it over the
sample's tokens. Shared rules:

- masked (invalid) entries get advantage exactly 0 and never influence valid ones (all estimators);
- for the group-relative estimators (grpo, dr_grpo, rloo, reinforce_pp_baseline) a group whose
  valid rewards are all equal gets advantage exactly 0 (it carries no preference; set explicitly
  rather than left to `0 / (0 + eps)` round-off), and so does a group with a single valid sample:
  there is nothing to compare it against (verl gives such a sample mean 0 / std 1, i.e. its raw
  reward; we do not). Plain `reinforce_pp` has a batch baseline, not a group one, so neither rule
  applies to it.

Arithmetic is done in float64 and the result is cast back to `rewards.dtype`.

Registered names: `grpo`, `dr_grpo`, `rloo`, `reinforce_pp`, `reinforce_pp_baseline`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from aha.registry import Registry

AdvantageFn = Callable[..., Tensor]

# name -> estimator `fn(rewards (P, G), mask (P, G), **options) -> advantages (P, G)`
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")


# ----------------------------------------------------------------------------- helpers


def _check(rewards: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Validate shapes and return (rewards as float64, mask as bool)."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (P, G), got shape {tuple(rewards.shape)}")
    if mask.shape != rewards.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != rewards shape {tuple(rewards.shape)}")
    m = mask.to(torch.bool)  # (P, G)
    r = rewards.to(torch.float64)  # (P, G)
    if not torch.isfinite(r[m]).all():
        raise ValueError("rewards contain NaN or inf at valid (mask=True) entries")
    return torch.where(m, r, torch.zeros_like(r)), m


def _group_count_mean(r: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Per-group count of valid samples and their mean (0 for an empty group). Shapes (P, 1)."""
    n = m.sum(dim=1, keepdim=True).to(r.dtype)  # (P, 1)
    mean = (r * m).sum(dim=1, keepdim=True) / n.clamp(min=1)  # (P, 1)
    return n, mean


def _group_std(r: Tensor, m: Tensor, mean: Tensor, n: Tensor, unbiased: bool) -> Tensor:
    """Per-group standard deviation of the valid rewards, shape (P, 1).

    unbiased=True divides the squared deviations by n - 1 (Bessel's correction), which is what
    `torch.std` does by default (`correction=1`) and what TRL and verl use for GRPO; unbiased=False
    divides by n (`torch.std(..., correction=0)`, numpy's default). A group with fewer valid
    samples than the divisor needs gets std 0 (its advantages are zeroed by the caller anyway).
    """
    sq = (((r - mean) ** 2) * m).sum(dim=1, keepdim=True)  # (P, 1)
    denom = (n - 1) if unbiased else n  # (P, 1)
    return torch.where(denom > 0, sq / denom.clamp(min=1e-300), torch.zeros_like(sq)).sqrt()


def _informative(r: Tensor, m: Tensor) -> Tensor:
    """(P, 1) bool: the group has >= 2 valid samples and not all of their rewards are equal."""
    big = torch.finfo(r.dtype).max
    hi = torch.where(m, r, torch.full_like(r, -big)).amax(dim=1, keepdim=True)  # (P, 1)
    lo = torch.where(m, r, torch.full_like(r, big)).amin(dim=1, keepdim=True)  # (P, 1)
    return (m.sum(dim=1, keepdim=True) >= 2) & (hi > lo)


def _finish(adv: Tensor, m: Tensor, informative: Tensor, dtype: torch.dtype) -> Tensor:
    """Zero masked entries and uninformative groups; cast back."""
    keep = m & informative  # (P, G)
    return torch.where(keep, adv, torch.zeros_like(adv)).to(dtype)


def _batch_whiten(x: Tensor, m: Tensor, eps: float, weights: Tensor | None = None) -> Tensor:
    """(x - mu) / sqrt(var + eps) over all valid entries of the batch, shape (P, G).

    With `weights` w (e.g. token counts), mu = sum(w x) / W and
    var = sum(w (x - mu)^2) / W * W / (W - 1), W = sum(w): exactly verl's `masked_whiten` applied
    to a sequence-level value repeated on each of the sequence's w tokens. Without weights every
    sample counts once (w = 1). Fewer than two units of weight -> zeros.
    """
    w = m.to(x.dtype) if weights is None else weights.to(x.dtype) * m  # (P, G)
    total = w.sum()
    if total <= 1:
        return torch.zeros_like(x)
    mu = (w * x).sum() / total
    var = (w * (x - mu) ** 2).sum() / total * (total / (total - 1))  # unbiased, as verl
    return (x - mu) / torch.sqrt(var + eps)


# ----------------------------------------------------------------------------- estimators


@ADVANTAGES.register("grpo")
def grpo_advantages(rewards: Tensor, mask: Tensor, *, scale: str = "group", eps: float = 1e-6,
                    unbiased_std: bool = True) -> Tensor:
    """GRPO: reward minus the group mean, divided by a standard deviation.

    A_i = (r_i - mean_group(r)) / (std + eps)

    Source: DeepSeekMath (Shao et al. 2024, arXiv 2402.03300, sec. 4.1.2, outcome supervision);
    verl `compute_grpo_outcome_advantage` (eps 1e-6, `torch.std`, i.e. unbiased); TRL
    `GRPOTrainer` (`scale_rewards`, eps 1e-4, unbiased `.std()`). REA-RL uses eps 1e-4.

    Args:
        rewards: (P, G) reward of each sample, one row per prompt group.
        mask: (P, G) bool, True for valid samples.
        scale: what the centred reward is divided by.
            "group" (default): the std of the group's valid rewards (GRPO).
            "batch": the std of all valid rewards of the batch (TRL `scale_rewards="batch"`, the
                group-mean/batch-std mix of Lite-PPO, Liu et al. 2025, "Tricks or Traps? A Deep
                Dive into RL for LLM Reasoning").
            "none": nothing, i.e. Dr. GRPO (Liu et al. 2025, arXiv 2503.20783).
        eps: added to the std before dividing.
        unbiased_std: True divides by n - 1 (torch/TRL/verl default); False divides by n.

    Returns:
        (P, G) advantages, same dtype as `rewards`.
    """
    r, m = _check(rewards, mask)
    n, mean = _group_count_mean(r, m)  # (P, 1)
    centred = r - mean  # (P, G)
    if scale == "group":
        std = _group_std(r, m, mean, n, unbiased_std)  # (P, 1)
        adv = centred / (std + eps)
    elif scale == "batch":
        valid = r[m]  # (N,)
        if valid.numel() >= 2:
            std = valid.std(correction=1 if unbiased_std else 0)
        else:
            std = r.new_zeros(())
        adv = centred / (std + eps)
    elif scale == "none":
        adv = centred
    else:
        raise ValueError(f"grpo: scale must be 'group', 'batch' or 'none', got {scale!r}")
    return _finish(adv, m, _informative(r, m), rewards.dtype)


@ADVANTAGES.register("dr_grpo")
def dr_grpo_advantages(rewards: Tensor, mask: Tensor) -> Tensor:
    """Dr. GRPO: reward minus the group mean, without dividing by the std.

    A_i = r_i - mean_group(r)

    Removing the std avoids GRPO's "difficulty bias" (groups with small spread get large updates).
    Source: Liu et al. 2025, "Understanding R1-Zero-Like Training" (arXiv 2503.20783), eq. for
    \\hat A_i; `sail-sg/understand-r1-zero` (std normalisation off).

    Args:
        rewards: (P, G) reward of each sample, one row per prompt group.
        mask: (P, G) bool, True for valid samples.

    Returns:
        (P, G) advantages, same dtype as `rewards`.
    """
    return grpo_advantages(rewards, mask, scale="none")


@ADVANTAGES.register("rloo")
def rloo_advantages(rewards: Tensor, mask: Tensor, *, normalize: bool = False, eps: float = 1e-8) -> Tensor:
    """RLOO: each sample's baseline is the mean reward of the *other* samples of its group.

    A_i = r_i - (1 / (n - 1)) * sum_{j != i} r_j  =  n / (n - 1) * (r_i - mean_group(r))

    with n the number of valid samples in the group (n = 1 -> 0).
    Source: Kool et al. 2019 ("Buy 4 REINFORCE samples, get a baseline for free"); Ahmadian et al.
    2024 (arXiv 2402.14740); verl `compute_rloo_outcome_advantage`; TRL `RLOOTrainer`.

    Args:
        rewards: (P, G) reward of each sample, one row per prompt group.
        mask: (P, G) bool, True for valid samples.
        normalize: also whiten the advantages over all valid samples of the batch,
            (A - mean) / sqrt(var + eps) with the unbiased variance (TRL `RLOOTrainer`
            `normalize_advantages`, off by default there too).
        eps: added to the variance when `normalize`.

    Returns:
        (P, G) advantages, same dtype as `rewards`.
    """
    r, m = _check(rewards, mask)
    n, mean = _group_count_mean(r, m)  # (P, 1)
    # n / (n - 1) (r - mean) equals r - mean of the others; n = 1 rows are zeroed by _finish
    adv = (r - mean) * (n / (n - 1).clamp(min=1))  # (P, G)
    informative = _informative(r, m)
    adv = torch.where(m & informative, adv, torch.zeros_like(adv))
    if normalize:
        adv = _batch_whiten(adv, m, eps)
    return _finish(adv, m, informative, rewards.dtype)


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp_advantages(rewards: Tensor, mask: Tensor, *, group_baseline: bool = False, eps: float = 1e-8,
                            token_counts: Tensor | None = None) -> Tensor:
    """REINFORCE++: the reward whitened over the whole batch of valid samples.

    A_i = (x_i - mu_batch) / sqrt(var_batch + eps),   x_i = r_i  (or r_i - mean_group(r) with
    `group_baseline`, which is REINFORCE++-baseline), mu and var taken over all valid samples of the
    batch (var unbiased). With an outcome reward, gamma = 1 and the KL kept out of the reward, the
    per-token return G_t equals r for every token, so this is verl's per-token formula collapsed to
    one value per sequence.

    Source: Hu 2025, "REINFORCE++" (arXiv 2501.03262); verl
    `compute_reinforce_plus_plus_outcome_advantage` and
    `compute_reinforce_plus_plus_baseline_outcome_advantage` (`masked_whiten`, eps 1e-8 inside
    the square root); used by Logic-RL. ProRL v2 uses the baseline form.

    Unlike GRPO, a group whose rewards are all equal is *not* zeroed here when `group_baseline` is
    False: the batch mean is the baseline, so such a group still carries signal relative to other
    groups. With `group_baseline` it is zeroed (its centred rewards are 0 before whitening, and
    whitening would otherwise shift it to -mu/sigma).

    Args:
        rewards: (P, G) reward of each sample, one row per prompt group.
        mask: (P, G) bool, True for valid samples.
        group_baseline: subtract each group's mean before whitening (REINFORCE++-baseline).
        eps: added to the variance inside the square root.
        token_counts: optional (P, G) number of response tokens of each sample. verl whitens over
            tokens, so each sample weighs as many times as it has tokens; pass the counts to
            reproduce that exactly. Default: every valid sample weighs 1.

    Returns:
        (P, G) advantages, same dtype as `rewards`.
    """
    r, m = _check(rewards, mask)
    if token_counts is not None and token_counts.shape != r.shape:
        raise ValueError(f"token_counts shape {tuple(token_counts.shape)} != rewards shape {tuple(r.shape)}")
    if group_baseline:
        n, mean = _group_count_mean(r, m)  # (P, 1)
        informative = _informative(r, m)  # (P, 1)
        x = torch.where(m & informative, r - mean, torch.zeros_like(r))  # (P, G)
    else:
        informative = torch.ones((r.shape[0], 1), dtype=torch.bool, device=r.device)
        x = r
    adv = _batch_whiten(x, m, eps, token_counts)  # (P, G)
    return _finish(adv, m, informative, rewards.dtype)


@ADVANTAGES.register("reinforce_pp_baseline")
def reinforce_pp_baseline_advantages(rewards: Tensor, mask: Tensor, *, eps: float = 1e-8,
                                     token_counts: Tensor | None = None) -> Tensor:
    """REINFORCE++-baseline: `reinforce_pp` with `group_baseline=True` (see there for the formula).

    Args:
        rewards: (P, G) reward of each sample, one row per prompt group.
        mask: (P, G) bool, True for valid samples.
        eps: added to the variance inside the square root.
        token_counts: optional (P, G) token counts to weigh samples as verl does.

    Returns:
        (P, G) advantages, same dtype as `rewards`.
    """
    return reinforce_pp_advantages(rewards, mask, group_baseline=True, eps=eps, token_counts=token_counts)
