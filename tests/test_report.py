"""Tests of write_report on synthetic studies: files, self-containment, and numbers in the text."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

import fake_results
from cnnlab import (
    report,
    report_baseline,
    report_document,
    report_results,
    report_sections,
    report_sweeps,
    report_timing,
    stats,
)
from cnnlab.cli import main
from cnnlab.errors import DataError
from cnnlab.report import load_artifacts, render_html, render_markdown, write_report
from cnnlab.report_document import Paragraph
from cnnlab.store import atomic_write_bytes, atomic_write_json

HEADINGS = [
    "Summary",
    "Architecture",
    "Training",
    "Weights and biases",
    "Stride × filter size",
    "Predictions",
    "Feature maps",
    "L2 penalty",
    "Reproducibility",
]


def save_study(run_dir: Path, results: dict, artifacts: dict) -> None:
    """Write results.json and artifacts.npz the way the study does."""
    atomic_write_json(run_dir / "results.json", results)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **artifacts)
    atomic_write_bytes(run_dir / "artifacts.npz", buffer.getvalue())


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """A one-seed MNIST-like report, read back from results.json and artifacts.npz on disk."""
    run_dir = tmp_path_factory.mktemp("mnist")
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    save_study(run_dir, results, artifacts)
    paths = write_report(run_dir)
    return run_dir, paths, results


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A three-seed CIFAR-like report, built from in-memory results."""
    run_dir = tmp_path_factory.mktemp("cifar")
    results, artifacts = fake_results.make_study("cifar10", seeds=3)
    paths = write_report(run_dir, results, artifacts)
    return run_dir, paths, results


def markdown(report) -> str:
    run_dir, _, _ = report
    return (run_dir / "report.md").read_text(encoding="utf-8")


def html_text(report) -> str:
    run_dir, _, _ = report
    return (run_dir / "report.html").read_text(encoding="utf-8")


def section_text(text: str, heading: str) -> str:
    """Return the Markdown of one numbered section, up to the next section heading."""
    match = re.search(rf"^## \d+\. {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"section {heading!r} not found"
    return match.group(1)


def cell_values(results: dict, keys: list[str], metric: str) -> list[float]:
    runs = [results["runs"][key] for key in keys]
    return [run["final"][metric] for run in runs if run["status"] == "completed"]


@pytest.mark.parametrize("name", ["mnist", "cifar"])
def test_report_writes_every_file(name, request):
    run_dir, paths, _ = request.getfixturevalue(name)
    assert paths["md"] == run_dir / "report.md"
    assert paths["html"] == run_dir / "report.html"
    figures = sorted(name for name in paths if name.startswith("figures/"))
    assert len(paths) == len(figures) + 2
    for relative in figures:
        assert paths[relative] == run_dir / relative
    for path in paths.values():
        assert path.is_file(), path
    assert len(figures) >= 14
    for relative in figures:
        assert paths[relative].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["mnist", "cifar"])
def test_markdown_figures_exist(name, request):
    report = request.getfixturevalue(name)
    run_dir, paths, _ = report
    referenced = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", markdown(report))
    assert referenced
    assert sorted(referenced) == sorted(name for name in paths if name.startswith("figures/"))
    for relative in referenced:
        assert (run_dir / relative).is_file()


@pytest.mark.parametrize("name", ["mnist", "cifar"])
def test_html_is_self_contained(name, request):
    report = request.getfixturevalue(name)
    _, paths, _ = report
    text = html_text(report)
    figure_count = sum(1 for name in paths if name.startswith("figures/"))
    assert 'src="http' not in text
    assert 'href="http' not in text
    assert "<script" not in text.lower()
    assert "<link" not in text.lower()
    assert "figures/" not in text
    assert text.count('src="data:image/png;base64,') == figure_count
    assert "<style>" in text


@pytest.mark.parametrize("name", ["mnist", "cifar"])
def test_section_headings_present(name, request):
    report = request.getfixturevalue(name)
    text = markdown(report)
    page = html_text(report)
    headings = HEADINGS[:-1] + ["Preprocessing"] * (name == "cifar") + HEADINGS[-1:]
    for number, heading in enumerate(headings):
        assert f"## {number}. {heading}\n" in text
        assert f"<h2>{number}. {heading}</h2>" in page.replace("&amp;", "&")


def test_preprocessing_only_for_cifar(mnist, cifar):
    assert "Preprocessing" not in markdown(mnist)
    assert "## 8. Preprocessing\n" in markdown(cifar)
    assert "## 9. Reproducibility\n" in markdown(cifar)


@pytest.mark.parametrize("name", ["mnist", "cifar"])
def test_best_alpha_is_highest_validation(name, request):
    report = request.getfixturevalue(name)
    _, _, results = report
    cells = results["sections"]["l2"]["cells"]
    means = {
        cell["alpha"]: stats.mean(cell_values(results, cell["runs"], "val_accuracy"))
        for cell in cells
    }
    best = max(means, key=lambda alpha: means[alpha])
    assert best == fake_results.BEST_ALPHA
    text = section_text(markdown(report), "L2 penalty")
    assert f"α = {best:g} had the highest mean validation accuracy" in text
    summary = section_text(markdown(report), "Summary")
    assert f"α = {best:g} had the highest mean validation accuracy" in summary


def test_l2_formula_and_scope(cifar):
    text = section_text(markdown(cifar), "L2 penalty")
    assert "E = CE + α · Σ ‖w‖²" in text
    assert "not over biases or batch-norm parameters" in text
    assert "not the optimizer's weight decay" in text


def test_l2_scope_with_muon(cifar):
    _, _, results = cifar
    edited = copy.deepcopy(results)
    for cell in edited["sections"]["l2"]["cells"]:
        for key in cell["runs"]:
            edited["runs"][key]["config"]["train"]["optimizer"] = "muon"
    section = report_sweeps.l2_section(report_results.Study(edited, {}))
    assert section is not None
    text = " ".join(block.text for block in section.blocks if isinstance(block, Paragraph))
    assert "the sum runs over the weights of the linear layers (Muon" in text
    assert "conv and linear layers" not in text


def test_one_seed_differences_unconfirmed(mnist):
    text = section_text(markdown(mnist), "Stride × filter size")
    assert "unconfirmed: one seed" in text
    assert "consistent over" not in text
    # The planted 2-point stride effect is beyond the binomial noise of 10,000 images,
    # the 0.1-point kernel effect is not.
    assert "going from stride 1 to stride 3 lowered test accuracy" in text
    assert "going from kernel 3 to kernel 7 changed test accuracy" in text


def test_three_seed_differences_worded(cifar):
    text = section_text(markdown(cifar), "Stride × filter size")
    assert "unconfirmed: one seed" not in text
    assert "consistent over" in text
    assert "going from stride 1 to stride 3 lowered test accuracy" in text


def test_stride_effect_numbers_match_data(cifar):
    _, _, results = cifar
    cells = {
        (cell["stride"], cell["kernel_size"]): cell
        for cell in results["sections"]["stride_kernel"]["cells"]
    }
    before = cell_values(results, cells[(1, 3)]["runs"], "test_accuracy")
    after = cell_values(results, cells[(3, 3)]["runs"], "test_accuracy")
    expected = (
        f"At kernel 3, going from stride 1 to stride 3 lowered test accuracy from "
        f"{100 * stats.mean(before):.2f}% to {100 * stats.mean(after):.2f}% "
        f"({100 * (stats.mean(after) - stats.mean(before)):+.2f} points"
    )
    assert expected in markdown(cifar)


def test_budget_stated(cifar):
    text = section_text(markdown(cifar), "Stride × filter size")
    budget = f"Each cell trained for 3 epochs on {fake_results.SWEEP_SUBSET:,} training images"
    assert budget in text
    assert "differs from the baseline's 6 epochs on 45,000 training images" in text
    reproducibility = section_text(markdown(cifar), "Reproducibility")
    assert "These sections used a cheaper budget: Stride × filter size" in reproducibility
    assert "L2 penalty (" not in reproducibility


def test_diverged_run_shown(mnist, cifar):
    one_seed = section_text(markdown(mnist), "Stride × filter size")
    row = next(line for line in one_seed.splitlines() if line.startswith("| 2 | 7 |"))
    assert "| diverged | diverged |" in row
    assert "diverged (1 of 1 runs, in epoch 2)" in row
    three_seeds = section_text(markdown(cifar), "Stride × filter size")
    row = next(line for line in three_seeds.splitlines() if line.startswith("| 2 | 7 |"))
    assert "1 of 3 runs diverged (in epoch 2), excluded from the means" in row
    assert "diverged in epoch 2" in section_text(markdown(cifar), "Reproducibility")


def test_invalid_cell_shown_with_reason(mnist):
    text = section_text(markdown(mnist), "Stride × filter size")
    row = next(line for line in text.splitlines() if line.startswith("| 3 | 7 |"))
    assert "not trained: invalid stride 3, kernel 7" in row
    assert "Stride 3 with kernel 7 was not trained" in text


def test_summary_numbers_match_data(cifar):
    _, _, results = cifar
    keys = results["sections"]["baseline"]["runs"]
    test = stats.summarize(cell_values(results, keys, "test_accuracy"))
    assert test.std is not None
    expected = f"test accuracy of {100 * test.mean:.2f}% ± {100 * test.std:.2f}%"
    text = section_text(markdown(cifar), "Summary")
    assert expected in text
    assert "mean ± std over 3 seeds" in text
    assert "The test split is reported and never used to choose anything." in text


def test_summary_labels_one_seed_in_the_singular(mnist, cifar):
    assert "| seed | 0 |" in section_text(markdown(mnist), "Summary")
    assert "| seeds | 0, 1, 2 |" in section_text(markdown(cifar), "Summary")


def test_summary_names_best_cell_by_validation(mnist):
    _, _, results = mnist
    best = max(
        (cell for cell in results["sections"]["stride_kernel"]["cells"] if cell["valid"]),
        key=lambda cell: stats.mean(cell_values(results, cell["runs"], "val_accuracy") or [0.0]),
    )
    text = section_text(markdown(mnist), "Summary")
    assert f"stride {best['stride']} with kernel {best['kernel_size']} had the highest" in text


def test_prediction_discussion_from_confusion(cifar):
    text = section_text(markdown(cifar), "Predictions")
    true, predicted = fake_results.CONFUSED_PAIR
    classes = fake_results.CIFAR_CLASSES
    assert (
        f"The most confused pairs were: {classes[true]} predicted as "
        f"{classes[predicted]} (40 times)" in text
    )
    assert f"The weakest class is {classes[fake_results.WEAKEST_CLASS]} at 92.50%" in text
    assert "| cat | 92.50% | 1,000 | dog (40) |" in text


def test_feature_map_discussion(mnist):
    text = section_text(markdown(mnist), "Feature maps")
    assert (
        "The maps keep the input's 28×28 size at block1.conv and measure 14×14 at block2.conv"
        in text
    )
    assert "The active fraction falls from 55.00% at block1.conv to 43.00% at block2.conv" in text
    assert "| block2.conv | 32 | 14×14 | 8 px | 29% | 43.00% | 0.6 |" in text


def test_training_discussion(mnist):
    text = section_text(markdown(mnist), "Training")
    assert "overfitting gap" in text
    assert "+2.00 points" in text
    assert "Validation loss was still falling in the last epoch in 1 of 1 runs" in text
    assert "6 epochs on 55,000 training images" in text


def test_weights_discussion(cifar):
    text = section_text(markdown(cifar), "Weights and biases")
    # The planted spread grows most in the last tensor, the classifier bias.
    assert "the spread (std) of head.4.bias grew most, ×2.28" in text
    assert "| features.0.conv.weight | weight |" in text


def test_reproducibility_lists_runs_and_command(mnist):
    run_dir, _, results = mnist
    text = section_text(markdown(mnist), "Reproducibility")
    assert f"cnnlab report {run_dir}" in text
    for key in results["runs"]:
        assert f"| {key} |" in text


def test_missing_sections_skipped(tmp_path):
    results, _ = fake_results.make_study("mnist", seeds=1)
    for name in ("stride_kernel", "predictions", "feature_maps"):
        del results["sections"][name]
    text = build_markdown(results, {}, tmp_path)
    assert "Stride × filter size" not in text
    assert "## 4. L2 penalty\n" in text
    assert "figures/predictions_correct.png" not in text
    assert "L2 strengths, α = 0.001" in section_text(text, "Summary")


def test_html_escapes_text():
    section = report_document.Section("Title <i>", "anchor")
    section.blocks.append(report_document.Paragraph("class <b>zero</b> & one"))
    section.blocks.append(report_document.Table(["<th>"], [["<td>"]], "caption <c>"))
    section.blocks.append(report_document.Code("E = CE + α·<w>"))
    page = render_html("report <x>", [section], {})
    assert "<b>zero</b>" not in page
    assert "class &lt;b&gt;zero&lt;/b&gt; &amp; one" in page
    assert "<title>report &lt;x&gt;</title>" in page
    assert "<h2>0. Title &lt;i&gt;</h2>" in page
    assert "<th>&lt;th&gt;</th>" in page
    assert "<td>&lt;td&gt;</td>" in page
    assert "<caption>caption &lt;c&gt;</caption>" in page
    assert "<pre>E = CE + α·&lt;w&gt;</pre>" in page


def test_markdown_escapes_table_pipes():
    table = report_document.Table(["a|b"], [["x|y"]])
    text = render_markdown("report", [report_document.Section("Title", "anchor", [table])])
    assert "| a\\|b |" in text
    assert "| x\\|y |" in text


def test_missing_results_names_path(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "results.json"))) as info:
        write_report(tmp_path)
    assert "not found" in str(info.value)


def test_corrupt_json_raises(tmp_path):
    (tmp_path / "results.json").write_text('{"schema": 1, "runs": {', encoding="utf-8")
    with pytest.raises(DataError, match="is not valid JSON"):
        write_report(tmp_path)


def test_non_object_json_raises(tmp_path):
    (tmp_path / "results.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match="must contain a JSON object, not list"):
        write_report(tmp_path)


def test_corrupt_artifacts_raise(tmp_path):
    results, _ = fake_results.make_study("mnist", seeds=1)
    atomic_write_json(tmp_path / "results.json", results)
    (tmp_path / "artifacts.npz").write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"artifacts\.npz is corrupt"):
        write_report(tmp_path)


def test_missing_artifacts_raise(tmp_path):
    results, _ = fake_results.make_study("mnist", seeds=1)
    atomic_write_json(tmp_path / "results.json", results)
    with pytest.raises(DataError, match=r"artifacts\.npz not found"):
        write_report(tmp_path)


def test_missing_array_raises(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    del artifacts["feature_1"]
    with pytest.raises(DataError, match="no array 'feature_1'"):
        write_report(tmp_path, results, artifacts)


def test_wrong_schema_raises(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    results["schema"] = 2
    with pytest.raises(DataError, match="schema 2, but this cnnlab reads schema 1"):
        write_report(tmp_path, results, artifacts)


def test_unknown_run_key_raises(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    broken = copy.deepcopy(results)
    broken["sections"]["l2"]["cells"][0]["runs"] = ["0123456789abcdef"]
    with pytest.raises(DataError, match="section 'l2' names run 0123456789abcdef"):
        write_report(tmp_path, broken, artifacts)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(runs=[]), "'runs' must be a JSON object, not an array"),
        (lambda r: r.update(sections="none"), "'sections' must be a JSON object, not a string"),
        (
            lambda r: next(iter(r["runs"].values())).update(final=3),
            "'final' must be a JSON object, not a number",
        ),
        (
            lambda r: next(iter(r["runs"].values())).update(history={}),
            "'history' must be a JSON array, not an object",
        ),
        (
            lambda r: [run["final"].update(test_accuracy="high") for run in r["runs"].values()],
            '.final.test_accuracy is "high", but it must be an accuracy, a fraction in [0, 1]',
        ),
        (lambda r: r.update(sections=["predictions"]), "'sections' must be a JSON object"),
        (lambda r: r["sections"].update(l2=3), "section 'l2' must be a JSON object, not a number"),
        (lambda r: r.update(schema=True), "has schema True, but this cnnlab reads schema 1"),
        (lambda r: r["dataset"].update(split=[1]), "'dataset.split' must be a JSON object"),
        (lambda r: r["dataset"].update(image_shape=[1, 0, 0]), "failed to build the report"),
        (
            lambda r: r["sections"]["feature_maps"].update(layers=5),
            "failed to build the report",
        ),
    ],
    ids=[
        "runs-list",
        "sections-string",
        "final-number",
        "history-object",
        "accuracy-string",
        "sections-list",
        "section-number",
        "schema-bool",
        "split-list",
        "zero-image-size",
        "layers-number",
    ],
)
def test_wrong_value_types_raise(tmp_path, change, message):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    change(results)
    atomic_write_json(tmp_path / "results.json", results)
    np.savez(tmp_path / "artifacts.npz", **artifacts)
    with pytest.raises(DataError, match=re.escape(message)):
        write_report(tmp_path)
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_number_raises(tmp_path, constant):
    (tmp_path / "results.json").write_text(f'{{"schema": {constant}}}', encoding="utf-8")
    with pytest.raises(DataError, match=f"{re.escape(constant)} is not a valid JSON number"):
        write_report(tmp_path)


def test_deeply_nested_json_raises(tmp_path):
    (tmp_path / "results.json").write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    with pytest.raises(DataError, match="is not valid results JSON"):
        write_report(tmp_path)


def test_fixture_is_json_serializable():
    results, _ = fake_results.make_study("cifar10", seeds=3)
    text = json.dumps(results, allow_nan=False)
    assert json.loads(text) == results


def test_validation_trend_stopped_falling():
    results, _ = fake_results.make_study("mnist", seeds=1)
    run = copy.deepcopy(next(iter(results["runs"].values())))
    run["history"][-1]["val_loss"] = 0.5
    text = report_baseline._validation_trend([run])
    assert text.startswith("Validation loss was still falling in the last epoch in 0 of 1 runs")
    assert "seed 0 was lowest at epoch 5 (0.1500) and ended at 0.5000" in text


def build_markdown(results: dict, artifacts: dict, run_dir: Path) -> str:
    """Return the report's Markdown without drawing any figure."""
    study = report_results.Study(results, artifacts)
    return render_markdown("test", report_sections.build_sections(study, run_dir))


def test_budget_read_from_run_config(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    for section in results["sections"].values():
        section.pop("budget", None)
    text = build_markdown(results, artifacts, tmp_path)
    sweep = section_text(text, "Stride × filter size")
    assert (
        f"Each cell trained for 3 epochs on {fake_results.SWEEP_SUBSET:,} training images" in sweep
    )


def test_per_class_accuracy_with_missing_class(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    per_class = results["sections"]["predictions"]["per_class_accuracy"]
    per_class[fake_results.WEAKEST_CLASS] = None
    text = section_text(build_markdown(results, artifacts, tmp_path), "Predictions")
    assert "| 3 | — | 1,000 | 5 (40) |" in text
    assert "The weakest class is 9 at 98.30%" in text


def test_per_class_accuracy_as_mapping(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    predictions = results["sections"]["predictions"]
    predictions["per_class_accuracy"] = dict(
        zip(fake_results.MNIST_CLASSES, predictions["per_class_accuracy"], strict=True)
    )
    text = section_text(build_markdown(results, artifacts, tmp_path), "Predictions")
    assert "The weakest class is 3 at 92.50%" in text


def test_all_baseline_runs_diverged(tmp_path):
    results, _ = fake_results.make_study("mnist", seeds=1)
    key = results["sections"]["baseline"]["runs"][0]
    run = results["runs"][key]
    run["status"] = "diverged"
    run["diverged_epoch"] = 1
    run["final"] = {name: run["final"][name] for name in ("train_time_s", "params", "flops")}
    for name in ("predictions", "feature_maps"):
        del results["sections"][name]
    text = build_markdown(results, {}, tmp_path)
    assert "Every baseline run diverged, so the baseline has no accuracy." in text
    assert "Every baseline run diverged (in epoch 1), so there are no final metrics." in text


def test_diverged_baseline_with_null_weights(tmp_path):
    results, _ = fake_results.make_study("mnist", seeds=1)
    key = results["sections"]["baseline"]["runs"][0]
    run = results["runs"][key]
    run["status"] = "diverged"
    run["diverged_epoch"] = 6
    # The study stores NaN weight statistics of a diverged run as null.
    for layer in run["weights"]["layers"].values():
        layer["quantiles"][-1] = [None] * 7
        layer["std"][-1] = None
    results["sections"] = {"baseline": results["sections"]["baseline"]}
    paths = write_report(tmp_path, results, {})
    text = paths["md"].read_text(encoding="utf-8")
    weights = section_text(text, "Weights and biases")
    assert "| features.0.conv.weight | weight | 0.1 | — | — | — | — to — | — |" in weights
    assert "The final weight statistics are not finite" in weights
    assert paths["figures/weight_evolution.png"].is_file()


# ---------------------------------------------------------------------------
# Value checks of results.json


def baseline_key(results: dict) -> str:
    return results["sections"]["baseline"]["runs"][0]


def diverged_key(results: dict) -> str:
    cell = next(
        cell
        for cell in results["sections"]["stride_kernel"]["cells"]
        if (cell["stride"], cell["kernel_size"]) == fake_results.DIVERGED_CELL
    )
    return cell["runs"][0]


def set_baseline(field: str, value) -> tuple:
    def change(results: dict) -> None:
        results["runs"][baseline_key(results)]["final"][field] = value

    return change, f"runs.<key>.final.{field}"


def set_history(index: int, field: str, value) -> tuple:
    def change(results: dict) -> None:
        results["runs"][baseline_key(results)]["history"][index][field] = value

    return change, f"runs.<key>.history[{index}].{field}"


INVALID_VALUES = [
    # (change, path, value as shown, expected kind)
    (*set_baseline("test_accuracy", 7.5), "7.5", "an accuracy, a fraction in [0, 1]"),
    (*set_baseline("val_accuracy", -0.01), "-0.01", "an accuracy, a fraction in [0, 1]"),
    (*set_baseline("val_accuracy", True), "true", "an accuracy, a fraction in [0, 1]"),
    (*set_baseline("test_accuracy", None), "null", "an accuracy, a fraction in [0, 1]"),
    (*set_baseline("val_loss", -0.5), "-0.5", "a loss, a finite number of 0 or more"),
    (*set_baseline("train_time_s", "12 s"), '"12 s"', "a time in seconds"),
    (*set_baseline("params", 12.5), "12.5", "an integer of 0 or more"),
    (*set_history(2, "val_loss", -1), "-1", "a loss, a finite number of 0 or more"),
    (*set_history(0, "epoch_time_s", [1.0]), "an array", "a time in seconds"),
    (*set_history(1, "train_accuracy", 1.5), "1.5", "an accuracy, a fraction in [0, 1]"),
    (
        lambda r: r["study"].update(wall_time_s=-3.0),
        "study.wall_time_s",
        "-3.0",
        "a time in seconds",
    ),
    (
        lambda r: r["sections"]["predictions"]["per_class_accuracy"].__setitem__(3, 92.5),
        "sections.predictions.per_class_accuracy[3]",
        "92.5",
        "an accuracy, a fraction in [0, 1]",
    ),
    (
        lambda r: r["sections"]["predictions"]["wrong"][2].update(confidence=2.0),
        "sections.predictions.wrong[2].confidence",
        "2.0",
        "a fraction in [0, 1]",
    ),
    (
        lambda r: r["sections"]["feature_maps"]["layers"][1].update(active_fraction="half"),
        "sections.feature_maps.layers[1].active_fraction",
        '"half"',
        "a fraction in [0, 1]",
    ),
]


@pytest.mark.parametrize(
    ("change", "path", "shown", "kind"),
    INVALID_VALUES,
    ids=[
        "accuracy-7.5",
        "accuracy-negative",
        "accuracy-bool",
        "completed-null",
        "loss-negative",
        "time-string",
        "params-fraction",
        "history-loss",
        "history-time-array",
        "history-accuracy",
        "wall-time",
        "per-class",
        "confidence",
        "active-fraction",
    ],
)
def test_invalid_value_names_field(tmp_path, change, path, shown, kind):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    change(results)
    save_study(tmp_path, results, artifacts)
    with pytest.raises(DataError) as info:
        write_report(tmp_path)
    message = str(info.value)
    field = path.replace("<key>", baseline_key(results))
    assert message.startswith(f"{tmp_path / 'results.json'}: {field} is {shown}, but it must be ")
    assert kind in message
    assert message.endswith("rerun the study to rewrite it, or restore the original file")
    assert "\n" not in message
    assert not (tmp_path / "report.md").exists()
    assert not (tmp_path / "figures").exists()


def test_empty_history_of_completed_run_rejected(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    key = baseline_key(results)
    results["runs"][key]["history"] = []
    save_study(tmp_path, results, artifacts)
    with pytest.raises(DataError, match=re.escape(f"runs.{key}.history is empty")):
        write_report(tmp_path)


def test_class_list_must_match_confusion(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    results["dataset"]["classes"] = results["dataset"]["classes"][:5]
    save_study(tmp_path, results, artifacts)
    with pytest.raises(DataError, match=r"confusion has 10 rows, but dataset.classes names 5"):
        write_report(tmp_path)


def test_infinite_time_names_field(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    key = baseline_key(results)
    results["runs"][key]["final"]["train_time_s"] = 123456.789
    save_study(tmp_path, results, artifacts)
    path = tmp_path / "results.json"
    # 1e999 is valid JSON that Python reads as infinity.
    path.write_text(path.read_text().replace("123456.789", "1e999"), encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"runs.{key}.final.train_time_s is Infinity")):
        write_report(tmp_path)


def test_invalid_status_names_field(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    key = baseline_key(results)
    results["runs"][key]["status"] = "done"
    with pytest.raises(DataError) as info:
        write_report(tmp_path, results, artifacts)
    assert f'runs.{key}.status is "done", but it must be "completed" or "diverged"' in str(
        info.value
    )


def test_history_row_not_object(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    key = baseline_key(results)
    results["runs"][key]["history"][4] = 0.5
    with pytest.raises(DataError, match=re.escape(f"runs.{key}.history[4] is 0.5, but it must")):
        write_report(tmp_path, results, artifacts)


def test_diverged_run_may_store_null(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    run = results["runs"][diverged_key(results)]
    # The study stores the NaN losses of the epoch that diverged as null.
    run["history"][-1].update(val_loss=None, test_loss=None, val_accuracy=None)
    run["final"]["train_time_s"] = None
    paths = write_report(tmp_path, results, artifacts)
    assert paths["md"].is_file()


def test_invalid_value_exit_code(tmp_path, capsys):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    results["runs"][baseline_key(results)]["final"]["test_accuracy"] = 7.5
    save_study(tmp_path, results, artifacts)
    code = main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == DataError.exit_code == 3
    assert len(err.strip().splitlines()) == 1
    assert ".final.test_accuracy is 7.5" in err
    assert "750" not in err


# ---------------------------------------------------------------------------
# Figures of an earlier report


def figure_bytes(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (run_dir / "figures").iterdir()}


def test_figure_names_match_cleanup_pattern(mnist, cifar):
    for _, paths, _ in (mnist, cifar):
        for relative in paths:
            if relative.startswith("figures/"):
                assert report.FIGURE_FILE.fullmatch(Path(relative).name), relative


def test_rebuild_removes_stale_figures(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    save_study(tmp_path, results, artifacts)
    write_report(tmp_path)
    figures = tmp_path / "figures"
    assert (figures / "l2_accuracy.png").is_file()
    own_files = ["notes.png", "l2_accuracy_v1.png", "L2_accuracy.png", "loss_curves.txt"]
    for name in own_files:
        (figures / name).write_bytes(b"user file")
    (figures / "feature_maps_7.png").symlink_to(figures / "notes.png")
    (figures / "l2_histograms.png").unlink()
    (figures / "l2_histograms.png").mkdir()

    del results["sections"]["l2"]
    del results["sections"]["stride_kernel"]
    save_study(tmp_path, results, artifacts)
    paths = write_report(tmp_path)

    used = {Path(name).name for name in paths if name.startswith("figures/")}
    for name in ("l2_accuracy.png", "l2_weight_norm.png"):
        assert not (figures / name).exists(), name
    for name in ("stride_kernel_accuracy.png", "stride_kernel_cost.png"):
        assert not (figures / name).exists(), name
    for name in own_files:
        assert (figures / name).read_bytes() == b"user file", name
    assert (figures / "feature_maps_7.png").is_symlink()
    assert (figures / "l2_histograms.png").is_dir()
    cnnlab_files = {
        path.name
        for path in figures.iterdir()
        if report.FIGURE_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink()
    }
    assert cnnlab_files == used
    referenced = re.findall(r"\(figures/([^)]+\.png)\)", paths["md"].read_text(encoding="utf-8"))
    assert set(referenced) == used


def test_failed_rebuild_keeps_every_file(tmp_path):
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    save_study(tmp_path, results, artifacts)
    write_report(tmp_path)
    before = figure_bytes(tmp_path)
    report_md = (tmp_path / "report.md").read_bytes()
    report_html = (tmp_path / "report.html").read_bytes()

    # New loss curves and no L2 section, but the prediction grids fail to draw:
    # 3 images for 16 titles.
    for row in results["runs"][baseline_key(results)]["history"]:
        row["val_loss"] *= 2
    del results["sections"]["l2"]
    artifacts["correct_images"] = artifacts["correct_images"][:3]
    save_study(tmp_path, results, artifacts)
    with pytest.raises(DataError, match="failed to build the report"):
        write_report(tmp_path)

    assert figure_bytes(tmp_path) == before
    assert (tmp_path / "report.md").read_bytes() == report_md
    assert (tmp_path / "report.html").read_bytes() == report_html


def test_remove_stale_figures_without_folder(tmp_path):
    assert report.remove_stale_figures(tmp_path / "figures", set()) == []


# ---------------------------------------------------------------------------
# Environment table


def test_environment_booleans_yes_no(mnist, tmp_path):
    table = section_text(markdown(mnist), "Reproducibility")
    assert "| channels_last | no |" in table
    assert "| channels_last | False |" not in table
    results, artifacts = fake_results.make_study("mnist", seeds=1)
    results["environment"]["channels_last"] = True
    text = section_text(build_markdown(results, artifacts, tmp_path), "Reproducibility")
    assert "| channels_last | yes |" in text
    assert "| threads | 2 |" in text


# ---------------------------------------------------------------------------
# Timing noise


def timed_run(epoch_times: list[float], status: str = "completed") -> dict:
    history = [{"epoch": index + 1, "epoch_time_s": time} for index, time in enumerate(epoch_times)]
    return {"status": status, "history": history, "final": {"train_time_s": sum(epoch_times)}}


def timed_cell(*runs: dict) -> report_results.Cell:
    return report_results.Cell([str(index) for index in range(len(runs))], list(runs), [])


def seed_cell(*train_times: float) -> report_results.Cell:
    return timed_cell(*[timed_run([time / 2, time / 2]) for time in train_times])


def test_within_run_spread_skips_first_epoch():
    spread = report_timing.within_run_spread([timed_run([10.0, 2.0, 2.2, 1.8])])
    assert spread is not None
    assert spread.values == [pytest.approx(0.1)]
    assert spread.sizes == [3]


def test_within_run_spread_needs_two_later_epochs():
    assert report_timing.within_run_spread([timed_run([10.0, 2.0])]) is None


def test_across_seed_spread_per_cell():
    spread = report_timing.across_seed_spread([seed_cell(10.0, 11.0, 12.0), seed_cell(5.0)])
    assert spread is not None
    assert spread.values == [pytest.approx(1.0 / 11.0)]
    assert spread.sizes == [3]


def test_time_change_within_seed_noise():
    result = report_timing.compare_times(seed_cell(10.0, 12.0, 11.0), seed_cell(11.0, 13.0, 12.0))
    assert result is not None
    assert result.basis == "seeds"
    assert result.statistic == pytest.approx(1.0 / np.sqrt(2.0 / 3.0))
    assert not result.exceeds_noise
    text = report_timing.time_change_sentence("Going from A to B", result)
    assert "from 11.0 s to 12.0 s (+1.00 s); |t| = 1.2 over 3 seeds" in text
    assert "within the seed-to-seed noise, not a measured one" in text


def test_time_change_beyond_seed_noise():
    result = report_timing.compare_times(seed_cell(10.0, 10.2, 9.8), seed_cell(20.0, 20.2, 19.8))
    assert result is not None
    assert result.exceeds_noise
    text = report_timing.time_change_sentence("Going from A to B", result)
    assert "|t| = 61.2 over 3 seeds, so the difference exceeds the seed-to-seed noise." in text


def test_time_change_one_seed_uses_epochs():
    before = timed_cell(timed_run([5.0, 2.0, 2.1, 1.9]))
    slower = timed_cell(timed_run([5.0, 3.0, 3.1, 2.9]))
    similar = timed_cell(timed_run([5.0, 2.05, 2.15, 1.95]))
    result = report_timing.compare_times(before, slower)
    assert result is not None
    assert result.basis == "epochs"
    text = report_timing.time_change_sentence("Going from A to B", result)
    assert "mean time of an epoch after the first from 2.00 s to 3.00 s (+1.00 s)" in text
    assert "exceeds that noise, but it is unconfirmed without two seeds per cell" in text
    result = report_timing.compare_times(before, similar)
    assert result is not None
    assert not result.exceeds_noise
    text = report_timing.time_change_sentence("Going from A to B", result)
    assert "within that noise, not a measured one" in text


def test_time_change_without_noise_measure():
    before = timed_cell(timed_run([5.0, 2.0]))
    after = timed_cell(timed_run([5.0, 3.0]))
    assert report_timing.compare_times(before, after) is None
    text = report_timing.time_change_sentence("Going from A to B", None)
    assert "the difference in training time is unconfirmed" in text


def test_noise_threshold_from_largest_spread():
    cells = [seed_cell(10.0, 11.0, 12.0), seed_cell(20.0, 20.5, 21.0)]
    runs = [run for cell in cells for run in cell.completed]
    sentences = report_timing.noise_sentences(runs, cells, threshold=True)
    largest = 1.0 / 11.0
    limit = 2 * np.sqrt(2 / 3) * largest
    assert "varied by a median of" in sentences[1]
    assert f"largest {100 * largest:.1f}%" in sentences[1]
    assert f"differ by less than {100 * limit:.1f}%" in sentences[2]
    assert "not a measured one" in sentences[2]


def relative_spreads(groups: list[list[float]]) -> list[float]:
    return [float(np.std(times, ddof=1) / np.mean(times)) for times in groups if len(times) >= 2]


def test_stride_kernel_noise_from_epochs(mnist):
    _, _, results = mnist
    text = section_text(markdown(mnist), "Stride × filter size")
    cells = [cell for cell in results["sections"]["stride_kernel"]["cells"] if cell["valid"]]
    epochs = [
        [row["epoch_time_s"] for row in results["runs"][key]["history"][1:]]
        for cell in cells
        for key in cell["runs"]
    ]
    spreads = relative_spreads(epochs)
    assert f"varied by a median of {100 * np.median(spreads):.1f}% of their mean" in text
    assert f"over {len(spreads)} runs; largest {100 * max(spreads):.1f}%" in text
    limit = 2 * np.sqrt(2) * max(spreads)
    assert f"Two training times that differ by less than {100 * limit:.1f}%" in text
    assert "No cell has two completed seeds" in text
    assert "from the cheapest to the best cell changed the mean time of an epoch" in text


def test_stride_kernel_noise_over_seeds(cifar):
    text = section_text(markdown(cifar), "Stride × filter size")
    assert "Across seeds, the training time of one cell varied by a median of" in text
    assert "over 2 or more seeds that differ by less than" in text
    assert "the best cell changed the mean training time from" in text
    assert "over 3 seeds, so the difference exceeds the seed-to-seed noise" in text


def test_baseline_time_spread_over_seeds(cifar):
    _, _, results = cifar
    keys = results["sections"]["baseline"]["runs"]
    times = [results["runs"][key]["final"]["train_time_s"] for key in keys]
    spread = relative_spreads([times])[0]
    text = section_text(markdown(cifar), "Training")
    # Spreads under 0.1% are shown with two significant digits.
    assert 100 * spread < 0.1
    expected = f"{100 * spread:.2g}%"
    assert f"Across the 3 completed seeds, the training time varied by {expected}" in text


def test_damaged_compressed_artifacts_is_data_error(tmp_path: Path) -> None:
    """A damaged byte inside a compressed array is a DataError, not a zlib traceback."""
    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / "artifacts.npz", maps=rng.random((64, 64)))
    data = bytearray((tmp_path / "artifacts.npz").read_bytes())
    for i in range(200, len(data) - 200, 97):  # inside the deflate stream, not the zip headers
        data[i] ^= 0xFF
    (tmp_path / "artifacts.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"artifacts\.npz is corrupt"):
        load_artifacts(tmp_path)
