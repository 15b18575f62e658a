"""The quick CIFAR-10 study on the real files, end to end, through the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cnnlab.cli import main
from datafakes import real_data_dir

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study") / "cifar10-quick"
    args = ["study", "cifar10", "--quick", "--quiet", "--data-dir", str(real_data_dir())]
    assert main([*args, "--out", str(out)]) == 0
    return out


def test_cifar_quick_study_sections(quick_study: Path) -> None:
    results = json.loads((quick_study / "results.json").read_text())
    assert results["dataset"]["split"] == {"train": 45_000, "validation": 5_000, "test": 10_000}
    assert results["dataset"]["classes"][0] == "airplane"
    for name in ("baseline", "stride_kernel", "l2", "predictions", "feature_maps", "preprocessing"):
        assert name in results["sections"], name
    baseline = results["runs"][results["sections"]["baseline"]["runs"][0]]
    assert baseline["status"] == "completed"
    # Two epochs on 10,000 images: far from the full recipe, far above the 10% of guessing.
    assert baseline["final"]["test_accuracy"] > 0.35


def test_cifar_preprocessing_ablation(quick_study: Path) -> None:
    results = json.loads((quick_study / "results.json").read_text())
    steps = results["sections"]["preprocessing"]["steps"]
    names = [step["name"] for step in steps]
    assert names[0] == "none"
    assert names[1] == "standardization"
    assert steps[0]["preprocess"]["standardize"] is False
    assert any(step["preprocess"]["whiten"] for step in steps)
    for step in steps:
        run = results["runs"][step["runs"][0]]
        assert run["status"] == "completed", step["name"]


def test_cifar_report_names_classes(quick_study: Path) -> None:
    markdown = (quick_study / "report.md").read_text()
    figures = re.findall(r"\(figures/([\w.-]+\.png)\)", markdown)
    for name in figures:
        assert (quick_study / "figures" / name).exists(), name
    assert "Preprocessing" in markdown
    assert "cat" in markdown
    assert "preprocessing_stages.png" in " ".join(figures)
