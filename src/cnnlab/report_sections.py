"""Report sections built from results.json and artifacts.npz, as a neutral document.

Each ``*_section`` function returns a ``Section`` of paragraphs, tables, code
blocks and figure specs, or None when its data is absent from the study. The
renderers in ``cnnlab.report`` turn sections into Markdown and HTML, and draw
each ``FigureSpec`` once. Every sentence of a discussion is computed from the
stored numbers. Differences are worded through ``cnnlab.stats``, so a
difference within the noise is never described as an effect.

This module builds the two sections that cover the whole study, the summary and
reproducibility, and ``build_sections`` returns every section in report order.
The other builders are in ``report_baseline``, ``report_analysis`` and
``report_sweeps``, and the pieces they share are in ``report_document`` and
``report_results``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cnnlab.report_analysis import feature_maps_section, predictions_section
from cnnlab.report_baseline import architecture_section, training_section, weights_section
from cnnlab.report_document import (
    MISSING,
    Code,
    Paragraph,
    Section,
    Table,
    alpha_text,
    count,
    percent_summary,
    seconds,
    shape_text,
)
from cnnlab.report_results import Study
from cnnlab.report_sweeps import (
    _best_alpha,
    _best_stride_kernel,
    l2_section,
    preprocessing_section,
    stride_kernel_section,
)

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

    seeds = study.seeds()
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
        # "seeds | 0" read as a count of none, so one seed gets the singular label.
        ["seed" if len(seeds) == 1 else "seeds", ", ".join(map(str, seeds))],
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
            [[str(name), _environment_value(value)] for name, value in environment.items()],
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


def _environment_value(value: object) -> str:
    """Format an environment entry, with yes or no for a boolean such as channels_last."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return MISSING
    return str(value)


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
