"""Command-line behaviour on bad input: one line on stderr, the right exit code, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse exits on its own errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["study", "mnsit"],
            "invalid dataset 'mnsit': choose one of mnist, cifar10 (did you mean 'mnist'?)",
        ),
        (["study", "mnist", "--seeds", "0"], "invalid value 0: must be at least 1"),
        (["study", "mnist", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["train", "mnist", "--l2", "nan"], "invalid value 'nan': must be a finite number"),
        (["train", "mnist", "--l2", "-0.1"], "invalid train.l2 -0.1"),
        (["train", "mnist", "--epochs", "x"], "invalid value 'x': expected a whole number"),
    ],
)
def test_invalid_option_exits_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, err = run_cli([*args, "--out", str(out), "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("[train]\nepoch = 3\n", "unknown config key 'train.epoch'; did you mean 'epochs'?"),
        ("[stride_kernel]\nstrides = [0, 1]\n", "invalid stride_kernel.strides[0] 0"),
        ("[l2]\nalphas = [0.0, -1e-3]\n", "invalid l2.alphas[1] -0.001"),
        (
            "[[model.blocks]]\nchannels = 8\nkernel_size = 40\n",
            "invalid model.blocks[0].kernel_size 40",
        ),
        ("[[model.blocks]]\nchannels = 8\nstride = 0\n", "invalid model.blocks[0].stride 0"),
        (
            "[[model.blocks]]\nchannels = 8\nstride = 4\npool = 4\n[[model.blocks]]\nchannels = 8\nkernel_size = 1\npool = 2\n",
            "zero size",
        ),
        ('dataset = "cifar10"\n', "sets dataset 'cifar10' but the command asks for 'mnist'"),
        ("[preprocessing]\nenabled = true\n", "invalid preprocessing.enabled true for mnist"),
    ],
)
# `train` switches the study's comparisons off but still rejects an invalid one.
@pytest.mark.parametrize("command", ["study", "train"])
def test_invalid_config_exits_2(
    config: str, message: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "study.toml"
    path.write_text(config)
    out = tmp_path / "out"
    code, err = run_cli([command, "mnist", "--config", str(path), "--out", str(out)], capsys)
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_data_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"

    # No network in tests: a download attempt must fail as if offline.
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr("pooch.retrieve", offline)
    code, err = run_cli(["train", "mnist", "--data-dir", str(empty), "--out", str(out)], capsys)
    assert code == 3, err
    # The failed download attempts are logged before the error line.
    errors = [line for line in err.splitlines() if line.startswith("cnnlab: error:")]
    assert len(errors) == 1
    assert str(empty) in errors[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_report_on_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["report", str(tmp_path / "nothing")], capsys)
    assert code != 0
    assert "results.json" in err
    assert len(err.strip().splitlines()) == 1


def test_help_names_units_and_defaults() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab", "study", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--seeds" in result.stdout
    assert "default: 1" in result.stdout
    assert "--data-dir" in result.stdout


def test_quiet_silences_pooch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    import pooch

    logger = pooch.get_logger()
    before = logger.level
    try:
        run_cli(["report", str(tmp_path / "missing"), "--quiet"], capsys)
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(before)


def test_bench_interrupt_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnnlab import bench

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run_bench", interrupt)
    code, err = run_cli(["bench", "mnist", "--quiet"], capsys)
    assert code == 130
    assert "rerun the bench to measure again" in err
    assert "finished runs are stored" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["study", "mnist", "--data-dir", ""],
        ["study", "mnist", "--out", ""],
        ["train", "mnist", "--out", " "],
        ["bench", "mnist", "--data-dir", ""],
    ],
)
def test_empty_folder_exits_2(
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(args, capsys)
    assert code == 2
    assert "invalid empty folder name" in err
    assert list(tmp_path.iterdir()) == []
