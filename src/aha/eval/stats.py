"""Statistics of evaluations: unbiased pass@k, bootstrap and Wilson intervals, paired differences.

Conventions: an evaluation samples n completions for each of a set of problems and counts c
correct ones per problem. Figures are averaged over problems (every problem weighs the same), and
uncertainty is about the choice of problems, so bootstraps resample problems, never samples.
Everything random takes a seed (numpy `default_rng`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

ArrayLike = Sequence[float] | np.ndarray

# A bootstrap draws at most this many indices per chunk, bounding memory for large problem sets.
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    estimate: the statistic on the full data. low, high: the interval bounds.
    confidence: the nominal coverage (e.g. 0.95). method: how the interval was made
    ("bootstrap-percentile", "wilson", "normal").
    """

    estimate: float
    low: float
    high: float
    confidence: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}]"


# ----------------------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem: the chance that k of its n samples, drawn without
    replacement, contain at least one of the c correct ones.

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i),   1 if n - c < k.

    The product form avoids the huge binomials. It equals the average of "any correct" over all
    C(n, k) subsets of size k, i.e. the limit of resampling k of the n samples without replacement.
    Source: Chen et al. 2021, "Evaluating Large Language Models Trained on Code" (arXiv 2107.03374,
    eq. 1 and Fig. 3); `openai/human-eval` `estimate_pass_at_k`.

    Args:
        n: samples drawn for the problem (n >= 1).
        c: correct samples among them (0 <= c <= n).
        k: subset size (1 <= k <= n).
    """
    _check_nck(n, c, k)
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_array(n: ArrayLike | int, c: ArrayLike, k: int) -> np.ndarray:
    """`pass_at_k` for many problems at once.

    Args:
        n: (M,) samples per problem, or one int for all.
        c: (M,) correct samples per problem.
        k: subset size, 1 <= k <= min(n).

    Returns:
        (M,) float64 array of per-problem pass@k.
    """
    c_arr = np.asarray(c, dtype=np.int64)  # (M,)
    n_arr = np.broadcast_to(np.asarray(n, dtype=np.int64), c_arr.shape)  # (M,)
    out = np.empty(c_arr.shape, dtype=np.float64)
    for i, (ni, ci) in enumerate(zip(n_arr.tolist(), c_arr.tolist())):
        out[i] = pass_at_k(ni, ci, k)
    return out


def mean_pass_at_k(n: ArrayLike | int, c: ArrayLike, k: int) -> float:
    """pass@k averaged over problems (each problem weighs the same). Arguments as `pass_at_k_array`."""
    values = pass_at_k_array(n, c, k)
    if values.size == 0:
        raise ValueError("no problems to average over")
    return float(values.mean())


def default_ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... (powers of two below n) and n itself: the points of a pass@k curve."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ks = []
    k = 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks


def pass_at_k_curve(n: ArrayLike | int, c: ArrayLike, ks: Iterable[int] | None = None) -> dict[int, float]:
    """Mean pass@k for each k, all from one set of n samples per problem (as ProRL draws n = 256
    once and reads every smaller k off it).

    Args:
        n: (M,) samples per problem, or one int.
        c: (M,) correct samples per problem.
        ks: the k values; default `default_ks(min(n))`.

    Returns:
        {k: mean pass@k} in increasing k.
    """
    n_min = int(np.min(n))
    ks = default_ks(n_min) if ks is None else sorted(set(int(k) for k in ks))
    return {k: mean_pass_at_k(n, c, k) for k in ks}


def pass_at_k_all(n: ArrayLike | int, c: ArrayLike, k_max: int | None = None) -> np.ndarray:
    """Unbiased pass@k of every problem for every k = 1 .. k_max at once (the full curve).

    Uses C(n - c, k) / C(n, k) = prod_{j=0}^{k-1} (n - c - j) / (n - j), a running product over k,
    so pass@k = 1 - cumprod(...)[k - 1]; a factor is 0 once n - c - j <= 0 (then pass@k = 1). Equals
    `pass_at_k(n_i, c_i, k)` for each problem and k (the same estimator as Chen et al. 2021).

    Args:
        n: (M,) samples per problem, or one int. c: (M,) correct samples per problem.
        k_max: the largest k, 1 <= k_max <= min(n); default min(n).

    Returns:
        (M, k_max) float64 array; column k - 1 holds pass@k.
    """
    c_arr = np.asarray(c, dtype=np.int64)  # (M,)
    n_arr = np.broadcast_to(np.asarray(n, dtype=np.int64), c_arr.shape)  # (M,)
    if c_arr.ndim != 1 or c_arr.size == 0:
        raise ValueError(f"pass_at_k_all needs a non-empty 1-D array of counts, got shape {c_arr.shape}")
    n_min = int(n_arr.min())
    k_max = n_min if k_max is None else int(k_max)
    if (n_arr < 1).any() or (c_arr < 0).any() or (c_arr > n_arr).any():
        raise ValueError("pass@k needs n >= 1 and 0 <= c <= n for every problem")
    if not 1 <= k_max <= n_min:
        raise ValueError(f"pass_at_k_all needs 1 <= k_max <= min(n) = {n_min}, got {k_max}")
    j = np.arange(k_max, dtype=np.float64)[None, :]  # (1, K)
    fails = (n_arr - c_arr).astype(np.float64)[:, None]  # (M, 1)
    factors = np.clip((fails - j) / (n_arr.astype(np.float64)[:, None] - j), 0.0, 1.0)  # (M, K)
    return 1.0 - np.cumprod(factors, axis=1)


def pass_at_k_full_curve(n: ArrayLike | int, c: ArrayLike, k_max: int | None = None) -> dict[int, float]:
    """Mean pass@k over problems for every k = 1 .. k_max (default min(n)): {k: value}.

    Only the largest k is ever sampled; every smaller k is read off the same samples with the
    unbiased estimator (`pass_at_k_all`), as ProRL and seed 003 draw their pass@k curves.
    """
    values = pass_at_k_all(n, c, k_max).mean(axis=0)  # (K,)
    return {k + 1: float(v) for k, v in enumerate(values.tolist())}


def pass_at_k_intervals(n: ArrayLike | int, c: ArrayLike, ks: Iterable[int] | None = None,
                        n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict[int, Interval]:
    """Mean pass@k for each k with a bootstrap interval over problems (see `bootstrap_ci`).

    Arguments as `pass_at_k_curve`, plus the bootstrap settings. Every k uses the same resampled
    problem sets (the same seed), so the intervals of neighbouring k are comparable.
    """
    n_min = int(np.min(n))
    ks = default_ks(n_min) if ks is None else sorted(set(int(k) for k in ks))
    return {k: bootstrap_ci(pass_at_k_array(n, c, k), n_boot=n_boot, confidence=confidence, seed=seed)
            for k in ks}


HISTOGRAM_BINS = 10


def pass1_histogram(accuracies: Any, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Histogram of per-problem pass@1 (c / n per problem): `bins` equal bins over [0, 1] (the last
    one closed, so 1.0 falls in it), plus how many problems are never (0 of n) and always (n of n)
    solved. {"edges": [bins + 1 floats], "counts": [bins ints], "never_solved": int, "always_solved": int}."""
    x = np.asarray(accuracies, dtype=np.float64)
    counts, edges = np.histogram(x, bins=bins, range=(0.0, 1.0))
    return {"edges": [round(float(e), 10) for e in edges], "counts": [int(v) for v in counts],
            "never_solved": int((x == 0).sum()), "always_solved": int((x == 1).sum())}


def _check_nck(n: int, c: int, k: int) -> None:
    if n < 1:
        raise ValueError(f"pass@k needs n >= 1 samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")


def count_correct(records: Iterable[Mapping[str, Any]], id_key: str = "id",
                  correct_key: str = "correct") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Group per-sample records by problem and count samples and correct ones.

    Args:
        records: dicts with at least `id_key` (problem id) and `correct_key` (truthy if correct).
        id_key, correct_key: the keys to read.

    Returns:
        (ids in first-seen order, n (M,) int array, c (M,) int array).
    """
    n: dict[str, int] = {}
    c: dict[str, int] = {}
    for r in records:
        key = str(r[id_key])
        n[key] = n.get(key, 0) + 1
        c[key] = c.get(key, 0) + int(bool(r.get(correct_key)))
    ids = list(n)
    return ids, np.array([n[i] for i in ids], dtype=np.int64), np.array([c[i] for i in ids], dtype=np.int64)


# ----------------------------------------------------------------------------- intervals


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def bootstrap_distribution(values: ArrayLike, n_boot: int = 2000, seed: int = 0,
                           statistic: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The bootstrap distribution of a statistic over problems (resampling with replacement).

    Args:
        values: (M,) one value per problem (e.g. per-problem accuracy or pass@k).
        n_boot: number of bootstrap resamples.
        seed: seed of numpy's `default_rng`; the same seed gives the same resamples.
        statistic: maps an (R, M) array of resampled values to (R,) statistics; default the row
            mean.

    Returns:
        (n_boot,) float64 array.
    """
    x = np.asarray(values, dtype=np.float64)  # (M,)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap needs a non-empty 1-D array of per-problem values, got shape {x.shape}")
    stat = statistic or (lambda a: a.mean(axis=1))
    rng = np.random.default_rng(seed)
    m = x.size
    rows = max(1, _CHUNK_ELEMENTS // m)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        r = min(rows, n_boot - start)
        idx = rng.integers(0, m, size=(r, m))  # (r, M)
        out[start:start + r] = stat(x[idx])  # (r,)
    return out


def bootstrap_ci(values: ArrayLike, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
                 statistic: Callable[[np.ndarray], np.ndarray] | None = None) -> Interval:
    """Percentile bootstrap interval of the mean (or `statistic`) over problems.

    The interval is [q_{a/2}, q_{1-a/2}] of the bootstrap distribution, a = 1 - confidence
    (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13, percentile method;
    quantiles by numpy's default linear interpolation). The estimate is the statistic on the data.

    Args:
        values: (M,) one value per problem.
        n_boot: resamples. confidence: nominal coverage. seed: numpy seed.
        statistic: (R, M) -> (R,), default row mean.
    """
    x = np.asarray(values, dtype=np.float64)
    boot = bootstrap_distribution(x, n_boot=n_boot, seed=seed, statistic=statistic)
    alpha = 1.0 - confidence
    _z(confidence)  # validates the range
    low, high = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    estimate = float((statistic or (lambda a: a.mean(axis=1)))(x[None, :])[0])
    return Interval(estimate, float(low), float(high), confidence, "bootstrap-percentile")


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion.

    With p = x / n and z the normal quantile of (1 + confidence) / 2:
        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
    Source: Wilson 1927 (JASA 22:209); Brown, Cai & DasGupta 2001 (Stat. Sci. 16:101).
    Unlike the normal (Wald) interval it stays inside [0, 1] and is sensible at p = 0 or 1.
    The estimate reported is p itself (not the centre).

    Args:
        successes: x, 0 <= x <= n. trials: n >= 1. confidence: nominal coverage.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"wilson_interval needs 0 <= successes <= trials, trials >= 1; got {successes}/{trials}")
    z = _z(confidence)
    n = float(trials)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), confidence, "wilson")


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over the problems both evaluations share, with two intervals.

    n: number of paired problems. bootstrap: percentile interval from resampling problems
    (both evaluations keep their pairing). normal: mean +- z * sd(d) / sqrt(n), sd with ddof 1.
    p_value: two-sided p-value of the normal approximation (H0: mean difference 0).
    """

    difference: float
    n: int
    bootstrap: Interval
    normal: Interval
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {"difference": self.difference, "n": self.n, "bootstrap": self.bootstrap.to_dict(),
                "normal": self.normal.to_dict(), "p_value": self.p_value}


def paired_difference(a: ArrayLike, b: ArrayLike, n_boot: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> PairedDifference:
    """Difference between two evaluations of the same problems (a minus b), with intervals.

    d_i = a_i - b_i per problem (e.g. per-problem accuracy = c_i / n_i, or per-problem pass@k).
    Paired bootstrap: resample problems with replacement, take mean(d) (percentile interval).
    Normal approximation: mean(d) +- z * s_d / sqrt(M) with s_d the sample std (ddof 1), the
    paired t-interval with a normal quantile; p = 2 (1 - Phi(|mean(d)| / (s_d / sqrt(M)))).
    Pairing removes the between-problem variance that two independent intervals would double
    count (Miller 2024, "Adding Error Bars to Evals", arXiv 2411.00640, on paired differences).

    Args:
        a, b: (M,) per-problem values of the two evaluations, aligned (use `align_by_id` for dicts).
        n_boot, confidence, seed: bootstrap settings.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired_difference needs two 1-D arrays of the same length, got {x.shape} and {y.shape}")
    d = x - y  # (M,)
    m = d.size
    mean = float(d.mean())
    boot = bootstrap_ci(d, n_boot=n_boot, confidence=confidence, seed=seed)
    z = _z(confidence)
    se = float(d.std(ddof=1) / math.sqrt(m)) if m > 1 else 0.0
    normal = Interval(mean, mean - z * se, mean + z * se, confidence, "normal")
    if se > 0:
        p = 2.0 * (1.0 - NormalDist().cdf(abs(mean) / se))
    else:
        p = 1.0 if mean == 0 else 0.0
    return PairedDifference(mean, m, boot, normal, p)


def align_by_id(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair two {problem id: value} maps on their shared ids (sorted), for `paired_difference`.

    Returns (ids, a values (M,), b values (M,)). Raises ValueError if no id is shared.
    """
    ids = sorted(set(a) & set(b))
    if not ids:
        raise ValueError("the two evaluations share no problem ids")
    return ids, np.array([a[i] for i in ids], dtype=np.float64), np.array([b[i] for i in ids], dtype=np.float64)


# ----------------------------------------------------------------------------- regression


def ols(x: ArrayLike, y: ArrayLike, names: Sequence[str]) -> list[dict[str, float | str]]:
    """Ordinary least squares y = X b, with classical standard errors.

    b = argmin |y - X b|^2 (numpy lstsq); s^2 = RSS / (m - p); se = sqrt(diag(s^2 (X'X)^-1));
    t = b / se; two-sided p from the normal distribution (no scipy; with hundreds of problems the
    t distribution is indistinguishable). A column that the others determine exactly gets NaN
    standard errors.

    Args:
        x: (m, p) design matrix. y: (m,) responses. names: p column names.

    Returns:
        one {"variable", "coef", "std_err", "t", "p_value"} per column, in column order.
    """
    xm = np.asarray(x, dtype=np.float64)  # (m, p)
    yv = np.asarray(y, dtype=np.float64)  # (m,)
    m, p = xm.shape
    if len(names) != p or yv.shape != (m,):
        raise ValueError(f"ols needs X (m, p), y (m,) and p names; got {xm.shape}, {yv.shape}, {len(names)}")
    beta, _, rank, _ = np.linalg.lstsq(xm, yv, rcond=None)  # (p,)
    dof = m - p
    nan = float("nan")
    if rank < p or dof <= 0:
        se = np.full(p, nan)
    else:
        resid = yv - xm @ beta
        s2 = float(resid @ resid) / dof
        se = np.sqrt(np.clip(np.diag(s2 * np.linalg.inv(xm.T @ xm)), 0.0, None))
    rows: list[dict[str, float | str]] = []
    for name, b, e in zip(names, beta.tolist(), se.tolist()):
        t = b / e if e and math.isfinite(e) else nan
        pv = 2.0 * (1.0 - NormalDist().cdf(abs(t))) if math.isfinite(t) else nan
        rows.append({"variable": str(name), "coef": float(b), "std_err": float(e), "t": float(t), "p_value": pv})
    return rows
