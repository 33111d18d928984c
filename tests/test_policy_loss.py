"""Policy loss, aggregation and the KL reward penalty against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from aha.algo.advantages import grpo_advantages
from aha.algo.losses import (
    POLICY_LOSSES,
    aggregate,
    batch_divisors,
    kl_penalty_rewards,
    loss_token_mask,
    policy_loss,
)
from aha.errors import AhaError

# ----------------------------------------------------------------------------- aggregation

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
# a mask with an empty second row
MASK_EMPTY_ROW = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)

AGG_CASES = [
    # tokens 1, 2 | 4 counted
    ("token_mean", MASK, None, (1 + 2 + 4) / 3),            # every token weighs the same
    ("seq_mean_token_mean", MASK, None, ((1 + 2) / 2 + 4 / 1) / 2),  # 1.5 and 4, averaged
    ("seq_mean_token_sum_norm", MASK, None, (3 + 4) / (2 * 3)),      # default norm = T = 3, B = 2
    ("seq_mean_token_sum_norm", MASK, 10, (3 + 4) / (2 * 10)),       # fixed normaliser (Dr. GRPO)
    ("token_sum", MASK, None, 7.0),
    ("seq_mean_token_sum", MASK, None, (3 + 4) / 2),
    # an empty row: left out of seq means, but still counted in the Dr. GRPO B
    ("token_mean", MASK_EMPTY_ROW, None, 1.5),
    ("seq_mean_token_mean", MASK_EMPTY_ROW, None, 1.5),
    ("seq_mean_token_sum_norm", MASK_EMPTY_ROW, None, 3 / (2 * 3)),
    ("seq_mean_token_sum", MASK_EMPTY_ROW, None, 3.0),
    # one micro-batch: TRL 0.16's per-micro-batch token mean is the token mean
    ("micro_token_mean", MASK, None, (1 + 2 + 4) / 3),
]


@pytest.mark.parametrize("mode,mask,norm,expected", AGG_CASES)
def test_aggregate_by_hand(mode, mask, norm, expected):
    assert aggregate(LOSS, mask, mode, norm).item() == pytest.approx(expected, abs=1e-6)


# each row of LOSS/MASK as its own micro-batch, with the whole batch's counts (3 tokens; 2 rows):
# the two shares add up to the whole batch's value in AGG_CASES
SPLIT_CASES = [
    ("token_mean", 3, None, (1 + 2) / 3, 4 / 3),                  # each token / all 3 tokens
    ("seq_mean_token_mean", None, 2, 1.5 / 2, 4 / 2),             # each row's mean / both rows
    ("seq_mean_token_sum_norm", None, 2, 3 / (2 * 3), 4 / (2 * 3)),  # B = 2 rows, norm = T = 3
    ("seq_mean_token_sum", None, 2, 3 / 2, 4 / 2),
    ("token_sum", None, None, 3.0, 4.0),
]


@pytest.mark.parametrize("mode,tokens,rows,first,second", SPLIT_CASES)
def test_aggregate_micro_batch_shares_add_up(mode, tokens, rows, first, second):
    parts = [aggregate(LOSS[i:i + 1], MASK[i:i + 1], mode, None, tokens, rows).item() for i in (0, 1)]
    assert parts == pytest.approx([first, second], abs=1e-6)
    whole = dict((m, e) for m, mask, n, e in AGG_CASES if mask is MASK and n is None)[mode]
    assert sum(parts) == pytest.approx(whole, abs=1e-6)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_aggregate_all_masked_is_zero_and_differentiable(mode):
    x = torch.ones(2, 3, requires_grad=True)
    out = aggregate(x, torch.zeros(2, 3, dtype=torch.bool), mode)
    out.backward()
    assert out.item() == 0.0 and torch.equal(x.grad, torch.zeros(2, 3))


def test_aggregate_bad_mode():
    with pytest.raises(ValueError, match="token_mean"):
        aggregate(LOSS, MASK, "tokenmean")


# ----------------------------------------------------------------------------- on-policy gradient


def _leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("agg,norm", [("token_mean", None), ("seq_mean_token_mean", None),
                                      ("seq_mean_token_sum_norm", 8)])
def test_on_policy_gradient_is_vanilla_pg(agg, norm):
    # mu = 1: old = logprobs.detach(), ratio = 1; grad of the loss = grad of -agg(A * logprobs)
    g = torch.Generator().manual_seed(0)
    lp = (torch.rand(3, 4, generator=g, dtype=torch.float64) - 2).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    loss, metrics = policy_loss(lp, lp.detach(), adv, mask, agg=agg, norm_constant=norm)
    loss.backward()
    got = lp.grad.clone()
    lp2 = lp.detach().clone().requires_grad_()
    aggregate(-adv[:, None] * lp2, mask, agg, norm).backward()
    torch.testing.assert_close(got, lp2.grad, rtol=0, atol=1e-12)
    assert metrics["ratio_mean"] == pytest.approx(1.0) and metrics["clip_frac"] == 0.0
    # token_mean by hand: -A_i / (number of tokens = 9) on each valid token, 0 on padding
    if agg == "token_mean":
        expected = (-adv[:, None] / 9.0) * mask
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_on_policy_gradient_through_a_model():
    # the same statement for model parameters: a softmax policy over 5 tokens with logits theta
    theta = torch.zeros(2, 3, 5, dtype=torch.float64, requires_grad=True)
    tokens = torch.tensor([[0, 3, 1], [4, 4, 2]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([0.7, -1.3], dtype=torch.float64)

    def logprobs(t):
        return torch.log_softmax(t, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)  # (B, T)

    lp = logprobs(theta)
    loss, _ = policy_loss(lp, lp.detach(), adv, mask)
    (grad,) = torch.autograd.grad(loss, theta)
    reinforce = -(adv[:, None] * logprobs(theta) * mask).sum() / mask.sum()
    (expected,) = torch.autograd.grad(reinforce, theta)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_equal_reward_group_gives_zero_gradient():
    rewards = torch.tensor([[1.0, 1.0, 1.0]])
    adv = grpo_advantages(rewards, torch.ones(1, 3, dtype=torch.bool)).flatten()  # (3,)
    lp = _leaf([[-1.0, -2.0], [-0.5, -0.1], [-3.0, -1.0]])
    loss, _ = policy_loss(lp, lp.detach(), adv, torch.ones(3, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(lp.grad, torch.zeros(3, 2, dtype=torch.float64))


# ----------------------------------------------------------------------------- clipping

# one token per row, clip_low 0.2 (ratio >= 0.8), clip_high 0.28 (ratio <= 1.28)
CLIP_CASES = [
    # (advantage, ratio, per-token loss, d loss / d logprob (before the 1/4 token mean), clipped?)
    (1.0, 1.5, -1.28, 0.0, "high"),    # A > 0 above 1 + eps_high: clipped, no gradient
    (1.0, 0.5, -0.5, -0.5, None),      # A > 0 below 1 - eps_low: not clipped, -A * ratio
    (-1.0, 0.5, 0.8, 0.0, "low"),      # A < 0 below 1 - eps_low: clipped, no gradient
    (-1.0, 1.5, 1.5, 1.5, None),       # A < 0 above 1 + eps_high: not clipped (no dual clip)
]


def test_clipping_at_both_bounds():
    adv = torch.tensor([c[0] for c in CLIP_CASES], dtype=torch.float64)
    ratio = torch.tensor([c[1] for c in CLIP_CASES], dtype=torch.float64)
    old = torch.zeros(4, 1, dtype=torch.float64)
    lp = ratio.log()[:, None].clone().requires_grad_()  # ratio = exp(lp - 0)
    mask = torch.ones(4, 1, dtype=torch.bool)
    loss, metrics = policy_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    loss.backward()
    assert loss.item() == pytest.approx(sum(c[2] for c in CLIP_CASES) / 4, abs=1e-12)  # 0.52 / 4
    expected_grad = torch.tensor([[c[3] / 4] for c in CLIP_CASES], dtype=torch.float64)
    torch.testing.assert_close(lp.grad, expected_grad, rtol=0, atol=1e-12)
    assert metrics["clip_frac"] == 0.5
    assert metrics["clip_frac_low"] == 0.25 and metrics["clip_frac_high"] == 0.25
    assert metrics["ratio_mean"] == pytest.approx(1.0)
    assert metrics["ratio_max"] == pytest.approx(1.5)
    assert metrics["pg_loss"] == pytest.approx(0.13)


def test_dual_clip():
    # A < 0 with ratio 4 > c = 3: loss capped at -A * c = 3, no gradient; ratio 2 < c: unchanged
    adv = torch.tensor([-1.0, -1.0], dtype=torch.float64)
    lp = torch.tensor([[math.log(4.0)], [math.log(2.0)]], dtype=torch.float64, requires_grad=True)
    loss, metrics = policy_loss(lp, torch.zeros(2, 1, dtype=torch.float64), adv, torch.ones(2, 1, dtype=torch.bool),
                                clip_ratio_c=3.0)
    loss.backward()
    assert loss.item() == pytest.approx((3.0 + 2.0) / 2)
    torch.testing.assert_close(lp.grad, torch.tensor([[0.0], [2.0 / 2]], dtype=torch.float64))
    assert metrics["dual_clip_frac"] == 0.5
    with pytest.raises(ValueError):
        policy_loss(lp, lp.detach(), adv, torch.ones(2, 1, dtype=torch.bool), clip_ratio_c=0.5)


def test_metrics_ignore_padding():
    # a padded position with a huge ratio must not count in clip_frac or ratio_mean
    lp = torch.tensor([[0.0, 5.0]], requires_grad=True)
    loss, metrics = policy_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.tensor([[True, False]]))
    assert metrics["clip_frac"] == 0.0 and metrics["ratio_mean"] == 1.0 and metrics["ratio_max"] == 1.0


# ----------------------------------------------------------------------------- KL and entropy terms


def test_kl_term_in_loss():
    # on-policy, A = 0: the loss is just beta * token-mean(k3); k3 at log r = -ln2 is 0.5 - 1 + ln2
    lp = torch.full((1, 2), math.log(0.5), dtype=torch.float64, requires_grad=True)
    ref = torch.full((1, 2), math.log(0.25), dtype=torch.float64)
    mask = torch.tensor([[True, False]])
    k3 = 0.5 - 1 + math.log(2)
    loss, metrics = policy_loss(lp, lp.detach(), torch.zeros(1, dtype=torch.float64), mask,
                                ref_logprobs=ref, kl_coef=0.1, kl_estimator="k3")
    assert loss.item() == pytest.approx(0.1 * k3, abs=1e-12)
    assert metrics["kl"] == pytest.approx(k3, abs=1e-12)
    loss.backward()
    # d k3 / d logprob = 1 - r = 0.5, times beta, over 1 token; padding gets nothing
    torch.testing.assert_close(lp.grad, torch.tensor([[0.05, 0.0]], dtype=torch.float64))
    # k1, and a clamp
    _, m1 = policy_loss(lp, lp.detach(), torch.zeros(1, dtype=torch.float64), mask, ref_logprobs=ref,
                        kl_coef=0.1, kl_estimator="k1")
    assert m1["kl"] == pytest.approx(math.log(2), abs=1e-12)
    _, mc = policy_loss(lp, lp.detach(), torch.zeros(1, dtype=torch.float64), mask, ref_logprobs=ref,
                        kl_coef=0.1, kl_estimator="k1", kl_clamp=0.5)
    assert mc["kl"] == pytest.approx(0.5)


def test_kl_metric_without_coefficient_and_entropy_bonus():
    lp = torch.zeros(1, 2, requires_grad=True)
    ent = torch.tensor([[2.0, 4.0]])
    loss, metrics = policy_loss(lp, lp.detach(), torch.zeros(1), torch.ones(1, 2, dtype=torch.bool),
                                ref_logprobs=torch.zeros(1, 2), entropy=ent, entropy_coef=0.01)
    assert metrics["kl"] == 0.0 and metrics["entropy"] == 3.0
    assert loss.item() == pytest.approx(-0.01 * 3.0)
    # without ref/entropy the metrics are absent rather than made up
    _, bare = policy_loss(lp, lp.detach(), torch.zeros(1), torch.ones(1, 2, dtype=torch.bool))
    assert "kl" not in bare and "entropy" not in bare
    assert set(bare) >= {"clip_frac", "clip_frac_low", "clip_frac_high", "ratio_mean", "pg_loss"}
    assert all(isinstance(v, float) for v in bare.values())


def test_per_token_advantages_accepted():
    lp = torch.zeros(1, 2, requires_grad=True)
    loss, _ = policy_loss(lp, lp.detach(), torch.tensor([[1.0, 3.0]]), torch.ones(1, 2, dtype=torch.bool))
    assert loss.item() == pytest.approx(-2.0)


@pytest.mark.parametrize("adv", [torch.zeros(3), torch.zeros(2, 5)])
def test_bad_advantage_shape(adv):
    with pytest.raises(ValueError):
        policy_loss(torch.zeros(2, 4), torch.zeros(2, 4), adv, torch.ones(2, 4, dtype=torch.bool))


def test_registry():
    assert "vanilla" in POLICY_LOSSES
    with pytest.raises(AhaError):
        policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1, dtype=torch.bool),
                    loss_mode="nope")


# ----------------------------------------------------------------------------- KL as a reward penalty


def test_kl_penalty_rewards():
    # two sequences; row 0: k1 per token = ln2 on 2 valid tokens; row 1: 0 (policy = reference)
    rewards = torch.tensor([[1.0, 0.5]])  # (P=1, G=2)
    lp = torch.tensor([[math.log(0.5), math.log(0.5), 0.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[math.log(0.25), math.log(0.25), -9.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    out, seq_kl = kl_penalty_rewards(rewards, lp, ref, mask, kl_coef=0.1)
    assert out.shape == (1, 2)
    torch.testing.assert_close(seq_kl, torch.tensor([2 * math.log(2), 0.0]))
    torch.testing.assert_close(out, torch.tensor([[1.0 - 0.2 * math.log(2), 0.5]]))
    with pytest.raises(ValueError):
        kl_penalty_rewards(torch.zeros(3), lp, ref, mask, kl_coef=0.1)


# ----------------------------------------------------------------------------- divisors and the truncation mask

# rows: 2 tokens, 1 token, none (an empty row)
DIV_MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize("mode,tokens,rows", [
    ("token_mean", 3.0, 2.0),               # 3 counted tokens; rows: the two that have tokens
    ("seq_mean_token_mean", 3.0, 2.0),      # the empty row is left out of the mean over sequences
    ("seq_mean_token_sum", 3.0, 2.0),       # same rule as the other sequence mean
    ("token_sum", 3.0, 2.0),                # no divisor is used, the counts are still reported
    ("seq_mean_token_sum_norm", 3.0, 3.0),  # Dr. GRPO divides by every row, the empty one too
])
def test_batch_divisors_follow_each_mode(mode, tokens, rows):
    assert batch_divisors(DIV_MASK, mode) == (tokens, rows)


def test_batch_divisors_make_micro_batch_losses_add_up_to_the_batch_loss():
    # split the 3-row batch into two micro-batches: with the whole batch's divisors their losses sum
    # to the loss of the batch in one piece
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        tokens, rows = batch_divisors(DIV_MASK, mode)
        parts = sum(aggregate(loss[i:j], DIV_MASK[i:j], mode, 3, tokens, rows) for i, j in ((0, 1), (1, 3)))
        assert parts.item() == pytest.approx(aggregate(loss, DIV_MASK, mode, 3).item()), mode


def test_micro_token_mean_is_each_micro_batch_mean_over_the_micro_batch_count():
    # LOSS/MASK in two micro-batches of one row (batch_divisors gives 2 of them): row 1's mean 1.5
    # and row 2's mean 4, each divided by 2; the token mean of the whole batch would be 7 / 3
    assert batch_divisors(MASK, "micro_token_mean", micro_batch_size=1) == (3.0, 2.0)
    parts = [aggregate(LOSS[i:i + 1], MASK[i:i + 1], "micro_token_mean", None, 3.0, 2.0).item() for i in (0, 1)]
    assert parts == pytest.approx([1.5 / 2, 4 / 2])
    assert sum(parts) == pytest.approx(2.75) and sum(parts) != pytest.approx(7 / 3)
    # 3 rows in micro-batches of 2: ceil(3 / 2) = 2 micro-batches; without a size, one
    assert batch_divisors(DIV_MASK, "micro_token_mean", micro_batch_size=2) == (3.0, 2.0)
    assert batch_divisors(DIV_MASK, "micro_token_mean") == (3.0, 1.0)


def test_batch_divisors_bad_mode():
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        batch_divisors(DIV_MASK, "mean")


@pytest.mark.parametrize("mask_truncated,expected", [
    (False, [[1, 1, 0], [1, 0, 0]]),  # off: every real token counts
    (True, [[1, 1, 0], [0, 0, 0]]),   # on: the truncated second row loses all its tokens
])
def test_loss_token_mask_drops_truncated_rows_only_when_asked(mask_truncated, expected):
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    truncated = torch.tensor([False, True])
    assert loss_token_mask(mask, truncated, mask_truncated).tolist() == torch.tensor(expected).bool().tolist()
