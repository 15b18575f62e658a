"""Report sections built from results.json and artifacts.npz, as a neutral document.

Each ``*_section`` function returns a ``Section`` of paragraphs, tables, code
blocks and figure specs, or None when its data is absent from the study. The
renderers in ``cnnlab.report`` turn sections into Markdown and HTML, and draw
each ``FigureSpec`` once. Every sentence of a discussion is computed from the
stored numbers. Differences are worded through ``cnnlab.stats``, so a
difference within the noise is never described as an effect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import figures, stats
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


# ---------------------------------------------------------------------------
# Access to the study


@dataclass(frozen=True)
class Cell:
    """The runs of one study cell, split by status, with summaries over completed runs."""

    keys: list[str]
    completed: list[dict[str, Any]]
    diverged: list[dict[str, Any]]

    def values(self, metric: str) -> list[float]:
        return [
            run["final"][metric] for run in self.completed if run["final"].get(metric) is not None
        ]

    def summary(self, metric: str) -> Summary | None:
        values = self.values(metric)
        return stats.summarize(values) if values else None

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return stats.mean(values) if values else None

    def cost(self, metric: str) -> float | None:
        """Return the mean of a cost field (``params``, ``flops``, ``train_time_s``) over all runs.

        Diverged runs count too, because their cost was spent.
        """
        values = [
            run["final"][metric]
            for run in self.completed + self.diverged
            if run["final"].get(metric) is not None
        ]
        return stats.mean(values) if values else None

    def status_text(self) -> str:
        if not self.diverged:
            return "completed"
        epochs = sorted({str(run.get("diverged_epoch")) for run in self.diverged})
        where = f"in epoch {', '.join(epochs)}"
        if not self.completed:
            return f"diverged ({len(self.diverged)} of {len(self.keys)} runs, {where})"
        share = f"{len(self.diverged)} of {len(self.keys)} runs"
        return f"{share} diverged ({where}), excluded from the means"


@dataclass(frozen=True)
class Budget:
    epochs: int | None
    images: int

    def text(self) -> str:
        unit = "epoch" if self.epochs == 1 else "epochs"
        return f"{self.epochs} {unit} on {self.images:,} training images"


class Study:
    """Read-only view of results.json and artifacts.npz with the look-ups the sections share."""

    def __init__(self, results: Mapping[str, Any], artifacts: Mapping[str, np.ndarray]) -> None:
        self.results = results
        self.artifacts = artifacts
        self.runs: Mapping[str, dict[str, Any]] = results["runs"]
        self.sections: Mapping[str, Any] = results["sections"]
        dataset = results["dataset"]
        self.classes = [str(name) for name in dataset["classes"]]
        self.image_shape = list(dataset["image_shape"])
        self.n_train = int(dataset["split"]["train"])
        self.n_test = int(dataset["split"]["test"])
        self.dataset_name = DATASET_NAMES.get(dataset["name"], str(dataset["name"]))

    def cell(self, keys: Sequence[str]) -> Cell:
        records = [self.runs[key] for key in keys]
        completed = [run for run in records if run["status"] == "completed"]
        diverged = [run for run in records if run["status"] != "completed"]
        return Cell(list(keys), completed, diverged)

    def class_name(self, label: int | str) -> str:
        if isinstance(label, int) and 0 <= label < len(self.classes):
            return self.classes[label]
        return str(label)

    def budget(self, section_name: str) -> Budget:
        """Return the training budget a section records, falling back to its first run's config."""
        section = self.sections[section_name]
        budget = dict(section.get("budget") or {})
        for name in ("epochs", "train_subset"):
            if name not in budget and name in section:
                budget[name] = section[name]
        if "epochs" not in budget:
            keys = self.section_keys(section_name)
            if keys:
                train = self.runs[keys[0]]["config"]["train"]
                budget = {"epochs": train["epochs"], "train_subset": train.get("train_subset")}
        subset = budget.get("train_subset")
        images = min(int(subset), self.n_train) if subset else self.n_train
        return Budget(budget.get("epochs"), images)

    def section_keys(self, section_name: str) -> list[str]:
        """Return every run key a section names, in order, without repeats."""
        section = self.sections[section_name]
        groups: list[Sequence[str]] = [section.get("runs", [])]
        groups += [item.get("runs", []) for item in section.get("cells", [])]
        groups += [item.get("runs", []) for item in section.get("steps", [])]
        if "run" in section:
            groups.append([section["run"]])
        return list(dict.fromkeys(key for group in groups for key in group))

    def seeds(self) -> list[int]:
        seeds = {int(run["config"]["seed"]) for run in self.runs.values()}
        return sorted(seeds)


def _figure(
    name: str, caption: str, draw: Callable[..., None], *args: Any, **kwargs: Any
) -> FigureSpec:
    return FigureSpec(name, caption, partial(_draw_at, draw, args, kwargs))


def _draw_at(
    draw: Callable[..., None], args: tuple[Any, ...], kwargs: dict[str, Any], path: Path
) -> None:
    draw(*args, path, **kwargs)


# ---------------------------------------------------------------------------
# 0. Summary


def summary_section(study: Study) -> Section:
    results = study.results
    info = results["study"]
    environment = results.get("environment", {})
    dataset = results["dataset"]
    split = dataset["split"]
    device = str(info.get("device", MISSING))
    device_name = environment.get("device_name")
    if device_name and device_name != device:
        device = f"{device} ({device_name})"

    rows = [
        [
            "dataset",
            f"{study.dataset_name}, {len(study.classes)} classes, "
            f"images {shape_text(study.image_shape)}",
        ],
        [
            "split",
            f"{split['train']:,} train, {split['validation']:,} validation, {split['test']:,} test",
        ],
        ["split rule", str(dataset.get("split_rule", MISSING))],
        ["date", f"{info.get('started', MISSING)} to {info.get('finished', MISSING)}"],
        ["device", str(device)],
        ["precision", str(environment.get("precision", MISSING))],
        ["seeds", ", ".join(str(seed) for seed in study.seeds())],
        ["total wall time", seconds(info.get("wall_time_s"))],
        ["quick mode", "yes" if info.get("quick") else "no"],
        [
            "versions",
            f"cnnlab {results.get('cnnlab_version', MISSING)}, "
            f"torch {environment.get('torch', MISSING)}",
        ],
    ]

    section = Section("Summary", "summary")
    section.blocks.append(Table(["item", "value"], rows))
    section.blocks.append(Paragraph(" ".join(_summary_sentences(study))))
    section.blocks.append(
        Paragraph(
            "Model selection (the best stride and kernel, the best α) uses the validation split "
            "only. The test split is reported and never used to choose anything."
        )
    )

    return section


def _summary_sentences(study: Study) -> list[str]:
    sentences = []
    if "baseline" in study.sections:
        cell = study.cell(study.sections["baseline"]["runs"])
        test = cell.summary("test_accuracy")
        if test is None:
            sentences.append("Every baseline run diverged, so the baseline has no accuracy.")
        else:
            sentences.append(
                f"The baseline reached a test accuracy of {percent_summary(test)} "
                f"({_seed_count(test.n)}; "
                f"validation {percent_summary(cell.summary('val_accuracy'))})."
            )
    best_cell = _best_stride_kernel(study)
    if best_cell is not None:
        spec, cell = best_cell
        sentences.append(
            f"Of the stride × kernel cells, stride {spec['stride']} with kernel "
            f"{spec['kernel_size']} had the highest mean validation accuracy "
            f"({percent_summary(cell.summary('val_accuracy'))}; "
            f"test {percent_summary(cell.summary('test_accuracy'))})."
        )
    best_alpha = _best_alpha(study)
    if best_alpha is not None:
        spec, cell = best_alpha
        sentences.append(
            f"Of the L2 strengths, α = {alpha_text(spec['alpha'])} had the highest mean validation "
            f"accuracy ({percent_summary(cell.summary('val_accuracy'))}; "
            f"test {percent_summary(cell.summary('test_accuracy'))})."
        )
    return sentences


def _seed_count(n: int) -> str:
    return "one seed" if n == 1 else f"mean ± std over {n} seeds"


def _best_by_validation(
    study: Study, specs: Sequence[Mapping[str, Any]]
) -> tuple[Mapping[str, Any], Cell] | None:
    """Return the spec whose completed runs have the highest mean validation accuracy."""
    best: tuple[Mapping[str, Any], Cell] | None = None
    best_value = -math.inf

    for spec in specs:
        cell = study.cell(spec.get("runs", []))
        value = cell.mean("val_accuracy")
        if value is not None and value > best_value:
            best, best_value = (spec, cell), value
    return best


def _best_stride_kernel(study: Study) -> tuple[Mapping[str, Any], Cell] | None:
    if "stride_kernel" not in study.sections:
        return None

    cells = [cell for cell in study.sections["stride_kernel"]["cells"] if cell.get("valid", True)]
    return _best_by_validation(study, cells)


def _best_alpha(study: Study) -> tuple[Mapping[str, Any], Cell] | None:
    if "l2" not in study.sections:
        return None
    return _best_by_validation(study, study.sections["l2"]["cells"])


# ---------------------------------------------------------------------------
# 1. Architecture


def architecture_section(study: Study) -> Section | None:
    if "baseline" not in study.sections:
        return None
    run = study.runs[study.sections["baseline"]["runs"][0]]
    layers = run.get("architecture") or []
    if not layers:
        return None

    rows = [
        [
            str(layer["name"]),
            str(layer["kind"]),
            shape_text(layer["output_shape"]),
            count(layer["params"]),
            flops_text(layer["flops"]),
            MISSING if layer.get("receptive_field") is None else f"{layer['receptive_field']} px",
        ]
        for layer in layers
    ]
    total_params = sum(int(layer["params"]) for layer in layers)
    total_flops = sum(int(layer["flops"]) for layer in layers)
    rows.append(["total", "", "", count(total_params), flops_text(total_flops), ""])

    section = Section("Architecture", "architecture")
    section.blocks.append(
        Table(["layer", "kind", "output shape", "params", "FLOPs", "receptive field"], rows)
    )
    section.blocks.append(Paragraph(" ".join(_architecture_sentences(study, layers))))

    return section


def _architecture_sentences(study: Study, layers: Sequence[Mapping[str, Any]]) -> list[str]:
    total_params = sum(int(layer["params"]) for layer in layers)
    total_flops = sum(int(layer["flops"]) for layer in layers)
    sentences = [
        f"The baseline has {total_params:,} parameters and needs {flops_text(total_flops)} "
        "per image for a forward pass (2 FLOPs per multiply-add)."
    ]
    if total_params > 0:
        heaviest = max(layers, key=lambda layer: layer["params"])
        sentences.append(
            f"The layer with the most parameters is {heaviest['name']} "
            f"({100.0 * heaviest['params'] / total_params:.1f}% of them)."
        )
    if total_flops > 0:
        busiest = max(layers, key=lambda layer: layer["flops"])
        sentences.append(
            f"The layer with the most FLOPs is {busiest['name']} "
            f"({100.0 * busiest['flops'] / total_flops:.1f}% of them)."
        )
    fields = [layer for layer in layers if layer.get("receptive_field") is not None]
    if fields:
        last = fields[-1]
        side = max(study.image_shape[1:])
        sentences.append(
            f"A unit of {last['name']}, the last layer with a receptive field, sees "
            f"{last['receptive_field']}×{last['receptive_field']} input pixels, "
            f"{100.0 * last['receptive_field'] / side:.0f}% of the {side}-pixel image side."
        )
    return sentences


# ---------------------------------------------------------------------------
# 2. Training


def training_section(study: Study) -> Section | None:
    if "baseline" not in study.sections:
        return None
    keys = study.sections["baseline"]["runs"]
    cell = study.cell(keys)
    runs = cell.completed or cell.diverged
    histories = [run["history"] for run in runs if run["history"]]

    section = Section("Training", "training")
    if histories:
        show_l2 = any(float(run["config"]["train"].get("l2") or 0.0) > 0 for run in runs)
        caption = "Loss of the baseline against epoch"
        if len(histories) > 1:
            caption += f" (mean and ±1 std band over {len(histories)} seeds)"
        if show_l2:
            caption += "; right: the α‖w‖² part of the training loss"
        section.blocks.append(
            _figure("loss_curves", caption, figures.plot_loss_curves, histories, show_l2=show_l2)
        )
        section.blocks.append(
            _figure(
                "accuracy_curves",
                "Train (augmented batches), validation and test accuracy of the baseline "
                "against epoch",
                figures.plot_accuracy_curves,
                histories,
            )
        )
    section.blocks.append(_final_metrics_table(study, keys))
    section.blocks.append(Paragraph(" ".join(_training_sentences(study, cell))))

    return section


def _final_metrics_table(study: Study, keys: Sequence[str]) -> Table:
    rows = []

    for key in keys:
        run = study.runs[key]
        final = run["final"]
        rows.append(
            [
                str(run["config"]["seed"]),
                run["status"],
                str(len(run["history"])),
                percent(final.get("train_accuracy")),
                percent(final.get("train_clean_accuracy")),
                percent(final.get("val_accuracy")),
                percent(final.get("test_accuracy")),
                MISSING if final.get("val_loss") is None else f"{final['val_loss']:.4f}",
                seconds(final.get("train_time_s")),
                MISSING if final.get("images_per_s") is None else f"{final['images_per_s']:,.0f}",
            ]
        )
    cell = study.cell(keys)
    if len(cell.completed) > 1:
        rows.append(
            [
                "mean ± std",
                f"{len(cell.completed)} completed",
                "",
                percent_summary(cell.summary("train_accuracy")),
                percent_summary(cell.summary("train_clean_accuracy")),
                percent_summary(cell.summary("val_accuracy")),
                percent_summary(cell.summary("test_accuracy")),
                "",
                seconds(cell.mean("train_time_s")),
                "",
            ]
        )

    columns = [
        "seed",
        "status",
        "epochs",
        "train acc (augmented)",
        "train acc (clean)",
        "val acc",
        "test acc",
        "val loss",
        "train time",
        "images/s",
    ]
    return Table(columns, rows, "Final metrics of the baseline runs")


def _training_sentences(study: Study, cell: Cell) -> list[str]:
    if not cell.completed:
        epochs = ", ".join(str(run.get("diverged_epoch")) for run in cell.diverged)
        return [f"Every baseline run diverged (in epoch {epochs}), so there are no final metrics."]
    sentences = []
    gaps = [
        run["final"]["train_clean_accuracy"] - run["final"]["val_accuracy"]
        for run in cell.completed
        if run["final"].get("train_clean_accuracy") is not None
        and run["final"].get("val_accuracy") is not None
    ]
    if gaps:
        spread = "" if len(gaps) == 1 else f", range {points(min(gaps))} to {points(max(gaps))}"
        seeds = "one seed" if len(gaps) == 1 else f"mean over {len(gaps)} seeds"
        sentences.append(
            "The overfitting gap, clean training accuracy minus validation accuracy, "
            f"was {points(stats.mean(gaps))} ({seeds}{spread})."
        )
    sentences.append(_validation_trend(cell.completed))
    budget = study.budget("baseline")
    time = cell.mean("train_time_s")
    rate = cell.mean("images_per_s")
    sentences.append(
        f"Each run trained for {budget.text()}, in {seconds(time)} of training time"
        + (f" at {rate:,.0f} images/s." if rate is not None else ".")
    )
    if cell.diverged:
        sentences.append(f"Runs that diverged: {cell.status_text()}.")
    return sentences


def _validation_trend(runs: Sequence[Mapping[str, Any]]) -> str:
    """Return a sentence on how many runs still had a falling validation loss in the last epoch."""
    falling: list[float] = []
    minima: list[str] = []

    for run in runs:
        losses = [
            (entry["epoch"], entry["val_loss"])
            for entry in run["history"]
            if entry.get("val_loss") is not None
        ]
        if len(losses) < 2:
            continue
        (_, before), (_, last) = losses[-2], losses[-1]
        if last < before:
            falling.append(before - last)
        else:
            best_epoch, best = min(losses, key=lambda item: item[1])
            minima.append(
                f"seed {run['config']['seed']} was lowest at epoch {best_epoch} ({best:.4f}) "
                f"and ended at {last:.4f}"
            )
    measured = len(falling) + len(minima)
    if measured == 0:
        return "No run has two finite validation losses, so the trend is unknown."
    sentence = (
        f"Validation loss was still falling in the last epoch in {len(falling)} of {measured} runs"
    )
    if falling:
        sentence += f" (by {stats.mean(falling):.4f} on average), so more epochs may help"
    if minima:
        sentence += f"; it had stopped falling where {'; '.join(minima)}"
    return sentence + "."


# ---------------------------------------------------------------------------
# 3. Weights and biases


def weights_section(study: Study) -> Section | None:
    if "baseline" not in study.sections:
        return None
    run = study.runs[study.sections["baseline"]["runs"][0]]
    weights = run.get("weights") or {}
    layers = weights.get("layers") or {}
    if not layers:
        return None

    section = Section("Weights and biases", "weights")
    section.blocks.append(
        _figure(
            "weight_histograms",
            "Final values of every parameter tensor of the baseline (seed "
            f"{run['config']['seed']}); weights blue, biases red",
            figures.plot_weight_histograms,
            layers,
        )
    )
    section.blocks.append(
        _figure(
            "weight_evolution",
            "Quantiles of every parameter tensor against epoch (0 = initialisation)",
            figures.plot_weight_evolution,
            weights["epochs"],
            layers,
        )
    )

    rows = []

    for name, layer in layers.items():
        stds = layer["std"]
        last = layer["quantiles"][-1]
        rows.append(
            [
                name,
                layer["kind"],
                _number(stds[0]),
                _number(stds[-1]),
                _std_ratio_text(stds[0], stds[-1]),
                _number(last[3]),
                f"{_number(last[1])} to {_number(last[5])}",
                _number(_max_magnitude(last)),
            ]
        )

    columns = [
        "tensor",
        "kind",
        "std at init",
        "std at end",
        "std ratio",
        "median",
        "p5 to p95",
        "max |value|",
    ]
    section.blocks.append(
        Table(columns, rows, "Spread of each tensor at initialisation and at the end")
    )
    section.blocks.append(Paragraph(" ".join(_weight_sentences(layers))))

    return section


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def _max_magnitude(quantiles: Sequence[float | None]) -> float | None:
    low, high = quantiles[0], quantiles[-1]
    if low is None or high is None:
        return None
    return max(abs(low), abs(high))


def _std_ratio(start: float | None, end: float | None) -> float | None:
    if start is None or end is None or start <= 0:
        return None
    return end / start


def _std_ratio_text(start: float | None, end: float | None) -> str:
    ratio = _std_ratio(start, end)
    if ratio is None:
        return "constant at init" if start == 0 else MISSING
    return f"×{ratio:.2f}"


def _weight_sentences(layers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    ratios = {
        name: ratio
        for name, layer in layers.items()
        if (ratio := _std_ratio(layer["std"][0], layer["std"][-1])) is not None
    }
    sentences = []
    if ratios:
        grew = max(ratios, key=lambda name: ratios[name])
        shrank = min(ratios, key=lambda name: ratios[name])
        if ratios[grew] > 1:
            sentences.append(
                f"From initialisation to the end, the spread (std) of {grew} grew most, "
                f"×{ratios[grew]:.2f}."
            )
        else:
            sentences.append(
                f"From initialisation to the end, no tensor's spread (std) grew. That of {grew} "
                f"shrank least, ×{ratios[grew]:.2f}."
            )
        if shrank != grew:
            direction = "shrank most" if ratios[shrank] < 1 else "grew least"
            sentences.append(f"That of {shrank} {direction}, ×{ratios[shrank]:.2f}.")
    constant = [name for name, layer in layers.items() if layer["std"][0] == 0]
    if constant:
        sentences.append(f"{', '.join(constant)} started constant, so no ratio is given.")
    biases = {
        name: magnitude
        for name, layer in layers.items()
        if layer["kind"] == "bias"
        and (magnitude := _max_magnitude(layer["quantiles"][-1])) is not None
    }
    if biases:
        largest = max(biases, key=lambda name: biases[name])
        medians = [
            median for name in biases if (median := layers[name]["quantiles"][-1][3]) is not None
        ]
        if not medians:
            spread = "no bias median is finite"
        elif min(medians) == max(medians):
            spread = f"every bias median is {medians[0]:.4g}"
        else:
            spread = f"the bias medians lie between {min(medians):.4g} and {max(medians):.4g}"
        sentences.append(
            f"The largest final bias magnitude is {biases[largest]:.4g} in {largest}, and {spread}."
        )
    if not sentences:
        sentences.append(
            "The final weight statistics are not finite, so no spread or bias is compared."
        )
    return sentences


# ---------------------------------------------------------------------------
# 4. Stride × filter size


def stride_kernel_section(study: Study) -> Section | None:
    if "stride_kernel" not in study.sections:
        return None
    sweep = study.sections["stride_kernel"]

    section = Section("Stride × filter size", "stride-kernel")
    budget = study.budget("stride_kernel")
    sentence = f"Each cell trained for {budget.text()}"
    if "baseline" in study.sections and study.budget("baseline") != budget:
        sentence += (
            f", which differs from the baseline's {study.budget('baseline').text()}, so compare "
            "the cells with each other rather than with the baseline"
        )
    section.blocks.append(Paragraph(sentence + "."))
    section.blocks.append(Paragraph(_grid_scope_sentence(study, sweep)))

    rows = [_stride_kernel_row(study, spec) for spec in sweep["cells"]]

    columns = [
        "stride",
        "kernel",
        "val acc",
        "test acc",
        "params",
        "FLOPs",
        "conv output sizes",
        "train time",
        "status",
    ]
    section.blocks.append(
        Table(columns, rows, "Accuracy (mean ± std over seeds) and cost of each cell")
    )

    points_data = _stride_kernel_points(study, sweep["cells"])
    if points_data:
        section.blocks.append(
            _figure(
                "stride_kernel_accuracy",
                "Validation and test accuracy against kernel size, one line per stride"
                + (" (error bars: ±1 std over seeds)" if _multi_seed(points_data) else ""),
                figures.plot_accuracy_vs_kernel,
                points_data,
            )
        )
        cost_points = [
            {
                "label": f"s{point['stride']} k{point['kernel_size']}",
                "flops": point["flops"],
                "train_time_s": point["train_time_s"],
                "test_mean": point["test_mean"],
                "test_std": point["test_std"],
            }
            for point in points_data
            if point["flops"] and point["train_time_s"]
        ]
        if cost_points:
            section.blocks.append(
                _figure(
                    "stride_kernel_cost",
                    "Test accuracy against FLOPs per image and against training time",
                    figures.plot_cost_vs_accuracy,
                    cost_points,
                )
            )
    section.blocks.append(Paragraph(" ".join(_stride_kernel_sentences(study, sweep["cells"]))))

    return section


def _grid_scope_sentence(study: Study, sweep: Mapping[str, Any]) -> str:
    """Say which conv blocks the grid changed and what happened to their pooling."""
    baseline_keys = study.sections.get("baseline", {}).get("runs", [])
    model = study.runs[baseline_keys[0]]["config"]["model"] if baseline_keys else {}
    n_blocks = len(model.get("blocks", []))
    changed = list(sweep.get("blocks") or [])
    if not changed or (n_blocks and len(changed) == n_blocks):
        scope = "every conv block"
    else:
        names = ", ".join(f"block{i + 1}" for i in changed)
        scope = f"{names} only (the other blocks keep the baseline's settings)"
    sentence = (
        f"Each cell sets the stride and kernel size of {scope}, with padding of half the "
        "kernel size so that stride 1 keeps the map size."
    )
    if sweep.get("replace_pooling", False):
        sentence += (
            " At a stride above 1 those blocks drop their max pooling, because the strided "
            "convolution already downsamples."
        )
    return sentence


def _multi_seed(points_data: Sequence[Mapping[str, Any]]) -> bool:
    return any(point["test_std"] is not None for point in points_data)


def _stride_kernel_row(study: Study, spec: Mapping[str, Any]) -> list[str]:
    stride, kernel = str(spec["stride"]), str(spec["kernel_size"])
    if not spec.get("valid", True):
        reason = spec.get("reason", "invalid")
        return [stride, kernel, *[MISSING] * 6, f"not trained: {reason}"]
    cell = study.cell(spec["runs"])
    sizes = " → ".join(shape_text(size) for size in spec.get("feature_map_sizes", [])) or MISSING
    if cell.completed:
        val, test = (
            percent_summary(cell.summary("val_accuracy")),
            percent_summary(cell.summary("test_accuracy")),
        )
    else:
        val = test = "diverged"
    return [
        stride,
        kernel,
        val,
        test,
        count(cell.cost("params")),
        flops_text(cell.cost("flops")),
        sizes,
        seconds(cell.cost("train_time_s")),
        cell.status_text(),
    ]


def _stride_kernel_points(study: Study, specs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    result = []

    for spec in specs:
        if not spec.get("valid", True):
            continue
        cell = study.cell(spec["runs"])
        val, test = cell.summary("val_accuracy"), cell.summary("test_accuracy")
        if val is None or test is None:
            continue
        result.append(
            {
                "stride": spec["stride"],
                "kernel_size": spec["kernel_size"],
                "val_mean": val.mean,
                "val_std": val.std,
                "test_mean": test.mean,
                "test_std": test.std,
                "flops": cell.cost("flops"),
                "train_time_s": cell.cost("train_time_s"),
            }
        )
    return result


def _compare_cells(study: Study, subject: str, before: Cell, after: Cell) -> str:
    a, b = before.values("test_accuracy"), after.values("test_accuracy")
    result = stats.compare_accuracies(a, b, study.n_test)
    return change_sentence(subject, "test accuracy", stats.mean(a), stats.mean(b), result)


def _stride_kernel_sentences(study: Study, specs: Sequence[Mapping[str, Any]]) -> list[str]:
    trained = {
        (spec["stride"], spec["kernel_size"]): study.cell(spec["runs"])
        for spec in specs
        if spec.get("valid", True) and study.cell(spec["runs"]).values("test_accuracy")
    }
    sentences = []

    for kernel in sorted({kernel for _, kernel in trained}):
        strides = sorted(stride for stride, size in trained if size == kernel)
        if len(strides) >= 2:
            low, high = strides[0], strides[-1]
            subject = f"At kernel {kernel}, going from stride {low} to stride {high}"
            sentences.append(
                _compare_cells(study, subject, trained[(low, kernel)], trained[(high, kernel)])
            )

    for stride in sorted({stride for stride, _ in trained}):
        kernels = sorted(size for size_stride, size in trained if size_stride == stride)
        if len(kernels) >= 2:
            low, high = kernels[0], kernels[-1]
            subject = f"At stride {stride}, going from kernel {low} to kernel {high}"
            sentences.append(
                _compare_cells(study, subject, trained[(stride, low)], trained[(stride, high)])
            )

    sentences += _cost_sentences(study, specs, trained)

    for spec in specs:
        if not spec.get("valid", True):
            sentences.append(
                f"Stride {spec['stride']} with kernel {spec['kernel_size']} was not trained: "
                f"{spec.get('reason', 'invalid')}."
            )
        elif study.cell(spec["runs"]).diverged:
            cell = study.cell(spec["runs"])
            sentences.append(
                f"Stride {spec['stride']} with kernel {spec['kernel_size']}: {cell.status_text()}."
            )
    return sentences


def _cost_sentences(
    study: Study, specs: Sequence[Mapping[str, Any]], trained: Mapping[tuple[int, int], Cell]
) -> list[str]:
    best = _best_stride_kernel(study)
    costed = {spec: cell for spec, cell in trained.items() if cell.cost("flops")}
    if best is None or not costed:
        return []

    best_spec, best_cell = best
    cheapest = min(costed, key=lambda spec: costed[spec].cost("flops") or math.inf)
    best_key = (best_spec["stride"], best_spec["kernel_size"])
    if cheapest == best_key:
        return [
            f"The best cell by validation accuracy, stride {best_key[0]} with kernel "
            f"{best_key[1]}, "
            "is also the cheapest in FLOPs."
        ]
    cheap_cell = costed[cheapest]
    flops_ratio = (best_cell.cost("flops") or 0.0) / (cheap_cell.cost("flops") or 1.0)
    sentence = (
        f"The best cell by validation accuracy, stride {best_key[0]} with kernel "
        f"{best_key[1]}, needs "
        f"{flops_ratio:.1f}× the FLOPs per image"
    )
    best_time, cheap_time = best_cell.cost("train_time_s"), cheap_cell.cost("train_time_s")
    if best_time and cheap_time:
        sentence += f" and {best_time / cheap_time:.1f}× the training time"
    sentence += f" of the cheapest cell, stride {cheapest[0]} with kernel {cheapest[1]}."
    subject = "Going from the cheapest to the best cell"
    return [sentence, _compare_cells(study, subject, cheap_cell, best_cell)]


# ---------------------------------------------------------------------------
# 5. Predictions


def predictions_section(study: Study) -> Section | None:
    if "predictions" not in study.sections:
        return None
    predictions = study.sections["predictions"]
    run = study.runs[predictions["run"]]

    section = Section("Predictions", "predictions")
    section.blocks.append(
        Paragraph(f"The model analysed here is the baseline run of seed {run['config']['seed']}.")
    )

    grids = (
        ("predictions_correct", "correct", "correct_images", "Correctly classified test images"),
        ("predictions_wrong", "wrong", "wrong_images", "Misclassified test images"),
        (
            "predictions_confident_wrong",
            "most_confident_wrong",
            "confident_wrong_images",
            "The most confident mistakes, most confident first",
        ),
    )

    for name, key, array, caption in grids:
        examples = predictions.get(key) or []
        if examples:
            titles = [_example_title(study, example) for example in examples]
            images = study.artifacts[array]
            section.blocks.append(
                _figure(
                    name,
                    caption + " (true, predicted, confidence)",
                    figures.plot_image_grid,
                    images,
                    titles,
                )
            )

    confusion = run.get("confusion") or []
    if confusion:
        section.blocks.append(
            _figure(
                "confusion_matrix",
                "Confusion matrix of the test set (rows true class, columns predicted)",
                figures.plot_confusion_matrix,
                confusion,
                study.classes,
            )
        )
    section.blocks.append(_per_class_table(study, predictions, confusion))
    section.blocks.append(Paragraph(" ".join(_prediction_sentences(study, predictions, confusion))))

    return section


def _example_title(study: Study, example: Mapping[str, Any]) -> str:
    return (
        f"true {study.class_name(example['true'])}\n"
        f"pred {study.class_name(example['pred'])} {100.0 * example['confidence']:.1f}%"
    )


def _per_class_accuracy(study: Study, predictions: Mapping[str, Any]) -> list[float | None]:
    values = predictions.get("per_class_accuracy") or []
    if isinstance(values, Mapping):
        return [values.get(name) for name in study.classes]
    return list(values)


def _per_class_table(
    study: Study, predictions: Mapping[str, Any], confusion: Sequence[Sequence[int]]
) -> Table:
    accuracies = _per_class_accuracy(study, predictions)

    rows = []

    for index, name in enumerate(study.classes):
        accuracy = accuracies[index] if index < len(accuracies) else None
        images, confused = MISSING, MISSING
        if confusion:
            row = list(confusion[index])
            images = f"{sum(row):,}"
            others = [(value, column) for column, value in enumerate(row) if column != index]
            value, column = max(others) if others else (0, index)
            if value > 0:
                confused = f"{study.class_name(column)} ({value:,})"
        rows.append([name, percent(accuracy), images, confused])
    return Table(["class", "accuracy", "test images", "most frequent wrong prediction"], rows)


def _prediction_sentences(
    study: Study, predictions: Mapping[str, Any], confusion: Sequence[Sequence[int]]
) -> list[str]:
    sentences = []
    total = (
        int(sum(sum(row) for row in confusion))
        if confusion
        else int(predictions.get("n_test", study.n_test))
    )
    wrong = int(predictions.get("n_wrong", 0))
    if total:
        sentences.append(
            f"The model misclassified {wrong:,} of {total:,} test images "
            f"({percent(wrong / total)})."
        )
    pairs = sorted(
        (
            (value, true, predicted)
            for true, row in enumerate(confusion)
            for predicted, value in enumerate(row)
            if true != predicted and value > 0
        ),
        reverse=True,
    )[:3]
    if pairs:
        listed = "; ".join(
            f"{study.class_name(true)} predicted as {study.class_name(predicted)} ({value:,} times)"
            for value, true, predicted in pairs
        )
        sentences.append(f"The most confused pairs were: {listed}.")
    accuracies = [
        (value, index)
        for index, value in enumerate(_per_class_accuracy(study, predictions))
        if value is not None
    ]
    if accuracies:
        weakest, strongest = min(accuracies), max(accuracies)
        sentences.append(
            f"The weakest class is {study.class_name(weakest[1])} at {percent(weakest[0])}, "
            f"the strongest {study.class_name(strongest[1])} at {percent(strongest[0])}."
        )
    confident = predictions.get("most_confident_wrong") or []
    if confident:
        top = max(confident, key=lambda example: example["confidence"])
        sentences.append(
            f"The most confident mistake was a test image of class {study.class_name(top['true'])} "
            f"predicted as {study.class_name(top['pred'])} "
            f"with confidence {percent(top['confidence'])}."
        )
    return sentences


# ---------------------------------------------------------------------------
# 6. Feature maps


def feature_maps_section(study: Study) -> Section | None:
    if "feature_maps" not in study.sections:
        return None
    feature_maps = study.sections["feature_maps"]
    layers = feature_maps.get("layers") or []

    section = Section("Feature maps", "feature-maps")
    inputs = study.artifacts["feature_input"]
    maps = [study.artifacts[f"feature_{index}"] for index in range(len(layers))]
    names = [str(layer["name"]) for layer in layers]
    indices = feature_maps.get("sample_indices") or list(range(len(inputs)))

    for sample in range(len(inputs)):
        label = indices[sample] if sample < len(indices) else sample
        section.blocks.append(
            _figure(
                f"feature_maps_{sample}",
                f"Test image {label} and up to 16 channels of each conv block's maps after the "
                "activation, each channel on its own colour scale",
                figures.plot_feature_maps,
                inputs[sample],
                [block[sample] for block in maps],
                names,
                channel_counts=[int(layer["channels"]) for layer in layers],
            )
        )

    side = max(study.image_shape[1:])

    rows = [
        [
            str(layer["name"]),
            str(layer["channels"]),
            shape_text(layer["spatial"]),
            MISSING if layer.get("receptive_field") is None else f"{layer['receptive_field']} px",
            MISSING
            if layer.get("receptive_field") is None
            else f"{100.0 * layer['receptive_field'] / side:.0f}%",
            percent(layer.get("active_fraction")),
            _number(layer.get("mean_activation")),
        ]
        for layer in layers
    ]

    columns = [
        "layer",
        "channels",
        "spatial size",
        "receptive field",
        "of image side",
        "active fraction",
        "mean activation",
    ]
    section.blocks.append(
        Table(
            columns,
            rows,
            "Measured over the whole test split; active = above zero after the activation",
        )
    )
    if layers:
        section.blocks.append(Paragraph(" ".join(_feature_sentences(study, layers))))

    return section


def _feature_sentences(study: Study, layers: Sequence[Mapping[str, Any]]) -> list[str]:
    first, last = layers[0], layers[-1]
    input_size = shape_text(study.image_shape[1:])
    sentences = [
        f"Spatial size shrinks from the {input_size} input to {shape_text(first['spatial'])} "
        f"at {first['name']} and {shape_text(last['spatial'])} at {last['name']}, while the "
        f"channels go from {study.image_shape[0]} to {first['channels']} and then "
        f"{last['channels']}."
    ]
    if first.get("receptive_field") is not None and last.get("receptive_field") is not None:
        side = max(study.image_shape[1:])
        sentences.append(
            f"The receptive field grows from {first['receptive_field']} to "
            f"{last['receptive_field']} pixels, covering "
            f"{100.0 * last['receptive_field'] / side:.0f}% of the {side}-pixel image side."
        )
    start, end = first.get("active_fraction"), last.get("active_fraction")
    if start is not None and end is not None:
        if end == start:
            sentences.append(
                f"The active fraction is {percent(start)} at both {first['name']} "
                f"and {last['name']}."
            )
        else:
            trend, density = ("falls", "sparser") if end < start else ("rises", "denser")
            sentences.append(
                f"The active fraction {trend} from {percent(start)} at {first['name']} to "
                f"{percent(end)} at {last['name']}, so deeper maps are {density}."
            )
    return sentences


# ---------------------------------------------------------------------------
# 7. L2 penalty


def l2_section(study: Study) -> Section | None:
    if "l2" not in study.sections:
        return None
    specs = sorted(study.sections["l2"]["cells"], key=lambda spec: spec["alpha"])

    cells = [study.cell(spec["runs"]) for spec in specs]
    alphas = [float(spec["alpha"]) for spec in specs]

    section = Section("L2 penalty", "l2")
    section.blocks.append(Code("E = CE + α · Σ ‖w‖²"))
    section.blocks.append(
        Paragraph(
            "CE is the mean cross-entropy of a batch and the sum runs over the weights of the conv "
            "and linear layers, not over biases or batch-norm parameters. The penalty is part of "
            "the loss, so its gradient 2αw passes through the optimizer like the rest. It is not "
            f"the optimizer's weight decay option. Each α trained for {study.budget('l2').text()}."
        )
    )

    rows = []

    for alpha, cell in zip(alphas, cells, strict=True):
        rows.append(
            [
                alpha_text(alpha),
                percent_summary(cell.summary("train_clean_accuracy")),
                percent_summary(cell.summary("val_accuracy")),
                percent_summary(cell.summary("test_accuracy")),
                _gap_text(cell),
                _number(cell.mean("weight_norm_sq")),
                cell.status_text(),
            ]
        )

    columns = [
        "α",
        "train acc (clean)",
        "val acc",
        "test acc",
        "train - val gap",
        "final Σ‖w‖²",
        "status",
    ]
    section.blocks.append(Table(columns, rows, "Mean ± std over seeds"))
    section.blocks += _l2_figures(alphas, cells, specs)
    section.blocks.append(Paragraph(" ".join(_l2_sentences(study, alphas, cells))))

    return section


def _gaps(cell: Cell) -> list[float]:
    return [
        run["final"]["train_clean_accuracy"] - run["final"]["val_accuracy"]
        for run in cell.completed
        if run["final"].get("train_clean_accuracy") is not None
        and run["final"].get("val_accuracy") is not None
    ]


def _gap_text(cell: Cell) -> str:
    gaps = _gaps(cell)
    return points(stats.mean(gaps)) if gaps else MISSING


def _l2_figures(
    alphas: list[float], cells: list[Cell], specs: Sequence[Mapping[str, Any]]
) -> list[Block]:
    trained = [(alpha, cell) for alpha, cell in zip(alphas, cells, strict=True) if cell.completed]
    if not trained:
        return []
    series: dict[str, tuple[list[float], list[float | None]]] = {}

    for label, metric in (
        ("train", "train_clean_accuracy"),
        ("val", "val_accuracy"),
        ("test", "test_accuracy"),
    ):
        summaries = [cell.summary(metric) for _, cell in trained]
        if all(summary is not None for summary in summaries):
            series[label] = (
                [summary.mean for summary in summaries if summary is not None],
                [summary.std for summary in summaries if summary is not None],
            )
    trained_alphas = [alpha for alpha, _ in trained]
    blocks: list[Block] = [
        _figure(
            "l2_accuracy",
            "Clean train, validation and test accuracy against α",
            figures.plot_accuracy_vs_alpha,
            trained_alphas,
            series,
        )
    ]

    norms = [cell.summary("weight_norm_sq") for _, cell in trained]
    if all(norm is not None for norm in norms):
        blocks.append(
            _figure(
                "l2_weight_norm",
                "Final Σ‖w‖² over conv and linear weights against α",
                figures.plot_weight_norm_vs_alpha,
                trained_alphas,
                [norm.mean for norm in norms if norm is not None],
                [norm.std for norm in norms if norm is not None],
            )
        )

    panels = _histogram_panels(trained)
    if panels:
        blocks.append(
            _figure(
                "l2_histograms",
                "Final weight histograms across α (first completed run of each α), as densities",
                figures.plot_histograms_by_alpha,
                panels,
            )
        )
    return blocks


def _histogram_panels(
    trained: Sequence[tuple[float, Cell]],
) -> dict[str, list[tuple[float, Sequence[float], Sequence[float]]]]:
    """Return the first and the last weight tensor's histogram of each α, by panel title.

    In PyTorch's parameter order the first weight tensor is the first conv
    layer's and the last is the classifier's.
    """
    panels: dict[str, list[tuple[float, Sequence[float], Sequence[float]]]] = {}

    for alpha, cell in trained:
        layers = cell.completed[0].get("weights", {}).get("layers", {})
        names = [name for name, layer in layers.items() if layer["kind"] == "weight"]
        if not names:
            continue
        for role, name in (("first conv layer", names[0]), ("classifier layer", names[-1])):
            layer = layers[name]
            panels.setdefault(f"{role} ({name})", []).append(
                (alpha, layer["hist_edges"], layer["hist_counts"])
            )
    return panels


def _l2_sentences(study: Study, alphas: list[float], cells: list[Cell]) -> list[str]:
    best = _best_alpha(study)
    if best is None:
        return ["No α has a completed run, so there is nothing to compare."]

    best_spec, best_cell = best
    best_alpha = float(best_spec["alpha"])
    sentences = [
        f"α = {alpha_text(best_alpha)} had the highest mean validation accuracy "
        f"({percent_summary(best_cell.summary('val_accuracy'))}; test "
        f"{percent_summary(best_cell.summary('test_accuracy'))})."
    ]

    trained = [(alpha, cell) for alpha, cell in zip(alphas, cells, strict=True) if cell.completed]
    reference_alpha, reference = trained[0]
    if reference_alpha != best_alpha:
        subject = f"Compared with α = {alpha_text(reference_alpha)}, α = {alpha_text(best_alpha)}"
        sentences.append(_compare_cells(study, subject, reference, best_cell))
    largest_alpha, largest = trained[-1]
    if largest_alpha not in (best_alpha, reference_alpha):
        subject = f"Raising α from {alpha_text(best_alpha)} to {alpha_text(largest_alpha)}"
        sentences.append(_compare_cells(study, subject, best_cell, largest))

    start_norm, end_norm = reference.mean("weight_norm_sq"), largest.mean("weight_norm_sq")
    if start_norm and end_norm and largest_alpha != reference_alpha:
        sentences.append(
            f"The final Σ‖w‖² went from {start_norm:.4g} at α = {alpha_text(reference_alpha)} to "
            f"{end_norm:.4g} at α = {alpha_text(largest_alpha)} (×{end_norm / start_norm:.2f})."
        )

    start_gap, end_gap = _gaps(reference), _gaps(largest)
    if start_gap and end_gap and largest_alpha != reference_alpha:
        sentences.append(
            f"The train - val gap went from {points(stats.mean(start_gap))} to "
            f"{points(stats.mean(end_gap))} over the same range."
        )

    for alpha, cell in zip(alphas, cells, strict=True):
        if cell.diverged:
            sentences.append(f"α = {alpha_text(alpha)}: {cell.status_text()}.")
    return sentences


# ---------------------------------------------------------------------------
# 8. Preprocessing


PREPROCESS_DEFAULTS: dict[str, Any] = {
    "standardize": False,
    "whiten": False,
    "crop_padding": 0,
    "flip": False,
    "cutout": 0,
    "translate": 0,
}


def _active_flags(preprocess: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in preprocess.items() if value not in (False, 0, None)}


def _flags_text(flags: Mapping[str, Any]) -> str:
    if not flags:
        return "none"
    return ", ".join(name if value is True else f"{name}={value}" for name, value in flags.items())


def preprocessing_section(study: Study) -> Section | None:
    if "preprocessing" not in study.sections:
        return None
    steps = study.sections["preprocessing"]["steps"]

    section = Section("Preprocessing", "preprocessing")

    stages = {
        label: study.artifacts[name]
        for label, name in (
            ("raw", "stage_raw"),
            ("standardized", "stage_standardized"),
            ("augmented", "stage_augmented"),
        )
        if name in study.artifacts
    }
    if stages:
        section.blocks.append(
            _figure(
                "preprocessing_stages",
                "The same training images raw, standardized and augmented; float stages are "
                "rescaled per image for display",
                figures.plot_preprocessing_stages,
                stages,
            )
        )

    cells = [study.cell(step["runs"]) for step in steps]
    reference = cells[0] if cells and cells[0].completed else None

    rows = []

    for step, cell in zip(steps, cells, strict=True):
        change = MISSING
        mean, reference_mean = (
            cell.mean("test_accuracy"),
            reference.mean("test_accuracy") if reference else None,
        )
        if mean is not None and reference_mean is not None:
            change = points(mean - reference_mean)
        rows.append(
            [
                str(step["name"]),
                _flags_text(_active_flags(step["preprocess"])),
                percent_summary(cell.summary("test_accuracy")),
                change,
                cell.status_text(),
            ]
        )
    first_name = str(steps[0]["name"]) if steps else "none"

    columns = ["step", "preprocess", "test acc", f"change vs {first_name}", "status"]
    section.blocks.append(
        Table(columns, rows, f"Each step trained for {study.budget('preprocessing').text()}")
    )
    section.blocks.append(Paragraph(" ".join(_preprocessing_sentences(study, steps, cells))))

    return section


def _preprocessing_sentences(
    study: Study, steps: Sequence[Mapping[str, Any]], cells: list[Cell]
) -> list[str]:
    """Compare each step with the previous one when it only adds to it, else with the first step."""
    sentences = []

    for index in range(1, len(steps)):
        cell = cells[index]
        flags = _active_flags(steps[index]["preprocess"])
        previous_flags = _active_flags(steps[index - 1]["preprocess"])
        cumulative = all(flags.get(name) == value for name, value in previous_flags.items())
        base = index - 1 if cumulative else 0
        base_flags = _active_flags(steps[base]["preprocess"])
        added = {name: value for name, value in flags.items() if base_flags.get(name) != value}
        if not cell.values("test_accuracy") or not cells[base].values("test_accuracy"):
            sentences.append(
                f"Step {steps[index]['name']}: {cell.status_text()}, so it is not compared."
            )
            continue
        subject = f"Adding {_flags_text(added)} to step {steps[base]['name']}"
        sentences.append(_compare_cells(study, subject, cells[base], cell))
    return sentences


# ---------------------------------------------------------------------------
# 9. Reproducibility


def reproducibility_section(study: Study, run_dir: Path) -> Section:
    results = study.results

    section = Section("Reproducibility", "reproducibility")
    section.blocks.append(
        Paragraph(
            f"Seeds: {', '.join(str(seed) for seed in study.seeds())}. The report is rebuilt "
            "from results.json and artifacts.npz, without training, by:"
        )
    )
    section.blocks.append(Code(f"cnnlab report {run_dir}"))
    environment = results.get("environment", {})
    section.blocks.append(
        Table(
            ["item", "value"],
            [[str(name), str(value)] for name, value in environment.items()],
            "Environment",
        )
    )

    differing = [
        key for key, run in study.runs.items() if run.get("environment") not in (None, environment)
    ]
    if differing:
        section.blocks.append(
            Paragraph(
                f"{len(differing)} runs were trained in a different environment (for example run "
                f"{differing[0]}), because they were reused from an earlier study in this folder."
            )
        )
    section.blocks.append(_run_table(study))
    section.blocks.append(Paragraph(_budget_statement(study)))

    config = results["study"].get("config")
    if config:
        section.blocks.append(Paragraph("The study configuration, as accepted by --config:"))
        section.blocks.append(Code(json.dumps(config, indent=1, sort_keys=True)))

    return section


def _run_table(study: Study) -> Table:
    users: dict[str, list[str]] = {}

    for name in study.sections:
        for key in study.section_keys(name):
            users.setdefault(key, []).append(name)

    rows = []

    for key, run in study.runs.items():
        train = run["config"]["train"]
        status = run["status"]
        if status != "completed":
            status = f"{status} in epoch {run.get('diverged_epoch')}"
        rows.append(
            [
                key,
                ", ".join(users.get(key, [])) or "unused",
                str(run["config"]["seed"]),
                status,
                str(train["epochs"]),
                count(train.get("train_subset")) if train.get("train_subset") else "all",
            ]
        )
    return Table(["run key", "sections", "seed", "status", "epochs", "train subset"], rows, "Runs")


def _budget_statement(study: Study) -> str:
    if "baseline" not in study.sections:
        return "There is no baseline, so no budget comparison is made."
    baseline = study.budget("baseline")
    cheaper = []

    for name in ("stride_kernel", "l2", "preprocessing"):
        if name not in study.sections:
            continue
        budget = study.budget(name)
        if (budget.epochs or 0) < (baseline.epochs or 0) or budget.images < baseline.images:
            cheaper.append(f"{SECTION_TITLES[name]} ({budget.text()})")
    if not cheaper:
        return f"Every section used the baseline's budget, {baseline.text()}."
    return (
        f"The baseline trained for {baseline.text()}. These sections used a cheaper budget: "
        f"{'; '.join(cheaper)}."
    )


SECTION_TITLES = {
    "stride_kernel": "Stride × filter size",
    "l2": "L2 penalty",
    "preprocessing": "Preprocessing",
}


def build_sections(study: Study, run_dir: Path) -> list[Section]:
    """Return the report's sections in order, skipping those whose data the study lacks."""
    builders: list[Callable[[Study], Section | None]] = [
        summary_section,
        architecture_section,
        training_section,
        weights_section,
        stride_kernel_section,
        predictions_section,
        feature_maps_section,
        l2_section,
        preprocessing_section,
    ]
    sections = [section for builder in builders if (section := builder(study)) is not None]
    sections.append(reproducibility_section(study, run_dir))

    return sections
