"""Figures of the report, one function per figure, each writing one PNG.

Every function takes plain data (lists, dicts, NumPy arrays) taken from
results.json and artifacts.npz, so a figure can be redrawn without training.
Figures are ``matplotlib.figure.Figure`` objects drawn with the Agg canvas and
never registered with pyplot, so no global state is touched and each figure is
freed once the function returns. Files are written atomically.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnlab.store import atomic_write_bytes

# matplotlib logs a warning each time a requested font family (such as STIXGeneral for
# mathtext) is missing and it falls back to DejaVu Sans. The fallback is expected on a
# plain install, and those lines would break --quiet, so only errors pass.
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)

DPI = 110
# Tableau 10, matplotlib's default cycle, named so that one metric keeps its
# colour across figures.
COLORS = {
    "train": "#1f77b4",
    "train_ce": "#17becf",
    "l2": "#9467bd",
    "val": "#ff7f0e",
    "test": "#2ca02c",
    "weight": "#1f77b4",
    "bias": "#d62728",
}
CYCLE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

History = Sequence[Mapping[str, Any]]


def _new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    """Return a figure on the Agg canvas.

    Image grids pass ``constrained=False`` and set their spacing by hand,
    because the constrained layout engine slows down figures with many axes.
    """
    figure = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buffer.getvalue())


def _float_array(values: Any) -> np.ndarray:
    """Return ``values`` (nested lists from JSON) as floats, with null entries as NaN."""
    if isinstance(values, np.ndarray):
        return values.astype(float)
    if isinstance(values, list | tuple):
        return np.array([_float_array(value) for value in values], dtype=float)
    return np.array(np.nan if values is None else values, dtype=float)


def _grid_shape(count: int, max_columns: int) -> tuple[int, int]:
    columns = max(1, min(count, max_columns))
    return math.ceil(count / columns), columns


def _series(histories: Sequence[History], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the epochs and a [runs, epochs] array of ``key``, cut to the shortest run.

    Missing or null values become NaN, so a diverged epoch leaves a gap.
    """
    length = min(len(history) for history in histories)
    epochs = np.array([histories[0][i]["epoch"] for i in range(length)], dtype=float)
    values = np.full((len(histories), length), np.nan)
    for row, history in enumerate(histories):
        for column in range(length):
            value = history[column].get(key)
            if value is not None:
                values[row, column] = value
    return epochs, values


def _set_epoch_axis(axes: Axes, fontsize: float | None = None) -> None:
    axes.set_xlabel("epoch", fontsize=fontsize)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_curve(
    axes: Axes,
    histories: Sequence[History],
    key: str,
    label: str,
    color: str,
    scale: float = 1.0,
) -> None:
    """Draw one metric against epoch: one line for one run, mean and ±1 std band for several."""
    epochs, values = _series(histories, key)
    values = values * scale
    if np.all(np.isnan(values)):
        return
    if len(histories) == 1:
        axes.plot(epochs, values[0], color=color, label=label, marker=".")
        return
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    sums = np.where(finite, values, 0.0).sum(axis=0)
    centre = np.divide(sums, counts, out=np.full(len(epochs), np.nan), where=counts > 0)
    squares = np.where(finite, (values - centre) ** 2, 0.0).sum(axis=0)
    spread = np.sqrt(np.divide(squares, counts - 1, out=np.zeros(len(epochs)), where=counts > 1))
    axes.plot(epochs, centre, color=color, label=f"{label} (mean of {len(histories)})")
    axes.fill_between(epochs, centre - spread, centre + spread, color=color, alpha=0.2)


def plot_loss_curves(histories: Sequence[History], path: Path, *, show_l2: bool) -> None:
    """Draw training and validation loss against epoch, and with ``show_l2`` the CE and L2 parts.

    ``histories`` contains one run history (a list of epoch records) per seed.
    """
    figure = _new_figure(11 if show_l2 else 6.5, 4)
    panels = figure.subplots(1, 2 if show_l2 else 1, squeeze=False)[0]
    axes = panels[0]
    _draw_curve(axes, histories, "train_loss", "train loss (CE + L2)", COLORS["train"])
    if show_l2:
        _draw_curve(axes, histories, "train_ce", "train cross-entropy", COLORS["train_ce"])
    _draw_curve(axes, histories, "val_loss", "validation loss", COLORS["val"])
    _set_epoch_axis(axes)
    axes.set_ylabel("loss")
    axes.set_title("Loss")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    if show_l2:
        penalty_axes = panels[1]
        _draw_curve(penalty_axes, histories, "l2_penalty", "α‖w‖² (train mean)", COLORS["l2"])
        _set_epoch_axis(penalty_axes)
        penalty_axes.set_ylabel("penalty")
        penalty_axes.set_title("L2 part of the training loss")
        penalty_axes.grid(alpha=0.3)
        penalty_axes.legend(fontsize=8)
    _save(figure, path)


def plot_accuracy_curves(histories: Sequence[History], path: Path) -> None:
    """Draw train (augmented batches), validation and test accuracy in percent against epoch."""
    figure = _new_figure(6.5, 4)
    axes = figure.subplots()
    _draw_curve(axes, histories, "train_accuracy", "train", COLORS["train"], 100.0)
    _draw_curve(axes, histories, "val_accuracy", "validation", COLORS["val"], 100.0)
    _draw_curve(axes, histories, "test_accuracy", "test", COLORS["test"], 100.0)
    _set_epoch_axis(axes)
    axes.set_ylabel("accuracy (%)")
    axes.set_title("Accuracy")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    _save(figure, path)


def plot_weight_histograms(layers: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Draw the final-value histogram of every parameter tensor, one panel each.

    ``layers`` maps a tensor name to its ``kind`` ("weight" or "bias"),
    ``hist_edges`` and ``hist_counts``. Weights are blue, biases red.
    """
    names = list(layers)
    rows, columns = _grid_shape(len(names), 4)
    figure = _new_figure(3.2 * columns, 2.4 * rows)
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= len(names):
            axes.set_axis_off()
            continue
        layer = layers[names[index]]
        edges = _float_array(layer["hist_edges"])
        counts = _float_array(layer["hist_counts"])
        kind = layer.get("kind", "weight")
        color = COLORS["bias"] if kind == "bias" else COLORS["weight"]
        axes.stairs(counts, edges, fill=True, color=color, alpha=0.7)
        axes.set_title(f"{names[index]} ({kind})", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.set_xlabel("value", fontsize=7)
    _save(figure, path)


def plot_weight_evolution(
    epochs: Sequence[int], layers: Mapping[str, Mapping[str, Any]], path: Path
) -> None:
    """Draw each tensor's median and p25-p75 and p5-p95 bands against epoch (0 = init).

    ``layers`` maps a tensor name to ``kind`` and ``quantiles``, one
    [p0, p5, p25, p50, p75, p95, p100] row per entry of ``epochs``.
    """
    names = list(layers)
    x = np.asarray(epochs, dtype=float)
    rows, columns = _grid_shape(len(names), 4)
    figure = _new_figure(3.2 * columns, 2.4 * rows)
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= len(names):
            axes.set_axis_off()
            continue
        layer = layers[names[index]]
        quantiles = _float_array(layer["quantiles"])
        kind = layer.get("kind", "weight")
        color = COLORS["bias"] if kind == "bias" else COLORS["weight"]
        axes.fill_between(x, quantiles[:, 1], quantiles[:, 5], color=color, alpha=0.15)
        axes.fill_between(x, quantiles[:, 2], quantiles[:, 4], color=color, alpha=0.35)
        axes.plot(x, quantiles[:, 3], color=color, linewidth=1.2)
        axes.set_title(f"{names[index]} ({kind})", fontsize=8)
        axes.tick_params(labelsize=7)
        _set_epoch_axis(axes, fontsize=7)
    figure.suptitle("median (line), p25-p75 (dark band), p5-p95 (light band)", fontsize=9)
    _save(figure, path)


def plot_accuracy_vs_kernel(points: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Draw validation and test accuracy against kernel size, one line per stride.

    Each point has ``stride``, ``kernel_size``, ``val_mean``, ``val_std``,
    ``test_mean`` and ``test_std`` (fractions; a std of None draws no error bar).
    """
    figure = _new_figure(11, 4)
    panels = figure.subplots(1, 2, sharey=True)
    strides = sorted({point["stride"] for point in points})
    for axes, metric, title in zip(panels, ("val", "test"), ("Validation", "Test"), strict=True):
        for index, stride in enumerate(strides):
            line = sorted(
                (point for point in points if point["stride"] == stride),
                key=lambda point: point["kernel_size"],
            )
            # Shift each stride's line a little sideways so that error bars at
            # the same kernel size do not hide each other.
            offset = 0.06 * (index - (len(strides) - 1) / 2)
            kernels = [point["kernel_size"] + offset for point in line]
            means = [100.0 * point[f"{metric}_mean"] for point in line]
            errors = [100.0 * (point[f"{metric}_std"] or 0.0) for point in line]
            has_errors = any(point[f"{metric}_std"] is not None for point in line)
            axes.errorbar(
                kernels,
                means,
                yerr=errors if has_errors else None,
                color=CYCLE[index % len(CYCLE)],
                marker="o",
                capsize=3,
                label=f"stride {stride}",
            )
        axes.set_xlabel("kernel size")
        axes.set_title(f"{title} accuracy")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        all_kernels = sorted({point["kernel_size"] for point in points})
        axes.set_xticks(all_kernels)
    panels[0].set_ylabel("accuracy (%)")
    _save(figure, path)


def plot_cost_vs_accuracy(points: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Draw test accuracy against FLOPs per image and against training time.

    Each point has ``label``, ``flops``, ``train_time_s``, ``test_mean`` and
    ``test_std`` (None draws no error bar).
    """
    figure = _new_figure(11, 4)
    panels = figure.subplots(1, 2, sharey=True)
    for axes, key, xlabel in zip(
        panels,
        ("flops", "train_time_s"),
        ("FLOPs per image (forward)", "training time (s)"),
        strict=True,
    ):
        for index, point in enumerate(points):
            std = point["test_std"]
            axes.errorbar(
                [point[key]],
                [100.0 * point["test_mean"]],
                yerr=None if std is None else [100.0 * std],
                color=CYCLE[index % len(CYCLE)],
                marker="o",
                capsize=3,
            )
            axes.annotate(
                point["label"],
                (point[key], 100.0 * point["test_mean"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
        values = [point[key] for point in points if point[key]]
        if values and max(values) > 10 * min(values):
            axes.set_xscale("log")
        axes.set_xlabel(xlabel)
        axes.grid(alpha=0.3, which="both")
    panels[0].set_ylabel("test accuracy (%)")
    panels[0].set_title("Accuracy against compute")
    panels[1].set_title("Accuracy against training time")
    _save(figure, path)


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Return an image [C, H, W] as an imshow array in [0, 1] and its colour map.

    uint8 images are divided by 255. Float images (standardized inputs) are
    rescaled to [0, 1] per image, because they are not in any display range.
    """
    array = np.asarray(image)
    if array.dtype == np.uint8:
        scaled = array.astype(float) / 255.0
    else:
        scaled = array.astype(float)
        low, high = float(np.min(scaled)), float(np.max(scaled))
        scaled = (scaled - low) / (high - low) if high > low else np.zeros_like(scaled)
    if scaled.shape[0] == 1:
        return scaled[0], "gray"
    return np.transpose(scaled, (1, 2, 0)), None


def plot_image_grid(
    images: np.ndarray, titles: Sequence[str], path: Path, *, columns: int = 8
) -> None:
    """Draw images [N, C, H, W] in a grid, each under its title (for example true/predicted)."""
    count = len(images)
    if count == 0:
        raise ValueError("plot_image_grid needs at least one image")
    if len(titles) != count:
        raise ValueError(f"got {count} images but {len(titles)} titles; pass one title per image")
    rows, columns = _grid_shape(count, columns)
    figure = _new_figure(1.45 * columns, 1.75 * rows, constrained=False)
    # Leave 0.4 inch above each image for its two-line title.
    figure.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / (1.75 * rows), hspace=0.35
    )
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(grid.flat):
        axes.set_axis_off()
        if index >= count:
            continue
        picture, cmap = _display_image(images[index])
        axes.imshow(picture, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        axes.set_title(titles[index], fontsize=7)
    _save(figure, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path
) -> None:
    """Draw a confusion matrix (rows true, columns predicted) as a heat map with counts."""
    counts = np.asarray(matrix, dtype=float)
    size = len(class_names)
    figure = _new_figure(max(5.0, 0.6 * size + 2.0), max(4.5, 0.55 * size + 1.5))
    axes = figure.subplots()
    # A log colour scale keeps the few off-diagonal mistakes visible next to a
    # diagonal of thousands. Zero cells stay white.
    peak = max(float(counts.max()), 1.0)
    norm = LogNorm(vmin=1.0, vmax=max(peak, 10.0))
    image = axes.imshow(np.ma.masked_less(counts, 1.0), cmap="Blues", norm=norm)
    figure.colorbar(image, ax=axes, shrink=0.8, label="images (log scale)")
    for row in range(counts.shape[0]):
        for column in range(counts.shape[1]):
            value = counts[row, column]
            color = "white" if value >= 1 and norm(value) > 0.6 else "black"
            axes.text(
                column, row, str(int(value)), ha="center", va="center", fontsize=7, color=color
            )
    axes.set_xticks(range(size), class_names, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(size), class_names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix (test set)")
    _save(figure, path)


def _mosaic(tiles: Sequence[np.ndarray], gap: int = 1) -> np.ndarray:
    """Return 2-D tiles of one size side by side, separated by ``gap`` columns of NaN."""
    height, width = tiles[0].shape
    mosaic = np.full((height, len(tiles) * (width + gap) - gap), np.nan)
    for index, tile in enumerate(tiles):
        start = index * (width + gap)
        mosaic[:, start : start + width] = tile
    return mosaic


def _scale_channel(channel: np.ndarray) -> np.ndarray:
    low, high = float(channel.min()), float(channel.max())
    return (channel - low) / (high - low) if high > low else np.zeros_like(channel)


def plot_feature_maps(
    input_image: np.ndarray,
    maps: Sequence[np.ndarray],
    names: Sequence[str],
    path: Path,
    *,
    channel_counts: Sequence[int] | None = None,
    max_channels: int = 16,
) -> None:
    """Draw one input image [C, H, W] and up to ``max_channels`` channels of each block's maps.

    ``maps`` contains one [C_i, H_i, W_i] array per conv block, top to bottom in
    depth order. ``channel_counts`` gives each block's full channel count when
    the stored maps keep only the first channels. Every channel is scaled to
    its own range, and each block is one row of channels side by side.
    """
    if len(maps) != len(names):
        raise ValueError(f"got {len(maps)} feature maps but {len(names)} names")
    rows = len(maps) + 1
    height = 1.0 * rows
    figure = _new_figure(0.7 * max_channels + 0.4, height, constrained=False)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.2 / height, hspace=0.35)
    grid = figure.subplots(rows, 1, squeeze=False)[:, 0]
    for axes in grid:
        axes.set_axis_off()
    picture, cmap = _display_image(input_image)
    grid[0].imshow(picture, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    grid[0].set_anchor("W")
    grid[0].set_title("input", fontsize=8, loc="left")
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    for row, (block, name) in enumerate(zip(maps, names, strict=True), start=1):
        block = np.asarray(block, dtype=float)
        stored, map_height, map_width = block.shape
        total = channel_counts[row - 1] if channel_counts is not None else stored
        drawn = min(stored, max_channels)
        gap = max(1, map_width // 8)
        mosaic = _mosaic([_scale_channel(block[index]) for index in range(drawn)], gap)
        axes = grid[row]
        axes.imshow(mosaic, cmap=colormap, vmin=0.0, vmax=1.0, interpolation="nearest")
        axes.set_anchor("W")
        axes.set_title(
            f"{name}: {map_height}×{map_width}, channels 1-{drawn} of {total}",
            fontsize=8,
            loc="left",
        )
    _save(figure, path)


def _alpha_positions(alphas: Sequence[float]) -> tuple[np.ndarray, bool]:
    """Return x positions for ``alphas`` on a log axis and whether the axis is logarithmic.

    α = 0 cannot sit on a log axis, so it is drawn a decade left of the
    smallest positive α and labelled "0".
    """
    positive = [alpha for alpha in alphas if alpha > 0]
    if not positive:
        return np.asarray(alphas, dtype=float), False
    zero_position = min(positive) / 10.0
    return np.array([alpha if alpha > 0 else zero_position for alpha in alphas]), True


def _set_alpha_axis(axes: Axes, alphas: Sequence[float]) -> None:
    positions, logarithmic = _alpha_positions(alphas)
    if logarithmic:
        axes.set_xscale("log")
        axes.minorticks_off()
    axes.set_xticks(positions, [f"{alpha:g}" for alpha in alphas], fontsize=8)
    axes.set_xlabel("α (L2 strength; 0 drawn a decade left of the smallest α)")


def plot_accuracy_vs_alpha(
    alphas: Sequence[float],
    series: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
    path: Path,
) -> None:
    """Draw accuracy in percent against α, one line per label in ``series``.

    ``series`` maps a label such as "validation" to (means, stds) over the
    alphas, fractions, with a std of None for a single seed.
    """
    positions, _ = _alpha_positions(alphas)
    figure = _new_figure(6.5, 4)
    axes = figure.subplots()
    for index, (label, (means, stds)) in enumerate(series.items()):
        has_errors = any(std is not None for std in stds)
        axes.errorbar(
            positions,
            [100.0 * value for value in means],
            yerr=[100.0 * (std or 0.0) for std in stds] if has_errors else None,
            color=COLORS.get(label, CYCLE[index % len(CYCLE)]),
            marker="o",
            capsize=3,
            label=label,
        )
    _set_alpha_axis(axes, alphas)
    axes.set_ylabel("accuracy (%)")
    axes.set_title("Accuracy against L2 strength")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    _save(figure, path)


def plot_weight_norm_vs_alpha(
    alphas: Sequence[float],
    means: Sequence[float],
    stds: Sequence[float | None],
    path: Path,
) -> None:
    """Draw the final Σ‖w‖² over conv and linear weights against α.

    The y axis is logarithmic when the norms span more than a factor of 30.
    """
    positions, _ = _alpha_positions(alphas)
    figure = _new_figure(6.5, 4)
    axes = figure.subplots()
    has_errors = any(std is not None for std in stds)
    axes.errorbar(
        positions,
        means,
        yerr=[std or 0.0 for std in stds] if has_errors else None,
        color=COLORS["l2"],
        marker="o",
        capsize=3,
    )
    # A log axis only pays off over a wide range. Over a narrow one it shows a
    # single labelled tick.
    if all(value > 0 for value in means) and max(means) > 30 * min(means):
        axes.set_yscale("log")
    _set_alpha_axis(axes, alphas)
    axes.set_ylabel("Σ‖w‖² at the end")
    axes.set_title("Weight norm against L2 strength")
    axes.grid(alpha=0.3, which="both")
    _save(figure, path)


def plot_histograms_by_alpha(
    panels: Mapping[str, Sequence[tuple[float, Sequence[float], Sequence[float]]]],
    path: Path,
) -> None:
    """Overlay final-weight histograms of several α values, one panel per tensor.

    ``panels`` maps a panel title to (alpha, hist_edges, hist_counts) tuples.
    Histograms are drawn as densities because each run has its own bin edges.
    """
    figure = _new_figure(5.5 * len(panels), 4)
    grid = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (title, histograms) in zip(grid, panels.items(), strict=True):
        for index, (alpha, edges, counts) in enumerate(histograms):
            edge_array = np.asarray(edges, dtype=float)
            count_array = np.asarray(counts, dtype=float)
            area = float(np.sum(count_array * np.diff(edge_array)))
            density = count_array / area if area > 0 else count_array
            axes.stairs(
                density, edge_array, color=CYCLE[index % len(CYCLE)], label=f"α = {alpha:g}"
            )
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("weight value")
        axes.set_ylabel("density")
        axes.legend(fontsize=8)
    _save(figure, path)


def plot_preprocessing_stages(
    stages: Mapping[str, np.ndarray], path: Path, *, max_images: int = 8
) -> None:
    """Draw the same sample images at each preprocessing stage, one row per stage.

    ``stages`` maps a row label to images [N, C, H, W]. Float stages are
    rescaled to [0, 1] per image for display.
    """
    labels = list(stages)
    columns = min(max_images, max(len(images) for images in stages.values()))
    figure = _new_figure(1.3 * columns + 0.5, 1.3 * len(labels), constrained=False)
    figure.subplots_adjust(left=0.08, right=0.99, bottom=0.02, top=0.98, wspace=0.05, hspace=0.08)
    grid = figure.subplots(len(labels), columns, squeeze=False)
    for row, label in enumerate(labels):
        images = stages[label]
        for column in range(columns):
            axes = grid[row, column]
            axes.set_xticks([])
            axes.set_yticks([])
            if column >= len(images):
                axes.set_axis_off()
                continue
            picture, cmap = _display_image(images[column])
            axes.imshow(picture, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        grid[row, 0].set_ylabel(label, fontsize=8)
    _save(figure, path)
