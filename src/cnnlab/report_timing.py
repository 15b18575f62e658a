"""Timing noise of training runs, measured from the times that results.json stores.

Training times are wall-clock measurements, so runs that do the same work
still differ. The report measures that noise in two ways. Within a run, the
spread of ``epoch_time_s`` over the epochs after the first measures how much
repeats of the same work vary. The first epoch is left out because it also
contains one-off warm-up work. Across seeds, the spread of ``train_time_s``
within one cell measures the noise of whole runs, because the seed changes the
data order and the initial weights but not the amount of work. A difference of
two times counts as measured only when it is more than ``NOISE_THRESHOLD``
(2) times its standard error, the rule that ``cnnlab.stats`` uses for
accuracies.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cnnlab import stats
from cnnlab.report_document import seconds
from cnnlab.report_results import Cell
from cnnlab.stats import NOISE_THRESHOLD


@dataclass(frozen=True)
class Spread:
    """Relative spreads (sample std / mean, as fractions) of several groups of times."""

    values: list[float]
    # The number of times in each group: epochs of a run, or completed seeds of a cell.
    sizes: list[int]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def largest(self) -> float:
        return max(self.values)


@dataclass(frozen=True)
class TimeComparison:
    """Mean times of two cells and their difference divided by its standard error.

    ``basis`` is "seeds" when the times are ``train_time_s`` of two or more
    completed seeds per cell, else "epochs" when they are the ``epoch_time_s``
    of the epochs after the first, pooled over each cell's completed runs.
    ``n`` is the smaller number of times of the two cells.
    """

    basis: str
    before: float
    after: float
    statistic: float
    n: int

    @property
    def exceeds_noise(self) -> bool:
        return abs(self.statistic) > NOISE_THRESHOLD


def later_epoch_times(run: Mapping[str, Any]) -> list[float]:
    """Return a run's ``epoch_time_s`` values after its first epoch, skipping null values.

    NOTE: a run resumed from a checkpoint warms up again in its first epoch
    after the resume, and results.json does not record which epoch that was.
    """
    times = [row.get("epoch_time_s") for row in run["history"][1:]]
    return [float(time) for time in times if time is not None]


def relative_spread(values: Sequence[float]) -> float | None:
    """Return the sample std divided by the mean, or None for fewer than 2 values or mean <= 0."""
    if len(values) < 2:
        return None
    centre = stats.mean(values)
    if centre <= 0:
        return None
    return stats.sample_std(values) / centre


def within_run_spread(runs: Sequence[Mapping[str, Any]]) -> Spread | None:
    """Return the spread of epoch times after the first epoch, one value per run with 2 or more."""
    values, sizes = [], []
    for run in runs:
        times = later_epoch_times(run)
        spread = relative_spread(times)
        if spread is not None:
            values.append(spread)
            sizes.append(len(times))
    return Spread(values, sizes) if values else None


def across_seed_spread(cells: Sequence[Cell]) -> Spread | None:
    """Return the spread of ``train_time_s`` over each cell's completed seeds, for cells with 2+."""
    values, sizes = [], []
    for cell in cells:
        times = cell.values("train_time_s")
        spread = relative_spread(times)
        if spread is not None:
            values.append(spread)
            sizes.append(len(times))
    return Spread(values, sizes) if values else None


def compare_times(before: Cell, after: Cell) -> TimeComparison | None:
    """Compare the times of cell ``after`` with those of cell ``before``, over seeds or epochs.

    Uses the completed runs only. Returns None when neither basis has two
    times in each cell with a nonzero spread, so the noise is not measured.
    """
    a, b = before.values("train_time_s"), after.values("train_time_s")
    statistic = _welch_statistic(a, b)
    if statistic is not None:
        return TimeComparison("seeds", stats.mean(a), stats.mean(b), statistic, min(len(a), len(b)))
    a = [time for run in before.completed for time in later_epoch_times(run)]
    b = [time for run in after.completed for time in later_epoch_times(run)]
    statistic = _welch_statistic(a, b)
    if statistic is not None:
        return TimeComparison(
            "epochs", stats.mean(a), stats.mean(b), statistic, min(len(a), len(b))
        )
    return None


def _welch_statistic(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Return Welch's t for mean(b) - mean(a), or None with fewer than 2 values or zero spread."""
    if len(a) < 2 or len(b) < 2:
        return None
    variance = stats.sample_std(a) ** 2 / len(a) + stats.sample_std(b) ** 2 / len(b)
    if variance <= 0:
        return None
    return (stats.mean(b) - stats.mean(a)) / math.sqrt(variance)


# ---------------------------------------------------------------------------
# Wording


def noise_sentences(
    runs: Sequence[Mapping[str, Any]], cells: Sequence[Cell], *, threshold: bool
) -> list[str]:
    """Word the measured timing noise of ``runs`` and ``cells``.

    With ``threshold``, a last sentence gives the relative difference of two
    training times below which the difference is within that noise.
    """
    within = within_run_spread(runs)
    across = across_seed_spread(cells)
    sentences = [_within_sentence(within), _across_sentence(across, len(cells))]
    if threshold:
        sentences.append(_threshold_sentence(within, across))
    return sentences


def _within_sentence(spread: Spread | None) -> str:
    if spread is None:
        return (
            "No run has two epochs after the first, which includes warm-up, so the spread of "
            "epoch times within a run was not measured."
        )
    if len(spread.values) == 1:
        return (
            "Within the run, the training times of the epochs after the first (the first "
            f"includes warm-up) varied by {_relative(spread.values[0])} of their mean "
            f"(std/mean over {spread.sizes[0]} epochs)."
        )
    return (
        "Within a run, the training times of the epochs after the first (the first includes "
        f"warm-up) varied by a median of {_relative(spread.median)} of their mean "
        f"(std/mean over {len(spread.values)} runs; largest {_relative(spread.largest)})."
    )


def _across_sentence(spread: Spread | None, n_cells: int) -> str:
    if spread is None:
        if n_cells == 1:
            return "With one completed seed, the spread of training times across seeds was not measured."
        return (
            "No cell has two completed seeds, so the spread of training times across seeds was "
            "not measured."
        )
    if n_cells == 1:
        return (
            f"Across the {spread.sizes[0]} completed seeds, the training time varied by "
            f"{_relative(spread.values[0])} of its mean (std/mean)."
        )
    return (
        f"Across seeds, the training time of one cell varied by a median of "
        f"{_relative(spread.median)} of its mean (std/mean over {len(spread.values)} cells with "
        f"{_count_range(spread.sizes)} completed seeds; largest {_relative(spread.largest)})."
    )


def _threshold_sentence(within: Spread | None, across: Spread | None) -> str:
    """Give the relative difference of two times that is twice its standard error."""
    if across is not None:
        n = min(across.sizes)
        limit = NOISE_THRESHOLD * math.sqrt(2 / n) * across.largest
        seeds = f"{n} seeds" if n == max(across.sizes) else f"{n} or more seeds"
        return (
            f"Two mean training times over {seeds} that differ by less than "
            f"{_relative(limit)} are within this noise (twice the standard error of their "
            "difference at the largest spread across seeds), so such a difference is not a "
            "measured one."
        )
    if within is not None:
        limit = NOISE_THRESHOLD * math.sqrt(2) * within.largest
        return (
            f"Two training times that differ by less than {_relative(limit)} are within this "
            "noise (twice the standard error of their difference at the largest spread between "
            "epochs), so such a difference is not a measured one. A larger difference is "
            "unconfirmed with one seed, because the spread between epochs of one run leaves out "
            "changes between runs, such as other load on the machine."
        )
    return "Neither spread was measured, so no difference in training time here is a measured one."


def time_change_sentence(subject: str, comparison: TimeComparison | None) -> str:
    """Word a change of training time only as strongly as its measured noise allows."""
    if comparison is None:
        return (
            f"{subject}: the stored times do not measure their own noise (that needs two "
            "completed seeds per cell, or runs with two epochs after the first whose times "
            "vary), so the difference in training time is unconfirmed."
        )
    before, after = comparison.before, comparison.after
    statistic = abs(comparison.statistic)
    if comparison.basis == "seeds":
        change = (
            f"{subject} changed the mean training time from {_seconds(before)} to "
            f"{_seconds(after)} ({_signed_seconds(after - before)}); "
            f"|t| = {statistic:.1f} over {comparison.n} seeds"
        )
        if comparison.exceeds_noise:
            return change + ", so the difference exceeds the seed-to-seed noise."
        return change + ", so the difference is within the seed-to-seed noise, not a measured one."
    change = (
        f"{subject} changed the mean time of an epoch after the first from {_seconds(before)} "
        f"to {_seconds(after)} ({_signed_seconds(after - before)}); |t| = {statistic:.1f} "
        "against the spread between epochs"
    )
    if comparison.exceeds_noise:
        return (
            change + ", so the difference exceeds that noise, but it is unconfirmed without two "
            "seeds per cell, because runs trained at different times can differ more than the "
            "epochs of one run."
        )
    return change + ", so the difference is within that noise, not a measured one."


def _relative(fraction: float) -> str:
    percent = 100.0 * fraction
    return f"{percent:.1f}%" if percent >= 0.1 or percent == 0 else f"{percent:.2g}%"


def _seconds(value: float) -> str:
    """Format seconds with two decimals below 10 s, where epoch times differ by tenths."""
    return f"{value:.2f} s" if value < 10 else seconds(value)


def _signed_seconds(value: float) -> str:
    sign = "+" if value >= 0 else "-"
    return f"{sign}{_seconds(abs(value))}"


def _count_range(sizes: Sequence[int]) -> str:
    low, high = min(sizes), max(sizes)
    return str(low) if low == high else f"{low} to {high}"
