"""Document model and number formatting shared by the report's section builders.

A report is a list of ``Section`` objects, each containing ``Paragraph``, ``Code``,
``Table`` and ``FigureSpec`` blocks that the renderers in ``cnnlab.report`` turn
into Markdown and HTML. ``_figure`` defers drawing: it stores a plotting function
from ``cnnlab.figures`` with its arguments, and the renderer calls it once with
the output path. The formatting helpers turn stored fractions, counts, FLOPs and
seconds into report text, with ``MISSING`` for an absent value, and
``change_sentence`` words an accuracy difference only as strongly as the
``cnnlab.stats`` noise test allows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from cnnlab.stats import Comparison, Summary

# ---------------------------------------------------------------------------
# Document model


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Code:
    """Preformatted text: a formula, a command or JSON."""

    text: str


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class FigureSpec:
    """A figure written to ``figures/<name>.png`` by calling ``draw(path)``."""

    name: str
    caption: str
    draw: Callable[[Path], None]


Block = Paragraph | Code | Table | FigureSpec


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)


def _figure(
    name: str, caption: str, draw: Callable[..., None], *args: Any, **kwargs: Any
) -> FigureSpec:
    return FigureSpec(name, caption, partial(_draw_at, draw, args, kwargs))


def _draw_at(
    draw: Callable[..., None], args: tuple[Any, ...], kwargs: dict[str, Any], path: Path
) -> None:
    draw(*args, path, **kwargs)


# ---------------------------------------------------------------------------
# Formatting

DATASET_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}
MISSING = "—"


def percent(value: float | None) -> str:
    """Format a fraction as a percentage with two decimals."""
    return MISSING if value is None else f"{100.0 * value:.2f}%"


def percent_summary(summary: Summary | None) -> str:
    """Format a mean ± sample std of fractions, or the single value for one seed."""
    if summary is None:
        return MISSING
    if summary.std is None:
        return percent(summary.mean)
    return f"{100.0 * summary.mean:.2f}% ± {100.0 * summary.std:.2f}%"


def points(difference: float) -> str:
    """Format a difference of two fractions in signed percentage points."""
    return f"{100.0 * difference:+.2f} points"


def count(value: float | None) -> str:
    return MISSING if value is None else f"{int(value):,}"


def flops_text(value: float | None) -> str:
    if value is None:
        return MISSING

    for scale, unit in ((1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs")):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{int(value)} FLOPs"


def seconds(value: float | None) -> str:
    if value is None:
        return MISSING
    if value < 120:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def alpha_text(alpha: float) -> str:
    return f"{alpha:g}"


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(size) for size in shape)


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def change_sentence(
    subject: str, metric: str, before: float, after: float, result: Comparison
) -> str:
    """Word the change of ``metric`` from ``before`` to ``after`` as strongly as the noise allows.

    Only a difference above the noise threshold gets "raised" or "lowered".
    The verdict of ``cnnlab.stats.compare_accuracies`` always appears, so a
    reader sees how many seeds back the claim.
    """
    values = f"from {percent(before)} to {percent(after)} ({points(result.difference)}"
    if result.n_seeds == 1:
        if result.exceeds_noise:
            verb = "raised" if result.difference > 0 else "lowered"
            return (
                f"{subject} {verb} {metric} {values}, more than twice the binomial standard "
                f"error of the difference; {result.verdict})."
            )
        return (
            f"{subject} changed {metric} {values}, within twice the binomial standard error "
            f"of the difference, so it may be noise; {result.verdict})."
        )
    if result.exceeds_noise:
        verb = "raised" if result.difference > 0 else "lowered"
        statistic = abs(result.statistic)
        return f"{subject} {verb} {metric} {values}; {result.verdict}, |t| = {statistic:.1f})."
    return (
        f"{subject} changed {metric} {values}), which is {result.verdict} "
        f"(|t| = {abs(result.statistic):.1f} over {result.n_seeds} seeds)."
    )
