"""Per-token estimators of KL(pi || pi_ref) from log-probabilities of sampled tokens.

Tokens are sampled from the policy q = pi (the one being trained, or the rollout policy); p =
pi_ref is the reference. With log r = log p(x) - log q(x) = ref_logprobs - logprobs, Schulman's
estimators of KL[q || p] = E_{x~q}[log q(x)/p(x)] are (J. Schulman, "Approximating KL
Divergence", 2020, http://joschu.net/blog/kl-approx.html):

    k1 = -log r                      unbiased, high variance, can be negative per sample
    k2 = 1/2 (log r)^2               biased (its mean is an f-divergence that agrees with KL to
                                     second order when p ~ q), low variance, >= 0
    k3 = (r - 1) - log r             unbiased (E_q[r] = 1), low variance, >= 0

Names used elsewhere: verl `kl`/`k1`, `mse`/`k2`, `low_var_kl`/`k3`; TRL's GRPO KL term is k3;
nano-aha-moment and Logic-RL use k3 (Logic-RL clamps it to [-10, 10], verl also clamps the log
ratio to [-20, 20] before exponentiating).

Gradients (w.r.t. logprobs, with ref fixed): k1 -> 1, k2 -> logprobs - ref_logprobs,
k3 -> 1 - r. Only the value is "unbiased"; which gradient a loss term gets depends on the
estimator chosen, as with verl and TRL.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from aha.registry import Registry

KLFn = Callable[[Tensor, Tensor], Tensor]

# name -> elementwise estimator `fn(logprobs, ref_logprobs) -> kl` (any shape, same shape out)
KL_ESTIMATORS: Registry[KLFn] = Registry("KL estimator")

# verl clamps the log ratio of low_var_kl before exp; keeping it avoids inf (and NaN gradients)
# when the policy puts almost no mass where the reference puts a lot.
K3_LOG_RATIO_LIMIT = 20.0


@KL_ESTIMATORS.register("k1")
def k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1 = log q(x) - log p(x) = logprobs - ref_logprobs (elementwise, any shape)."""
    return logprobs - ref_logprobs


@KL_ESTIMATORS.register("k2")
def k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k2 = 1/2 (log p(x) - log q(x))^2 (elementwise, any shape)."""
    return 0.5 * (ref_logprobs - logprobs) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 = exp(log r) - log r - 1 with log r = ref_logprobs - logprobs clamped to +-20 (elementwise)."""
    log_r = (ref_logprobs - logprobs).clamp(-K3_LOG_RATIO_LIMIT, K3_LOG_RATIO_LIMIT)
    return torch.exp(log_r) - log_r - 1.0


# the names verl's `kl_penalty` / `kl_loss_type` uses for the same estimators
KL_ESTIMATORS.register("kl")(k1)
KL_ESTIMATORS.register("mse")(k2)
KL_ESTIMATORS.register("low_var_kl")(k3)


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3", clamp: float | None = None) -> Tensor:
    """Per-token KL(pi || pi_ref) estimate.

    Args:
        logprobs: (B, T) (or any shape) log pi(x_t) of the sampled tokens under the policy the
            tokens were sampled from (or the policy being trained).
        ref_logprobs: same shape, log pi_ref(x_t) of the same tokens under the reference.
        kind: "k1", "k2" or "k3" (aliases "kl", "mse", "low_var_kl"); see the module docstring.
        clamp: if given, the estimate is clamped to [-clamp, clamp] (Logic-RL / verl clamp k3 at
            10). None (default) leaves it unclamped.

    Returns:
        Tensor of the same shape as `logprobs`: the per-token estimate. Padding positions are not
        special-cased here; mask them in the caller.
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs shape {tuple(logprobs.shape)} != ref_logprobs shape "
                         f"{tuple(ref_logprobs.shape)}")
    kl = KL_ESTIMATORS.get(kind)(logprobs, ref_logprobs)
    if clamp is not None:
        kl = kl.clamp(-clamp, clamp)
    return kl
