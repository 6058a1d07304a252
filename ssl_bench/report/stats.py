"""The statistics of `ssl-bench table`: Student t distribution, a confidence interval of the mean
and the paired t-test, in plain Python (no scipy).

The t distribution with `df` degrees of freedom has the CDF (Abramowitz & Stegun 26.7.1, 26.5.27)

    F(t; df) = 1 - I_x(df/2, 1/2) / 2  for t >= 0,  x = df / (df + t^2),   F(-t; df) = 1 - F(t; df)

with I_x(a, b) the regularised incomplete beta function, evaluated by its continued fraction
(A&S 26.5.8; modified Lentz's method as in Numerical Recipes, 3rd ed., section 6.4). The quantile
is the root of F(t; df) = p, found by bisection. Every function is deterministic: the same input
gives the same float on the same platform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_CF_MAX_ITERATIONS = 500
_CF_EPSILON = 1e-15
_CF_TINY = 1e-300
_BISECTION_STEPS = 200


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b) (A&S 26.5.8), by the modified Lentz method."""
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    fraction = d
    for m in range(1, _CF_MAX_ITERATIONS + 1):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # even step d_{2m}
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),  # odd step d_{2m+1}
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            fraction *= d * c
        if abs(d * c - 1.0) < _CF_EPSILON:
            break
    return fraction


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b) for 0 <= x <= 1 and a, b > 0.

    x^a (1-x)^b / (a B(a, b)) times the continued fraction of A&S 26.5.8, which converges fast for
    x < (a+1)/(a+b+2); above that, the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) is used.
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"a and b must be positive, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(x, a, b) / a
    return 1.0 - front * _beta_continued_fraction(1.0 - x, b, a) / b


def _check_df(df: float) -> None:
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's T with `df` degrees of freedom: I_x(df/2, 1/2) / 2, x = df/(df+t^2), for t >= 0.

    Computed from the upper tail directly, so small tail probabilities keep their precision.
    """
    _check_df(df)
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's T with `df` degrees of freedom: 1 - I_x(df/2, 1/2) / 2 for t >= 0 (A&S 26.7.1)."""
    _check_df(df)
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, Student's T with `df` degrees of freedom, for 0 < p < 1.

    Odd symmetry t_p = -t_{1-p}; for p > 1/2 the root of P(T > t) = 1 - p is bracketed by doubling an
    upper bound from 1, then bisected a fixed number of times (to the float resolution of the bracket).
    """
    _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p
    low, high = 0.0, 1.0
    while t_sf(high, df) > tail:
        low, high = high, 2.0 * high
        if math.isinf(high):
            return math.inf
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if t_sf(middle, df) > tail:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclass(frozen=True)
class MeanInterval:
    """Mean, sample std (ddof 1) and the confidence interval of the mean of `n` values.

    `std`, `low` and `high` are NaN when n < 2 (no spread, no interval).
    """

    n: int
    mean: float
    std: float
    low: float
    high: float
    confidence: float


def sample_std(values: Sequence[float]) -> float:
    """sqrt(sum (x_i - mean)^2 / (n - 1)); NaN for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (n - 1))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> MeanInterval:
    """mean ± t_{(1+confidence)/2, n-1} · s / sqrt(n): the Student t interval of the mean.

    s is the sample std (ddof 1). The interval is not clipped to any range (an accuracy's upper end
    can exceed 100 when few, spread-out values give a wide interval).
    """
    if not values:
        raise ValueError("no values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    n = len(values)
    mean = math.fsum(values) / n
    std = sample_std(values)
    if n < 2:
        return MeanInterval(n=n, mean=mean, std=std, low=math.nan, high=math.nan, confidence=confidence)
    half_width = t_quantile((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n)
    return MeanInterval(n=n, mean=mean, std=std, low=mean - half_width, high=mean + half_width, confidence=confidence)


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired t-test of `a` against `b`: mean of d_i = a_i - b_i, its t and p-value."""

    n_pairs: int
    mean_difference: float
    t_statistic: float
    p_value: float


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Two-sided paired Student t-test of H0: E[a_i - b_i] = 0.

    With d_i = a_i - b_i, t = mean(d) / (s_d / sqrt(n)), s_d the sample std (ddof 1) of the d_i, and
    p = 2 P(T > |t|) for T with n - 1 degrees of freedom. When all d_i are equal (s_d = 0), t is
    infinite and p = 0 if they are non-zero; if they are all zero the samples are identical, t = 0, p = 1.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples need the same length, got {len(a)} and {len(b)}")
    n = len(a)
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {n}")
    differences = [x - y for x, y in zip(a, b)]
    mean_difference = math.fsum(differences) / n
    spread = sample_std(differences)
    if spread == 0.0:
        if mean_difference == 0.0:
            return PairedTest(n_pairs=n, mean_difference=0.0, t_statistic=0.0, p_value=1.0)
        return PairedTest(
            n_pairs=n,
            mean_difference=mean_difference,
            t_statistic=math.copysign(math.inf, mean_difference),
            p_value=0.0,
        )
    t = mean_difference / (spread / math.sqrt(n))
    p_value = min(1.0, 2.0 * t_sf(abs(t), n - 1))
    return PairedTest(n_pairs=n, mean_difference=mean_difference, t_statistic=t, p_value=p_value)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of m p-values (Holm 1979), in the order given.

    With p_(1) <= ... <= p_(m) sorted, the adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)):
    rejecting where the adjusted p < alpha controls the family-wise error rate at alpha.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda index: p_values[index])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
