"""The quick MNIST study on the real files, end to end, through the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.store import RunStore
from datafakes import real_data_dir

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study") / "mnist-quick"
    code = main(
        [
            "study",
            "mnist",
            "--quick",
            "--quiet",
            "--data-dir",
            str(real_data_dir()),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_quick_study_accuracy(quick_study: Path) -> None:
    results = json.loads((quick_study / "results.json").read_text())
    baseline = results["runs"][results["sections"]["baseline"]["runs"][0]]
    assert baseline["status"] == "completed"
    assert baseline["final"]["test_accuracy"] > 0.985
    assert results["dataset"]["split"] == {"train": 55_000, "validation": 5_000, "test": 10_000}
    assert results["study"]["quick"] is True


def test_quick_study_sections(quick_study: Path) -> None:
    results = json.loads((quick_study / "results.json").read_text())
    sections = results["sections"]
    for name in ("baseline", "stride_kernel", "l2", "predictions", "feature_maps"):
        assert name in sections, name
    cells = sections["stride_kernel"]["cells"]
    assert {(c["stride"], c["kernel_size"]) for c in cells} == {
        (s, k) for s in (1, 2) for k in (3, 5, 7)
    }
    assert [c["alpha"] for c in sections["l2"]["cells"]] == [0.0, 1e-4, 1e-3, 1e-2]
    norms = [
        results["runs"][c["runs"][0]]["final"]["weight_norm_sq"] for c in sections["l2"]["cells"]
    ]
    assert norms[-1] < norms[0], "the strongest penalty should leave the smallest weights"
    layers = sections["feature_maps"]["layers"]
    assert [layer["spatial"] for layer in layers] == [[28, 28], [14, 14], [7, 7]]
    assert all(0 < layer["active_fraction"] < 1 for layer in layers)


def test_quick_study_report(quick_study: Path) -> None:
    markdown = (quick_study / "report.md").read_text()
    html = (quick_study / "report.html").read_text()
    figures = re.findall(r"\(figures/([\w.-]+\.png)\)", markdown)
    assert len(figures) >= 10
    for name in figures:
        assert (quick_study / "figures" / name).stat().st_size > 1000, name
    for heading in ("Architecture", "Stride", "Feature maps", "L2", "Weights"):
        assert heading in markdown, heading
    assert "data:image/png;base64," in html
    assert 'src="http' not in html


def test_rerun_reuses_every_run(quick_study: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in (quick_study / "runs").glob("*.json")}
    caplog.set_level("INFO")
    code = main(
        ["study", "mnist", "--quick", "--data-dir", str(real_data_dir()), "--out", str(quick_study)]
    )
    assert code == 0
    after = {p.name: p.stat().st_mtime_ns for p in (quick_study / "runs").glob("*.json")}
    assert before == after
    assert "to train: 0" in caplog.text


def test_report_rebuilds_from_results(quick_study: Path) -> None:
    (quick_study / "report.md").unlink()
    assert main(["report", str(quick_study), "--quiet"]) == 0
    assert (quick_study / "report.md").exists()
    store = RunStore(quick_study / "runs")
    results = json.loads((quick_study / "results.json").read_text())
    for key in results["runs"]:
        assert store.get(key) is not None
