"""Tests of the figure functions: each writes one PNG from plain data and leaks no figure."""

from __future__ import annotations

import gc
import struct
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from cnnlab import figures
from fake_results import make_study

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Return (width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def study():
    results, artifacts = make_study("cifar10", seeds=3)
    baseline = [results["runs"][key] for key in results["sections"]["baseline"]["runs"]]
    return results, artifacts, baseline


def test_loss_curves_with_l2(tmp_path, study):
    _, _, baseline = study
    path = tmp_path / "loss.png"
    figures.plot_loss_curves([run["history"] for run in baseline], path, show_l2=True)
    width, height = png_size(path)
    # 11 by 4 inches at 110 dpi, because the wide layout makes room for the L2 panel.
    assert width == 1210
    assert height == 440


def test_loss_curves_one_run(tmp_path, study):
    _, _, baseline = study
    path = tmp_path / "loss.png"
    figures.plot_loss_curves([baseline[0]["history"]], path, show_l2=False)
    assert png_size(path) == (715, 440)


def test_curves_tolerate_null_values(tmp_path, study):
    _, _, baseline = study
    history = [dict(entry) for entry in baseline[0]["history"]]
    history[-1]["val_loss"] = None
    path = tmp_path / "curves.png"
    figures.plot_loss_curves([history, baseline[1]["history"]], path, show_l2=False)
    figures.plot_accuracy_curves([history], tmp_path / "accuracy.png")
    assert path.exists()
    assert (tmp_path / "accuracy.png").exists()


def test_weight_figures(tmp_path, study):
    _, _, baseline = study
    weights = baseline[0]["weights"]
    figures.plot_weight_histograms(weights["layers"], tmp_path / "hist.png")
    figures.plot_weight_evolution(weights["epochs"], weights["layers"], tmp_path / "evolution.png")
    assert png_size(tmp_path / "hist.png")[0] > 0
    assert png_size(tmp_path / "evolution.png")[0] > 0


def test_accuracy_vs_kernel_with_and_without_errors(tmp_path):
    points = [
        {
            "stride": 1,
            "kernel_size": 3,
            "val_mean": 0.97,
            "val_std": 0.001,
            "test_mean": 0.96,
            "test_std": 0.002,
        },
        {
            "stride": 1,
            "kernel_size": 5,
            "val_mean": 0.98,
            "val_std": None,
            "test_mean": 0.97,
            "test_std": None,
        },
        {
            "stride": 2,
            "kernel_size": 3,
            "val_mean": 0.95,
            "val_std": 0.003,
            "test_mean": 0.94,
            "test_std": 0.001,
        },
    ]
    path = tmp_path / "kernel.png"
    figures.plot_accuracy_vs_kernel(points, path)
    assert png_size(path) == (1210, 440)


def test_cost_vs_accuracy(tmp_path):
    points = [
        {
            "label": "s1 k3",
            "flops": 2e7,
            "train_time_s": 12.0,
            "test_mean": 0.97,
            "test_std": 0.001,
        },
        {"label": "s2 k3", "flops": 1e6, "train_time_s": 6.0, "test_mean": 0.95, "test_std": None},
    ]
    path = tmp_path / "cost.png"
    figures.plot_cost_vs_accuracy(points, path)
    assert path.exists()


def test_image_grid_gray_and_color(tmp_path):
    gray = np.zeros((5, 1, 28, 28), dtype=np.uint8)
    color = np.full((3, 3, 32, 32), 200, dtype=np.uint8)
    figures.plot_image_grid(gray, [f"true {i}" for i in range(5)], tmp_path / "gray.png")
    figures.plot_image_grid(color, ["a", "b", "c"], tmp_path / "color.png", columns=2)
    assert png_size(tmp_path / "gray.png")[0] > 0
    assert png_size(tmp_path / "color.png")[0] > 0


def test_image_grid_rejects_title_mismatch(tmp_path):
    images = np.zeros((2, 1, 8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="got 2 images but 1 titles"):
        figures.plot_image_grid(images, ["only one"], tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()


def test_confusion_matrix_with_zero_cells(tmp_path):
    matrix = [[50, 0, 3], [0, 40, 10], [1, 0, 0]]
    path = tmp_path / "confusion.png"
    figures.plot_confusion_matrix(matrix, ["a", "b", "c"], path)
    assert path.exists()


def test_feature_maps_rows_per_block(tmp_path, study):
    _, artifacts, _ = study
    maps = [artifacts[f"feature_{index}"][0] for index in range(3)]
    path = tmp_path / "maps.png"
    figures.plot_feature_maps(
        artifacts["feature_input"][0], maps, ["b1", "b2", "b3"], path, channel_counts=[32, 64, 128]
    )
    width, height = png_size(path)
    # One row for the input and one per block, 1 inch each at 110 dpi.
    assert height == 440
    assert width > height


def test_feature_maps_rejects_name_mismatch(tmp_path):
    with pytest.raises(ValueError, match="2 feature maps but 1 names"):
        figures.plot_feature_maps(
            np.zeros((1, 8, 8)), [np.zeros((2, 4, 4))] * 2, ["one"], tmp_path / "maps.png"
        )


def test_alpha_zero_a_decade_left():
    positions, logarithmic = figures._alpha_positions([0.0, 1e-4, 1e-3])
    assert logarithmic
    assert positions.tolist() == pytest.approx([1e-5, 1e-4, 1e-3])


def test_alpha_only_zero_is_linear():
    positions, logarithmic = figures._alpha_positions([0.0])
    assert not logarithmic
    assert positions.tolist() == [0.0]


def test_l2_figures(tmp_path):
    alphas = [0.0, 1e-4, 1e-2]
    series = {
        "val": ([0.96, 0.97, 0.95], [None, None, None]),
        "test": ([0.95, 0.96, 0.94], [0.01, 0.0, 0.02]),
    }
    figures.plot_accuracy_vs_alpha(alphas, series, tmp_path / "accuracy.png")
    figures.plot_weight_norm_vs_alpha(
        alphas, [400.0, 300.0, 50.0], [None] * 3, tmp_path / "norm.png"
    )
    edges = np.linspace(-1, 1, 51)
    panels = {
        "first": [(0.0, edges, np.ones(50)), (1e-2, edges * 0.5, np.arange(50))],
        "last": [(0.0, edges, np.zeros(50))],
    }
    figures.plot_histograms_by_alpha(panels, tmp_path / "hist.png")
    for name in ("accuracy", "norm", "hist"):
        assert png_size(tmp_path / f"{name}.png")[0] > 0


def test_preprocessing_stages_mixed_types(tmp_path, study):
    _, artifacts, _ = study
    stages = {
        "raw": artifacts["stage_raw"],
        "standardized": artifacts["stage_standardized"],
        "augmented": artifacts["stage_augmented"][:3],
    }
    path = tmp_path / "stages.png"
    figures.plot_preprocessing_stages(stages, path)
    assert path.exists()


def test_display_image_rescales_floats():
    image = np.array([[[-2.0, 0.0], [2.0, 1.0]]])
    picture, cmap = figures._display_image(image)
    assert cmap == "gray"
    assert picture.min() == 0.0
    assert picture.max() == 1.0


def test_figures_leak_nothing(tmp_path, study, monkeypatch):
    _, _, baseline = study
    created: list[weakref.ref[Figure]] = []
    original = figures._new_figure

    def recording_new_figure(*args, **kwargs):
        figure = original(*args, **kwargs)
        created.append(weakref.ref(figure))
        return figure

    monkeypatch.setattr(figures, "_new_figure", recording_new_figure)
    for _ in range(3):
        figures.plot_accuracy_curves([baseline[0]["history"]], tmp_path / "curves.png")
    gc.collect()
    assert len(created) == 3
    assert all(reference() is None for reference in created)
    # The module draws on Figure objects, never through pyplot's global state.
    assert (
        "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
    )
