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
from cnnlab import report_baseline, report_document, report_results, report_sections, stats
from cnnlab.errors import DataError
from cnnlab.report import render_html, render_markdown, write_report
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
            "failed to build the report from",
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
