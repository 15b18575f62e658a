"""Noise-aware comparison of test accuracies across seeds.

A difference between two study cells is only worth a sentence in the report if
it is larger than the noise. With one seed per cell the only noise estimate is
the binomial sampling error of an accuracy measured on ``n`` test images. With
two or more seeds per cell, Welch's t statistic compares the seed-to-seed
spread with the difference of the means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# |statistic| above this counts as larger than the noise, roughly a two-sided
# 95% level for a normal statistic.
NOISE_THRESHOLD = 2.0

UNCONFIRMED = "unconfirmed: one seed"
WITHIN_NOISE = "within noise"


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of one cell's values over its seeds."""

    n: int
    mean: float
    # None for a single value, whose spread cannot be measured.
    std: float | None


@dataclass(frozen=True)
class Comparison:
    """Result of comparing cell ``b`` with cell ``a``.

    ``difference`` is mean(b) - mean(a). ``statistic`` is that difference divided
    by its standard error: the binomial one with one seed in either cell, else
    Welch's. ``n_seeds`` is the smaller number of seeds of the two cells.
    """

    difference: float
    statistic: float
    n_seeds: int
    exceeds_noise: bool
    verdict: str


def _check_values(values: Sequence[float], name: str) -> None:
    if len(values) == 0:
        raise ValueError(f"{name} is empty; pass at least one value")
    for value in values:
        if not math.isfinite(value):
            raise ValueError(f"{name} contains {value!r}; pass finite numbers only")


def mean(values: Sequence[float]) -> float:
    """Return the arithmetic mean of ``values``, which must not be empty."""
    _check_values(values, "values")
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float:
    """Return the sample standard deviation (n - 1 in the denominator).

    Raises ValueError for fewer than two values, because one value has no
    measurable spread.
    """
    _check_values(values, "values")
    if len(values) < 2:
        raise ValueError(f"sample_std needs at least 2 values, got {len(values)}")
    centre = mean(values)
    # Every value equal: return exactly 0 rather than rounding noise.
    if all(value == values[0] for value in values):
        return 0.0
    squares = math.fsum((value - centre) ** 2 for value in values)
    return math.sqrt(squares / (len(values) - 1))


def summarize(values: Sequence[float]) -> Summary:
    """Return the count, mean and sample standard deviation (None for one value)."""
    _check_values(values, "values")
    std = sample_std(values) if len(values) >= 2 else None
    return Summary(n=len(values), mean=mean(values), std=std)


def binomial_standard_error(accuracy: float, n: int) -> float:
    """Return sqrt(p(1 - p) / n), the standard error of an accuracy ``p`` on ``n`` images."""
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}")
    if n < 1:
        raise ValueError(f"n must be a positive number of test images, got {n!r}")
    return math.sqrt(accuracy * (1.0 - accuracy) / n)


def welch_t(a: Sequence[float], b: Sequence[float]) -> float:
    """Return Welch's t statistic for mean(b) - mean(a).

    Both cells need at least two values. When both spreads are zero the
    statistic is 0 for equal means and an infinity of the difference's sign
    otherwise.
    """
    difference = mean(b) - mean(a)
    variance = sample_std(a) ** 2 / len(a) + sample_std(b) ** 2 / len(b)
    return _ratio(difference, math.sqrt(variance))


def _ratio(difference: float, standard_error: float) -> float:
    if standard_error > 0.0:
        return difference / standard_error
    if difference == 0.0:
        return 0.0
    return math.copysign(math.inf, difference)


def compare_accuracies(a: Sequence[float], b: Sequence[float], n_test: int) -> Comparison:
    """Compare the accuracies of cell ``b`` with those of cell ``a`` (one value per seed).

    With one seed in either cell the difference of the means is compared with
    the binomial standard error of the difference, sqrt(se_a² + se_b²), on
    ``n_test`` images, and the verdict is always "unconfirmed: one seed". With
    at least two seeds in both cells, Welch's t decides between
    "consistent over N seeds" and "within noise". Either way ``exceeds_noise``
    is True when the statistic's magnitude is above 2.

    NOTE: both cells are scored on the same test images, but the binomial rule
    treats them as independent samples, which overstates the noise of the
    difference. Welch's t sees only the seed-to-seed spread, so a cell whose
    seeds agree exactly gets an infinite t for any nonzero difference.
    """
    _check_values(a, "a")
    _check_values(b, "b")
    for name, values in (("a", a), ("b", b)):
        for value in values:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} contains {value!r}; accuracies are fractions in [0, 1]")
    difference = mean(b) - mean(a)
    n_seeds = min(len(a), len(b))

    if n_seeds == 1:
        standard_error = math.hypot(
            binomial_standard_error(mean(a), n_test),
            binomial_standard_error(mean(b), n_test),
        )
        statistic = _ratio(difference, standard_error)
        exceeds = abs(statistic) > NOISE_THRESHOLD
        return Comparison(difference, statistic, n_seeds, exceeds, UNCONFIRMED)

    statistic = welch_t(a, b)
    exceeds = abs(statistic) > NOISE_THRESHOLD
    verdict = f"consistent over {n_seeds} seeds" if exceeds else WITHIN_NOISE
    return Comparison(difference, statistic, n_seeds, exceeds, verdict)
