"""Report sections on the three sweeps: stride × filter size, L2 penalty and preprocessing.

Each builder returns a ``Section`` that compares the sweep's cells (the steps,
for preprocessing) by accuracy over seeds, or None when the study did not run
that sweep. ``_compare_cells`` words the test-accuracy comparisons of the
discussion through ``cnnlab.stats``, so a difference within the noise is not
called an effect.
``_best_stride_kernel`` and ``_best_alpha`` pick the cell with the highest mean
validation accuracy, never test accuracy, and the summary section uses them too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from cnnlab import figures, stats
from cnnlab.report_document import (
    MISSING,
    Block,
    Code,
    Paragraph,
    Section,
    Table,
    _figure,
    _number,
    alpha_text,
    change_sentence,
    count,
    flops_text,
    percent_summary,
    points,
    seconds,
    shape_text,
)
from cnnlab.report_results import Cell, Study, overfitting_gap
from cnnlab.report_timing import compare_times, noise_sentences, time_change_sentence

# ---------------------------------------------------------------------------
# Model selection


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
    section.blocks.append(Paragraph(" ".join(_timing_noise_sentences(study, sweep["cells"]))))

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


def _timing_noise_sentences(study: Study, specs: Sequence[Mapping[str, Any]]) -> list[str]:
    cells = [study.cell(spec["runs"]) for spec in specs if spec.get("valid", True)]
    runs = [run for cell in cells for run in cell.completed + cell.diverged]
    return noise_sentences(runs, cells, threshold=True)


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
    sentence = change_sentence(subject, "test accuracy", stats.mean(a), stats.mean(b), result)
    if before.near_chance or after.near_chance:
        sentence += (
            " At least one side of this comparison is close to random guessing, "
            "so the budget was too short to rank them."
        )
    return sentence


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
    return [
        sentence,
        time_change_sentence(subject, compare_times(cheap_cell, best_cell)),
        _compare_cells(study, subject, cheap_cell, best_cell),
    ]


# ---------------------------------------------------------------------------
# 7. L2 penalty


def _optimizer(run: Mapping[str, Any]) -> Any:
    config = run.get("config")
    train = config.get("train") if isinstance(config, Mapping) else None
    return train.get("optimizer") if isinstance(train, Mapping) else None


def l2_section(study: Study) -> Section | None:
    if "l2" not in study.sections:
        return None
    specs = sorted(study.sections["l2"]["cells"], key=lambda spec: spec["alpha"])

    cells = [study.cell(spec["runs"]) for spec in specs]
    alphas = [float(spec["alpha"]) for spec in specs]

    section = Section("L2 penalty", "l2")
    section.blocks.append(Code("E = CE + α · Σ ‖w‖²"))
    covered = "the conv and linear layers"
    if any(_optimizer(study.runs[key]) == "muon" for spec in specs for key in spec["runs"]):
        covered = (
            "the linear layers (Muon, which trains the conv filters here, rescales them to a "
            "fixed norm before every step, so the penalty leaves them out)"
        )
    section.blocks.append(
        Paragraph(
            f"CE is the mean cross-entropy of a batch and the sum runs over the weights of "
            f"{covered}, not over biases or batch-norm parameters. The penalty is part of "
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
    return [gap for run in cell.completed if (gap := overfitting_gap(run["final"])) is not None]


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
    "alternate_flip": False,
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
