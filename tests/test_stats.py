"""Tests of the seed and test-set noise helpers in cnnlab.stats."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnlab import stats

accuracy = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
accuracies = st.lists(accuracy, min_size=1, max_size=6)


def test_mean_of_three_values():
    assert stats.mean([0.90, 0.92, 0.94]) == pytest.approx(0.92, abs=1e-15)


def test_sample_std_uses_n_minus_one():
    assert stats.sample_std([0.90, 0.92, 0.94]) == pytest.approx(0.02, abs=1e-12)
    assert stats.sample_std([1.0, 3.0]) == pytest.approx(math.sqrt(2.0))


def test_sample_std_rejects_one_value():
    with pytest.raises(ValueError, match="at least 2 values, got 1"):
        stats.sample_std([0.5])


def test_mean_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="empty"):
        stats.mean([])
    with pytest.raises(ValueError, match="finite"):
        stats.mean([0.5, math.nan])


def test_summarize_one_value_has_no_std():
    summary = stats.summarize([0.97])
    assert summary.n == 1
    assert summary.mean == 0.97
    assert summary.std is None


def test_summarize_three_values():
    summary = stats.summarize([0.90, 0.92, 0.94])
    assert summary.n == 3
    assert summary.mean == pytest.approx(0.92)
    assert summary.std == pytest.approx(0.02)


def test_binomial_standard_error_exact():
    assert stats.binomial_standard_error(0.9, 10_000) == pytest.approx(0.003, abs=1e-15)
    assert stats.binomial_standard_error(0.5, 100) == pytest.approx(0.05)
    assert stats.binomial_standard_error(1.0, 10_000) == 0.0


def test_binomial_standard_error_rejects_bad_input():
    with pytest.raises(ValueError, match="fraction in"):
        stats.binomial_standard_error(97.0, 10_000)
    with pytest.raises(ValueError, match="positive number of test images"):
        stats.binomial_standard_error(0.9, 0)


def test_one_seed_beyond_binomial_noise():
    result = stats.compare_accuracies([0.90], [0.91], 10_000)
    standard_error = math.sqrt(0.9 * 0.1 / 10_000 + 0.91 * 0.09 / 10_000)
    assert result.difference == pytest.approx(0.01)
    assert result.statistic == pytest.approx(0.01 / standard_error)
    assert result.statistic == pytest.approx(2.4119, abs=1e-4)
    assert result.exceeds_noise
    assert result.n_seeds == 1
    assert result.verdict == "unconfirmed: one seed"


def test_one_seed_within_binomial_noise():
    result = stats.compare_accuracies([0.900], [0.905], 10_000)
    assert not result.exceeds_noise
    assert result.verdict == "unconfirmed: one seed"


def test_one_seed_in_either_cell_uses_binomial_rule():
    result = stats.compare_accuracies([0.90, 0.91, 0.92], [0.95], 10_000)
    assert result.n_seeds == 1
    assert result.verdict == "unconfirmed: one seed"


def test_welch_consistent_over_three_seeds():
    result = stats.compare_accuracies([0.90, 0.91, 0.92], [0.93, 0.94, 0.95], 10_000)
    assert result.difference == pytest.approx(0.03)
    assert result.statistic == pytest.approx(0.03 / math.sqrt(2 * 0.0001 / 3))
    assert result.statistic == pytest.approx(3.6742, abs=1e-4)
    assert result.exceeds_noise
    assert result.verdict == "consistent over 3 seeds"


def test_welch_within_noise():
    result = stats.compare_accuracies([0.90, 0.92], [0.91, 0.93], 10_000)
    assert result.statistic == pytest.approx(1 / math.sqrt(2))
    assert not result.exceeds_noise
    assert result.verdict == "within noise"


def test_welch_counts_smaller_cell():
    result = stats.compare_accuracies([0.90, 0.90, 0.91, 0.90], [0.95, 0.96], 10_000)
    assert result.n_seeds == 2
    assert result.verdict == "consistent over 2 seeds"


def test_welch_zero_spread_is_infinite():
    assert stats.welch_t([0.9, 0.9], [0.91, 0.91]) == math.inf
    assert stats.welch_t([0.91, 0.91], [0.9, 0.9]) == -math.inf
    assert stats.welch_t([0.9, 0.9], [0.9, 0.9]) == 0.0


def test_compare_rejects_percentages():
    with pytest.raises(ValueError, match="fractions in"):
        stats.compare_accuracies([97.1], [97.3], 10_000)


@given(accuracies, accuracies, st.integers(min_value=1, max_value=100_000))
def test_compare_is_antisymmetric(a, b, n_test):
    forward = stats.compare_accuracies(a, b, n_test)
    backward = stats.compare_accuracies(b, a, n_test)
    assert forward.difference == -backward.difference
    assert forward.statistic == -backward.statistic
    assert forward.exceeds_noise == backward.exceeds_noise
    assert forward.verdict == backward.verdict


@given(accuracy, st.integers(min_value=2, max_value=20))
def test_std_of_constant_list_is_zero(value, length):
    assert stats.sample_std([value] * length) == 0.0


@given(st.lists(accuracy, min_size=2, max_size=10))
def test_summary_mean_within_range(values):
    summary = stats.summarize(values)
    assert min(values) - 1e-12 <= summary.mean <= max(values) + 1e-12
    assert summary.std is not None
    assert summary.std >= 0.0


@given(st.integers(min_value=0, max_value=1000), st.integers(min_value=1, max_value=100_000))
def test_binomial_error_symmetric_in_p(correct, n):
    # p and 1 - p as k / 1000 and (1000 - k) / 1000, so that neither is rounded
    # differently, because 1.0 - p loses the low bits of a tiny p.
    p, q = correct / 1000, (1000 - correct) / 1000
    assert stats.binomial_standard_error(p, n) == pytest.approx(stats.binomial_standard_error(q, n))
