"""KL estimators: hand values at single points, exact expectations on small categoricals, and a seeded
Monte-Carlo check (Schulman 2020: k1 and k3 unbiased for KL(q || p), k2 biased but close)."""

from __future__ import annotations

import math

import pytest
import torch

from aha.algo.kl import KL_ESTIMATORS, kl_estimate
from aha.errors import AhaError

LN2 = math.log(2.0)

POINTS = [
    # (q(x), p(x)) -> k1, k2, k3, with log r = log p - log q
    # q = 0.5, p = 0.25: log r = -ln2, r = 1/2
    (0.5, 0.25, LN2, 0.5 * LN2 ** 2, 0.5 - 1 + LN2),
    # q = 0.25, p = 0.5: log r = ln2, r = 2
    (0.25, 0.5, -LN2, 0.5 * LN2 ** 2, 2 - 1 - LN2),
    # equal probabilities: every estimator is 0
    (0.3, 0.3, 0.0, 0.0, 0.0),
    # q = 0.1, p = 0.8: log r = ln 8, r = 8
    (0.1, 0.8, -math.log(8), 0.5 * math.log(8) ** 2, 8 - 1 - math.log(8)),
]


@pytest.mark.parametrize("q,p,e1,e2,e3", POINTS)
def test_hand_values(q, p, e1, e2, e3):
    lq = torch.tensor([[math.log(q)]], dtype=torch.float64)
    lp = torch.tensor([[math.log(p)]], dtype=torch.float64)
    for kind, expected in (("k1", e1), ("k2", e2), ("k3", e3)):
        assert kl_estimate(lq, lp, kind).item() == pytest.approx(expected, abs=1e-12), kind


def test_aliases_are_the_same_functions():
    assert KL_ESTIMATORS.get("kl") is KL_ESTIMATORS.get("k1")
    assert KL_ESTIMATORS.get("mse") is KL_ESTIMATORS.get("k2")
    assert KL_ESTIMATORS.get("low_var_kl") is KL_ESTIMATORS.get("k3")


PAIRS = [
    # (q = policy, p = reference) over a small support
    ([0.5, 0.3, 0.2], [0.4, 0.4, 0.2]),      # close distributions: k2 close to KL
    ([0.7, 0.2, 0.1], [0.1, 0.3, 0.6]),      # far apart: k2 visibly biased
    ([0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]),
]


def _exact_kl(q, p):
    return sum(qi * math.log(qi / pi) for qi, pi in zip(q, p))


@pytest.mark.parametrize("q,p", PAIRS)
def test_exact_expectations(q, p):
    # E_q[k] = sum_x q(x) k(x): k1 and k3 equal KL(q||p); k2 does not in general
    lq = torch.tensor(q, dtype=torch.float64).log()
    lp = torch.tensor(p, dtype=torch.float64).log()
    qt = torch.tensor(q, dtype=torch.float64)
    kl = _exact_kl(q, p)
    assert (qt * kl_estimate(lq, lp, "k1")).sum().item() == pytest.approx(kl, abs=1e-12)
    assert (qt * kl_estimate(lq, lp, "k3")).sum().item() == pytest.approx(kl, abs=1e-12)
    e2 = (qt * kl_estimate(lq, lp, "k2")).sum().item()
    assert e2 != pytest.approx(kl, abs=1e-6)


def test_k2_bias_small_when_close():
    # first pair: KL = 0.5 ln 1.25 + 0.3 ln 0.75 = 0.0252672,
    # E[k2] = 0.5 (0.5 ln(1.25)^2 + 0.3 ln(0.75)^2) = 0.0248624 (within 2%)
    q, p = PAIRS[0]
    lq = torch.tensor(q, dtype=torch.float64).log()
    lp = torch.tensor(p, dtype=torch.float64).log()
    e2 = (torch.tensor(q, dtype=torch.float64) * kl_estimate(lq, lp, "k2")).sum().item()
    assert _exact_kl(q, p) == pytest.approx(0.0252672, abs=1e-7)
    assert e2 == pytest.approx(0.0248624, abs=1e-7)


@pytest.mark.parametrize("q,p", PAIRS)
def test_monte_carlo_means(q, p):
    # sample tokens from q, average each estimator; k1/k3 land within 4 standard errors of KL
    g = torch.Generator().manual_seed(1234)
    n = 200_000
    x = torch.multinomial(torch.tensor(q, dtype=torch.float64), n, replacement=True, generator=g)  # (n,)
    lq = torch.tensor(q, dtype=torch.float64).log()[x]
    lp = torch.tensor(p, dtype=torch.float64).log()[x]
    kl = _exact_kl(q, p)
    for kind in ("k1", "k3"):
        est = kl_estimate(lq, lp, kind)
        se = est.std().item() / math.sqrt(n)
        assert abs(est.mean().item() - kl) < 4 * se, kind
    # k3 is the low-variance one
    assert kl_estimate(lq, lp, "k3").var() < kl_estimate(lq, lp, "k1").var()


def test_k2_k3_nonnegative():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    assert (kl_estimate(a, b, "k2") >= 0).all()
    assert (kl_estimate(a, b, "k3") >= 0).all()


def test_clamp_option():
    # log r = 5: k3 = e^5 - 6 = 142.41; Logic-RL clamps it to 10
    lq, lp = torch.tensor([0.0]), torch.tensor([5.0])
    assert kl_estimate(lq, lp, "k3").item() == pytest.approx(math.exp(5) - 6, rel=1e-6)
    assert kl_estimate(lq, lp, "k3", clamp=10.0).item() == 10.0
    # k1 = -5 is clamped from below too
    assert kl_estimate(lq, lp, "k1", clamp=2.0).item() == -2.0


def test_k3_log_ratio_limit_keeps_it_finite():
    # log r = 200 would overflow exp in float32; the +-20 limit gives e^20 - 21 and a finite gradient
    lq = torch.tensor([0.0], requires_grad=True)
    out = kl_estimate(lq, torch.tensor([200.0]), "k3")
    assert out.item() == pytest.approx(math.exp(20) - 21, rel=1e-5)
    out.sum().backward()
    assert torch.isfinite(lq.grad).all()


def test_gradients():
    # d/dlogq: k1 -> 1, k2 -> logq - logp, k3 -> 1 - r
    lp = torch.tensor([math.log(0.25)], dtype=torch.float64)
    for kind, expected in (("k1", 1.0), ("k2", math.log(0.5) - math.log(0.25)), ("k3", 1 - 0.5)):
        lq = torch.tensor([math.log(0.5)], dtype=torch.float64, requires_grad=True)
        kl_estimate(lq, lp, kind).sum().backward()
        assert lq.grad.item() == pytest.approx(expected, abs=1e-12), kind


def test_shape_mismatch_and_unknown_kind():
    with pytest.raises(ValueError):
        kl_estimate(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(AhaError, match="valid names"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k4")
