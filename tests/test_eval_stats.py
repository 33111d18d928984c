"""pass@k against brute-force enumeration, bootstrap reproducibility, Wilson and paired intervals."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from aha.eval.stats import (
    align_by_id,
    bootstrap_ci,
    bootstrap_distribution,
    count_correct,
    default_ks,
    mean_pass_at_k,
    paired_difference,
    pass_at_k,
    pass_at_k_array,
    pass_at_k_curve,
    pass_at_k_intervals,
    wilson_interval,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (the first c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


HAND = [
    (10, 0, 1, 0.0),              # nothing correct
    (10, 3, 1, 0.3),              # pass@1 = c / n
    (4, 1, 2, 0.5),               # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (5, 2, 2, 0.7),               # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (5, 4, 2, 1.0),               # n - c = 1 < k: every pair has a correct one
    (256, 1, 128, 0.5),           # one correct of 256: in half of all 128-subsets
]


@pytest.mark.parametrize("n,c,k,expected", HAND)
def test_pass_at_k_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomial_form_for_large_n():
    # the product form agrees with exact integer binomials where those are still exact
    for n, c, k in [(256, 10, 64), (128, 50, 7), (100, 1, 99)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("args", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_arrays_curve_and_default_ks():
    n = [4, 4, 4]
    c = [0, 1, 4]
    np.testing.assert_allclose(pass_at_k_array(n, c, 2), [0.0, 0.5, 1.0])
    assert mean_pass_at_k(4, c, 2) == pytest.approx(0.5)
    assert default_ks(1) == [1]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(12) == [1, 2, 4, 8, 12]
    curve = pass_at_k_curve(4, c)
    assert list(curve) == [1, 2, 4]
    assert curve[1] == pytest.approx((0 + 0.25 + 1) / 3)
    assert curve[4] == pytest.approx(2 / 3)
    # pass@k never decreases in k
    values = list(pass_at_k_curve(16, [0, 1, 3, 7, 16]).values())
    assert all(a <= b + 1e-15 for a, b in zip(values, values[1:]))


def test_count_correct():
    records = [{"id": "a", "correct": True}, {"id": "b", "correct": False}, {"id": "a", "correct": False},
               {"id": "b", "correct": True}, {"id": "a", "correct": True}]
    ids, n, c = count_correct(records)
    assert ids == ["a", "b"] and n.tolist() == [3, 2] and c.tolist() == [2, 1]


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_reproducible_and_contains_estimate():
    rng = np.random.default_rng(7)
    values = rng.random(50)
    a = bootstrap_ci(values, n_boot=1000, seed=3)
    b = bootstrap_ci(values, n_boot=1000, seed=3)
    c = bootstrap_ci(values, n_boot=1000, seed=4)
    assert a == b
    assert a != c
    assert a.low <= a.estimate <= a.high
    assert a.estimate == pytest.approx(values.mean())
    assert a.method == "bootstrap-percentile" and a.confidence == 0.95
    # close to the normal-theory interval for a mean of 50 values
    se = values.std(ddof=1) / math.sqrt(50)
    assert a.high - a.low == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_bootstrap_chunking_is_invisible():
    # a problem set large enough to be drawn in several chunks gives the same statistic distribution
    # as a direct draw with the same generator
    values = np.arange(5000, dtype=np.float64) % 7
    boot = bootstrap_distribution(values, n_boot=1200, seed=11)
    rng = np.random.default_rng(11)
    direct = np.concatenate([values[rng.integers(0, 5000, size=(r, 5000))].mean(axis=1) for r in (800, 400)])
    np.testing.assert_allclose(boot, direct)


def test_bootstrap_degenerate_and_custom_statistic():
    ci = bootstrap_ci([1.0, 1.0, 1.0], n_boot=200)
    assert (ci.low, ci.estimate, ci.high) == (1.0, 1.0, 1.0)
    med = bootstrap_ci([1.0, 2.0, 100.0], n_boot=200, statistic=lambda a: np.median(a, axis=1))
    assert med.estimate == 2.0
    with pytest.raises(ValueError):
        bootstrap_ci([], n_boot=10)


def test_pass_at_k_intervals():
    c = [0, 1, 2, 4, 3, 0, 4, 1]
    out = pass_at_k_intervals(4, c, n_boot=500, seed=0)
    assert list(out) == [1, 2, 4]
    for k, ci in out.items():
        assert ci.estimate == pytest.approx(mean_pass_at_k(4, c, k))
        assert ci.low <= ci.estimate <= ci.high


# ----------------------------------------------------------------------------- Wilson

WILSON = [
    # (successes, trials, low, high) at 95% (z = 1.959964). The bounds are the roots in p of
    # (p_hat - p)^2 = z^2 p (1 - p) / n, the definition Wilson's closed form solves.
    (0, 10, 0.0, 0.2775328),        # p_hat = 0: upper bound z^2 / (n + z^2) = 3.8415 / 13.8415
    (10, 10, 0.7224672, 1.0),       # mirror image
    (5, 10, 0.2365931, 0.7634069),  # centre 0.5, half 1.416009 * sqrt(0.025 + 0.0096036)
    (81, 263, 0.2552885, 0.3662096),  # p_hat = 0.30798
]


@pytest.mark.parametrize("x,n,low,high", WILSON)
def test_wilson(x, n, low, high):
    ci = wilson_interval(x, n)
    assert ci.estimate == pytest.approx(x / n)
    assert ci.low == pytest.approx(low, abs=1e-6)
    assert ci.high == pytest.approx(high, abs=1e-6)


def test_wilson_bad():
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence=1.5)


# ----------------------------------------------------------------------------- paired difference


def test_paired_difference_by_hand():
    a = [1.0, 1.0, 0.0, 1.0, 0.5]
    b = [0.0, 1.0, 0.0, 0.5, 0.5]
    # d = [1, 0, 0, 0.5, 0]: mean 0.3, sd(ddof 1) = sqrt(((0.7)^2 + 3(0.3)^2 + 0.2^2)/4) = sqrt(0.2)
    res = paired_difference(a, b, n_boot=1000, seed=0)
    se = math.sqrt(0.2) / math.sqrt(5)
    assert res.difference == pytest.approx(0.3) and res.n == 5
    assert res.normal.low == pytest.approx(0.3 - 1.959964 * se, abs=1e-6)
    assert res.normal.high == pytest.approx(0.3 + 1.959964 * se, abs=1e-6)
    assert res.bootstrap.low <= 0.3 <= res.bootstrap.high
    assert res.p_value == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(0.3 / se / math.sqrt(2)))), abs=1e-9)
    assert paired_difference(a, b, n_boot=1000, seed=0) == res
    assert set(res.to_dict()) == {"difference", "n", "bootstrap", "normal", "p_value"}


def test_paired_is_tighter_than_unpaired_when_correlated():
    # b = a minus a small shift on a few problems: a very strong pairing
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a - (rng.random(200) < 0.1) * 0.2
    res = paired_difference(a, b, n_boot=500, seed=1)
    unpaired_se = math.sqrt(a.var(ddof=1) / 200 + b.var(ddof=1) / 200)
    assert (res.normal.high - res.normal.low) < 2 * 1.96 * unpaired_se / 3


def test_identical_evaluations():
    res = paired_difference([0.2, 0.4], [0.2, 0.4], n_boot=100)
    assert res.difference == 0.0 and res.p_value == 1.0 and res.normal.low == res.normal.high == 0.0


def test_align_by_id():
    ids, x, y = align_by_id({"p1": 1.0, "p2": 0.0, "p3": 1.0}, {"p3": 0.0, "p1": 1.0, "p9": 1.0})
    assert ids == ["p1", "p3"] and x.tolist() == [1.0, 1.0] and y.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError):
        align_by_id({"a": 1.0}, {"b": 1.0})
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])
