"""Report sections on the baseline model: architecture, training and weights.

Each builder takes a ``Study`` and returns a ``Section``, or None when the study
has no baseline section or lacks the data the section shows. The architecture
and weights sections describe the first baseline run, and the training section
covers every baseline seed: loss and accuracy curves, a table of final metrics,
and sentences on the overfitting gap and the validation-loss trend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cnnlab import figures, stats
from cnnlab.report_document import (
    MISSING,
    Paragraph,
    Section,
    Table,
    _figure,
    _number,
    count,
    flops_text,
    percent,
    percent_summary,
    points,
    seconds,
    shape_text,
)
from cnnlab.report_results import Cell, Study, overfitting_gap
from cnnlab.report_timing import noise_sentences

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
    gaps = [gap for run in cell.completed if (gap := overfitting_gap(run["final"])) is not None]
    if gaps:
        spread = "" if len(gaps) == 1 else f", range {points(min(gaps))} to {points(max(gaps))}"
        seeds = "one seed" if len(gaps) == 1 else f"mean over {len(gaps)} seeds"
        sentences.append(
            "The overfitting gap, clean training accuracy minus validation accuracy, "
            f"was {points(stats.mean(gaps))} ({seeds}{spread})."
        )
    sentences.append(_validation_trend(cell.completed))
    tta_runs = [run for run in cell.completed if run["final"].get("tta", "none") != "none"]
    if tta_runs:
        single = [run["final"].get("test_accuracy_single_view") for run in tta_runs]
        single_text = ", ".join(percent(value) for value in single)
        sentences.append(
            "The final validation and test accuracies average the predictions of several "
            f"views of each image ({tta_runs[0]['final']['tta']} test-time augmentation); "
            f"the same weights scored on the plain images reach {single_text} test accuracy, "
            "the value the curves end at."
        )
    budget = study.budget("baseline")
    time = cell.mean("train_time_s")
    rate = cell.mean("images_per_s")
    sentences.append(
        f"Each run trained for {budget.text()}, in {seconds(time)} of training time"
        + (f" at {rate:,.0f} images/s." if rate is not None else ".")
    )
    sentences += noise_sentences(cell.completed + cell.diverged, [cell], threshold=False)
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
    # A tensor that never changed from one value (a frozen batch-norm scale of 1)
    # would only add empty panels; the table below still lists it.
    constant = [name for name, layer in layers.items() if not any(layer["std"])]
    drawn = {name: layer for name, layer in layers.items() if name not in constant}
    left_out = f"; left out as constant at every epoch: {', '.join(constant)}" if constant else ""
    if not drawn:
        drawn = layers
        left_out = ""
    section.blocks.append(
        _figure(
            "weight_histograms",
            "Final values of every parameter tensor of the baseline (seed "
            f"{run['config']['seed']}); weights blue, biases red{left_out}",
            figures.plot_weight_histograms,
            drawn,
        )
    )
    section.blocks.append(
        _figure(
            "weight_evolution",
            "Quantiles of every parameter tensor against epoch (0 = initialisation)" + left_out,
            figures.plot_weight_evolution,
            weights["epochs"],
            drawn,
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
