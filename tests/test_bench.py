"""``cnnlab bench``: recipes, summaries, bad options, and a short real-data run."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import pytest
import torch

import cnnlab.bench as bench
from cnnlab.bench import Recipe, format_results, matmul_peak, recipes, run_bench
from cnnlab.cli import main
from cnnlab.config import RunConfig
from conftest import make_splits, tiny_run
from datafakes import real_data_dir


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "mnsit"], "invalid dataset 'mnsit'"),
        (["bench", "mnist", "--seeds", "0"], "invalid value 0: must be at least 1"),
        (["bench", "mnist", "--out", "results.txt"], "give a file name ending in .json"),
        (["bench", "mnist", "--precision", "fp8"], "invalid choice: 'fp8'"),
        (["bench", "mnist", "--seeds", "101"], "invalid --seeds 101:"),
        (["bench", "mnist", "--seed", "2147483648"], "invalid --seed 2147483648:"),
    ],
)
def test_bad_bench_options_exit_2(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli([*args, "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_bench_out_folder_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "x.json"
    folder.mkdir()
    code, _, err = run_cli(["bench", "mnist", "--out", str(folder)], capsys)
    assert code == 2
    assert "it is a folder" in err


def test_matmul_peak_is_positive() -> None:
    assert matmul_peak(torch.float32, "cpu", size=64, seconds=0.01) > 0


def test_recipes_aim_at_the_issue_targets() -> None:
    names = {r.name: r for r in recipes("mnist", "cpu") + recipes("cifar10", "cpu")}
    assert names["mnist-99.0"].target == 0.990
    assert names["mnist-99.0"].time_limit_s == 10
    assert names["mnist-99.5"].target == 0.995
    assert names["mnist-99.5"].time_limit_s == 60
    assert names["cifar10-94"].target == 0.940
    assert names["cifar10-94"].time_limit_s == 900
    # Every recipe has a fixed budget, so no test result selects an epoch or a run.
    assert all(r.config.train.epochs >= 1 for r in names.values())


def test_run_bench_summarises_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_splits()
    config: RunConfig = tiny_run(epochs=3)
    monkeypatch.setattr(bench, "load_dataset", lambda name, data_dir=None: data)
    monkeypatch.setattr(
        bench,
        "recipes",
        lambda dataset, device, quick=False: [Recipe("tiny", 0.5, 1e6, config)],
    )
    monkeypatch.setattr(bench, "matmul_peak", lambda dtype, device: 1e12)
    out = tmp_path / "bench.json"
    results = run_bench(["mnist"], seeds=2, out=out, progress=False)
    row = results["recipes"][0]
    assert [run["seed"] for run in row["runs"]] == [0, 1]
    accuracies = [run["test_accuracy"] for run in row["runs"]]
    assert row["accuracy_mean"] == pytest.approx(sum(accuracies) / 2)
    assert row["accuracy_min"] == min(accuracies)
    assert row["train_time_mean_s"] > 0
    flops = bench.train_flops_per_image(config, data)
    assert row["runs"][0]["train_flop_per_s"] == pytest.approx(
        flops * row["runs"][0]["images_per_s"]
    )
    assert row["share_of_matmul_peak"] == pytest.approx(row["train_flop_per_s_mean"] / 1e12)
    assert row["target_met"] == (row["accuracy_mean"] >= 0.5)
    assert json.loads(out.read_text()) == results
    table = format_results(results)
    assert "tiny" in table
    assert "evaluation" in table


def test_bench_prints_peak_once(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = make_splits()
    monkeypatch.setattr(bench, "load_dataset", lambda name, data_dir=None: data)
    monkeypatch.setattr(
        bench,
        "recipes",
        lambda dataset, device, quick=False: [Recipe("tiny", 0.5, 1e6, tiny_run(epochs=1))],
    )
    monkeypatch.setattr(bench, "matmul_peak", lambda dtype, device: 1e12)
    caplog.set_level(logging.INFO)

    code, stdout, err = run_cli(["bench", "mnist", "--seeds", "1"], capsys)

    assert code == 0, err
    # Under pytest a log line need not reach the captured stderr, so records count as well.
    printed = stdout + err + "\n".join(record.getMessage() for record in caplog.records)
    assert printed.count("matrix-product peak") == 1
    assert "matrix-product peak: fp32 1000 GFLOP/s, bf16 1000 GFLOP/s" in stdout


def test_unmet_target_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_splits()
    config = tiny_run(epochs=1)
    monkeypatch.setattr(bench, "load_dataset", lambda name, data_dir=None: data)
    monkeypatch.setattr(
        bench,
        "recipes",
        lambda dataset, device, quick=False: [Recipe("hard", 1.01, math.inf, config)],
    )
    results = run_bench(["mnist"], seeds=1, progress=False)
    assert results["recipes"][0]["target_met"] is False
    assert "not met" in format_results(results)


def test_recipe_can_train_on_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_splits()
    seen: list[int] = []

    def fake_train(config: RunConfig, splits: object, **kwargs: object) -> dict[str, object]:
        assert isinstance(splits, type(data))
        seen.append(len(splits.train_images))
        # The validation images come after the training images, labels alongside.
        assert torch.equal(splits.train_images[len(data.train_images) :], data.val_images)
        assert torch.equal(splits.train_labels[len(data.train_labels) :], data.val_labels)
        return {"status": "diverged", "final": {}, "history": []}

    monkeypatch.setattr(bench, "train_run", fake_train)
    recipe = Recipe("all", 0.5, 1e6, tiny_run(epochs=1), train_on_validation=True)
    summary = bench.run_recipe(recipe, data, [0], progress=False)
    assert seen == [len(data.train_images) + len(data.val_images)]
    assert summary["train_images"] == seen[0]
    assert summary["validation_in_training"] is True
    assert summary["target_met"] is False


def test_train_flops_skip_unused_gradients() -> None:
    from cnnlab.models import layer_table

    # No stem: the first convolution needs no input gradient, every later layer does.
    config = tiny_run()
    rows = {row.name: row for row in layer_table(config.model, (1, 28, 28), 10)}
    forward = sum(row.flops for row in rows.values())
    weighted = sum(row.flops for row in rows.values() if row.params)
    first = rows["block1.conv"].flops
    expected = 2 * forward + weighted - first
    assert bench.train_flops_per_image(config, make_splits()) == pytest.approx(expected)

    # The airbench recipe: a frozen stem (forward only), and the first convolution's
    # input gradient in the 3 of 9 epochs in which the stem's bias trains.
    cifar = next(r for r in recipes("cifar10", "cpu") if r.name == "cifar10-94").config
    assert (cifar.train.epochs, cifar.train.whiten_bias_epochs) == (9, 3)
    data = make_splits(channels=3, size=32)
    rows = {row.name: row for row in layer_table(cifar.model, (3, 32, 32), 10)}
    stem, first = rows.pop("stem.conv").flops, rows["block1.conv"].flops
    forward = sum(row.flops for row in rows.values())
    weighted = sum(row.flops for row in rows.values() if row.params)
    expected = stem + 2 * forward + weighted - first * (1 - 3 / 9)
    assert bench.train_flops_per_image(cifar, data) == pytest.approx(expected)


@pytest.mark.realdata
def test_quick_bench_on_real_mnist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(
        [
            "bench",
            "mnist",
            "--quick",
            "--seeds",
            "1",
            "--quiet",
            "--data-dir",
            str(real_data_dir()),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    results = json.loads(out.read_text())
    row = results["recipes"][0]
    assert row["recipe"] == "mnist-smoke"
    assert row["runs"][0]["status"] == "completed"
    assert 0.5 < row["accuracy_mean"] <= 1.0
    assert results["matmul_peak_flop_per_s"]["bf16"] > 0
    assert "mnist-smoke" in stdout


def test_recipe_configs_are_valid() -> None:
    from cnnlab.config import validate_model, validate_preprocess, validate_train

    for dataset, shape in (("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))):
        for recipe in recipes(dataset, "cpu") + recipes(dataset, "cpu", quick=True):
            validate_model(recipe.config.model, shape)
            validate_train(recipe.config.train)
            validate_preprocess(recipe.config.preprocess, shape[-1])
            assert dataclasses.replace(recipe.config, seed=3).seed == 3


def test_unwritable_out_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnlab.errors import OutputError

    blocker = tmp_path / "file"
    blocker.write_text("")
    trained: list[str] = []
    monkeypatch.setattr(bench, "matmul_peak", lambda dtype, device: trained.append("peak") or 1.0)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        run_bench(["mnist"], seeds=1, out=blocker / "b.json", progress=False)
    assert trained == []


def test_other_json_out_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing --out file that no bench wrote is not replaced."""
    out = tmp_path / "mine.json"
    out.write_text('{"mine": 1}')
    code = main(["bench", "mnist", "--quick", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "is not a cnnlab bench result" in err
    assert len(err.strip().splitlines()) == 1, err
    assert out.read_text() == '{"mine": 1}'


def test_existing_out_kept_until_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "mine.json"
    out.write_text('{"matmul_peak_flop_per_s": {}, "recipes": [], "environment": {}}')

    def interrupt(dtype: object, device: object) -> float:
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "matmul_peak", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_bench(["mnist"], seeds=1, out=out, progress=False)
    assert out.read_text() == '{"matmul_peak_flop_per_s": {}, "recipes": [], "environment": {}}'
    assert [path.name for path in tmp_path.iterdir()] == ["mine.json"]
