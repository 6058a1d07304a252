"""ssl_bench.report.stats: Student t quantile and CDF, the interval of the mean, the paired t-test."""

from __future__ import annotations

import math

import pytest

from ssl_bench.report.stats import (
    holm_adjust,
    mean_interval,
    paired_t_test,
    regularized_incomplete_beta,
    sample_std,
    t_cdf,
    t_quantile,
    t_sf,
)

# t_{0.975, df} from printed tables (three decimals).
T_975 = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 29: 2.045}


@pytest.mark.parametrize(("df", "expected"), sorted(T_975.items()))
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)


@pytest.mark.parametrize(("df", "expected"), sorted(T_975.items()))
def test_t_cdf_at_the_printed_quantiles(df, expected):
    # The printed values are rounded to 3 decimals; the CDF there is 0.975 to within the density times 5e-4.
    assert t_cdf(expected, df) == pytest.approx(0.975, abs=1e-4)
    assert t_cdf(-expected, df) == pytest.approx(0.025, abs=1e-4)


def test_t_quantile_closed_forms():
    # 1 df is the Cauchy distribution: t_p = tan(pi (p - 1/2)); 2 df: t_p = (2p - 1) / sqrt(2 p (1 - p)).
    for p in (0.6, 0.9, 0.975, 0.9995):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)


def test_t_cdf_closed_forms_and_symmetry():
    for t in (-30.0, -2.0, -0.3, 0.0, 0.7, 4.0, 71.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
        for df in (1, 3, 9.5, 40):
            assert t_cdf(t, df) + t_cdf(-t, df) == pytest.approx(1.0, abs=1e-13)
            assert t_sf(t, df) == pytest.approx(1 - t_cdf(t, df), abs=1e-13)
    assert t_cdf(0.0, 5) == 0.5
    assert t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0 and t_sf(math.inf, 3) == 0.0
    # Far tail of 1 df: P(T > 1e6) = atan(1e-6) / pi, kept to full relative precision.
    assert t_sf(1e6, 1) == pytest.approx(math.atan(1e-6) / math.pi, rel=1e-9)


def test_t_approaches_the_normal_for_many_df():
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)
    assert t_cdf(1.959964, 1e6) == pytest.approx(0.975, abs=1e-6)


def test_t_quantile_inverts_the_cdf_and_rejects_bad_input():
    assert t_quantile(0.5, 7) == 0.0
    for df in (1, 2, 5, 30):
        for p in (0.001, 0.2, 0.8, 0.999):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, rel=1e-10)
    for p in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            t_quantile(p, 3)
    with pytest.raises(ValueError):
        t_quantile(0.9, 0)
    with pytest.raises(ValueError):
        t_cdf(1.0, -1)


def test_regularized_incomplete_beta_known_values():
    # I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b; I_{1/2}(a, a) = 1/2.
    assert regularized_incomplete_beta(0.3, 1, 1) == pytest.approx(0.3, abs=1e-14)
    assert regularized_incomplete_beta(0.3, 2.5, 1) == pytest.approx(0.3**2.5, abs=1e-14)
    assert regularized_incomplete_beta(0.8, 1, 3) == pytest.approx(1 - 0.2**3, abs=1e-14)
    assert regularized_incomplete_beta(0.5, 7, 7) == pytest.approx(0.5, abs=1e-14)
    assert regularized_incomplete_beta(0.0, 2, 3) == 0.0 and regularized_incomplete_beta(1.0, 2, 3) == 1.0


def test_mean_interval_of_a_small_sample_by_hand():
    # 90, 91, 92.5: mean 91.1667; deviations -7/6, -1/6, 4/3 -> sum of squares 19/6 -> s = sqrt(19/12) = 1.258306;
    # half-width t_{0.975, 2} * s / sqrt(3) = 4.302653 * 1.258306 / 1.732051 = 3.125805.
    interval = mean_interval([90.0, 91.0, 92.5])
    assert interval.n == 3 and interval.confidence == 0.95
    assert interval.mean == pytest.approx(91.166667, abs=1e-6)
    assert interval.std == pytest.approx(1.258306, abs=1e-6)
    assert interval.low == pytest.approx(91.166667 - 3.125805, abs=1e-5)
    assert interval.high == pytest.approx(91.166667 + 3.125805, abs=1e-5)
    # 2 values, 90% confidence: t_{0.95, 1} = tan(0.45 pi) = 6.313752; s = sqrt(2); half-width 6.313752.
    narrow = mean_interval([1.0, 3.0], confidence=0.90)
    assert (narrow.low, narrow.high) == pytest.approx((2 - 6.313752, 2 + 6.313752), abs=1e-5)


def test_a_single_value_has_no_spread_and_no_interval():
    interval = mean_interval([84.56])
    assert interval.mean == 84.56 and interval.n == 1
    assert math.isnan(interval.std) and math.isnan(interval.low) and math.isnan(interval.high)
    assert math.isnan(sample_std([1.0]))
    with pytest.raises(ValueError):
        mean_interval([])


def test_paired_t_test_by_hand():
    # d = a - b = 1.0, 2.5, 0.5, 2.0: mean 1.5; deviations -0.5, 1, -1, 0.5 -> sum of squares 2.5 -> s_d = sqrt(5/6);
    # t = 1.5 / (sqrt(5/6) / 2) = 3.286335; 3 df: P(T > t) = 1/2 - (x / (1 + x^2) + atan x) / pi with
    # x = t / sqrt(3) = 1.897366, so p = 2 P(T > t) = 0.046205 (below 0.05, as t > t_{0.975, 3} = 3.182).
    test = paired_t_test([11.0, 12.5, 10.5, 14.0], [10.0, 10.0, 10.0, 12.0])
    assert test.n_pairs == 4 and test.mean_difference == pytest.approx(1.5)
    assert test.t_statistic == pytest.approx(3.286335, abs=1e-6)
    assert test.p_value == pytest.approx(0.046205, abs=1e-6)
    # Swapping the samples flips t, not p.
    swapped = paired_t_test([10.0, 10.0, 10.0, 12.0], [11.0, 12.5, 10.5, 14.0])
    assert swapped.t_statistic == pytest.approx(-test.t_statistic) and swapped.p_value == pytest.approx(test.p_value)


def test_paired_t_test_with_two_pairs_matches_the_cauchy_tail():
    # d = -3, -4: mean -3.5, s_d sqrt(0.5), t = -3.5 / (sqrt(0.5) / sqrt(2)) = -7; 1 df: p = 1 - 2 atan(7) / pi.
    test = paired_t_test([85.0, 86.0], [88.0, 90.0])
    assert test.t_statistic == pytest.approx(-7.0)
    assert test.p_value == pytest.approx(1 - 2 * math.atan(7) / math.pi, rel=1e-12)


def test_paired_t_test_edge_cases():
    identical = paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert identical.p_value == 1.0 and identical.t_statistic == 0.0
    shifted = paired_t_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])  # every difference exactly 1
    assert shifted.p_value == 0.0 and shifted.t_statistic == math.inf
    with pytest.raises(ValueError):
        paired_t_test([1.0], [2.0])
    with pytest.raises(ValueError):
        paired_t_test([1.0, 2.0], [1.0, 2.0, 3.0])


def test_holm_by_hand():
    # m = 4; sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, max(0.04, 0.06), max(0.06, 0.06), max(0.06, 0.5).
    assert holm_adjust([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm_adjust([0.4, 0.9]) == pytest.approx([0.8, 0.9])  # capped at 1 only where it would exceed it
    assert holm_adjust([0.7, 0.9]) == [1.0, 1.0]
    assert holm_adjust([0.02]) == [0.02] and holm_adjust([]) == []
