"""Command-line behaviour on bad input: one line on stderr, the right exit code, nothing written."""

from __future__ import annotations

import logging
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
        (["train", "mnist", "--l2", "-0.1"], "invalid --l2 -0.1"),
        (["train", "mnist", "--epochs", "x"], "invalid value 'x': expected a whole number"),
        # A bad value given as a flag is named by the flag.
        (["study", "mnist", "--seed", "2147483648"], "invalid --seed 2147483648:"),
        (["study", "mnist", "--seeds", "101"], "invalid --seeds 101:"),
        (["train", "mnist", "--seed", "2147483648"], "invalid --seed 2147483648:"),
        (["train", "mnist", "--epochs", "1001"], "invalid --epochs 1001:"),
        (["train", "mnist", "--lr", "-1"], "invalid --lr -1.0:"),
        (["train", "mnist", "--lr", "0"], "invalid --lr 0.0:"),
        (["train", "mnist", "--lr=-1"], "invalid --lr -1.0:"),
        (["train", "mnist", "--batch-size", "65537"], "invalid --batch-size 65537:"),
        (["train", "cifar10", "--l2", "-0.5"], "invalid --l2 -0.5:"),
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


def test_config_file_value_names_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "study.toml"
    path.write_text("[train]\nlr = -1.0\n")
    code, err = run_cli(["train", "mnist", "--config", str(path), "--epochs", "1"], capsys)
    assert code == 2
    assert "invalid train.lr -1.0:" in err


@pytest.mark.parametrize(
    "args",
    [
        ["study", "mnist", "--bogus"],
        ["train", "mnist", "--bogus", "3"],
        ["report", "runs/mnist", "--bogus"],
        ["bench", "--bogus"],
        ["bench", "mnist", "--quick", "--bogus"],
    ],
)
def test_unknown_option_points_at_command_help(
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(args, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "unrecognized arguments: --bogus" in err
    assert f"see 'cnnlab {args[0]} --help'" in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_option_before_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["--bogus", "study", "mnist"], capsys)
    assert code == 2
    assert "unrecognized arguments: --bogus" in err
    assert "see 'cnnlab --help'" in err


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


# The text of a requests ConnectionError when a host cannot be resolved, in the wording
# of urllib3 2. Tests raise it from a replaced pooch.retrieve and never contact a host.
OFFLINE_ERROR_TEXT = (
    "HTTPSConnectionPool(host='mirror.example', port=443): Max retries exceeded with url: "
    '/mnist/train-images-idx3-ubyte.gz (Caused by NameResolutionError("<urllib3.connection.'
    "HTTPSConnection object at 0x7f0000000000>: Failed to resolve 'mirror.example' ([Errno -3] "
    'Temporary failure in name resolution)"))'
)


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "verbose"])
@pytest.mark.parametrize(
    ("dataset", "file_name"),
    [("mnist", "train-images-idx3-ubyte(.gz)"), ("cifar10", "cifar-10-binary.tar.gz")],
)
def test_failed_download_exits_3(
    dataset: str,
    file_name: str,
    quiet: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import requests

    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"

    def offline(*args: object, **kwargs: object) -> None:
        raise requests.ConnectionError(OFFLINE_ERROR_TEXT)

    monkeypatch.setattr("pooch.retrieve", offline)
    caplog.set_level(logging.DEBUG)
    args = ["train", dataset, "--data-dir", str(empty), "--out", str(out)]
    code, err = run_cli([*args, "--quiet"] if quiet else args, capsys)

    assert code == 3, err
    errors = [line for line in err.splitlines() if line.startswith("cnnlab: error:")]
    assert len(errors) == 1
    assert file_name in errors[0]
    assert str(empty) in errors[0]
    assert "could not connect" in errors[0]
    assert "--data-dir or $CNNLAB_DATA" in errors[0]
    assert "README.md" in errors[0]
    assert "Max retries" not in err
    assert "Traceback" not in err
    assert not out.exists()
    # Whether log lines reach stderr depends on pytest's handlers, so check the records.
    # Without --quiet only the INFO line that names the download may show.
    records = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert [record.levelno for record in records] == ([] if quiet else [logging.INFO])
    assert not any("Max retries" in record.getMessage() for record in records)
    if quiet:
        assert err.strip() == errors[0]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError("network access is disabled in the tests"), "network access is disabled"),
        (PermissionError(13, "Permission denied"), "Permission denied"),
    ],
)
def test_failed_download_local_error(
    error: OSError,
    reason: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("pooch.retrieve", fail)
    out = tmp_path / "out"
    args = ["study", "mnist", "--data-dir", str(tmp_path), "--out", str(out), "--quiet"]
    code, err = run_cli(args, capsys)
    assert code == 3
    assert len(err.strip().splitlines()) == 1
    assert f"the download failed ({reason}" in err
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


# pooch's INFO lines repeat, once per mirror, the line that cnnlab logs per download.
@pytest.mark.parametrize("quiet", [["--quiet"], []], ids=["quiet", "verbose"])
def test_pooch_logs_only_warnings(
    quiet: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pooch

    logger = pooch.get_logger()
    before = logger.level
    try:
        logger.setLevel(logging.DEBUG)
        run_cli(["report", str(tmp_path / "missing"), *quiet], capsys)
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(before)


def test_report_interrupt_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import cnnlab.report

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cnnlab.report, "write_report", interrupt)
    code, err = run_cli(["report", str(tmp_path), "--quiet"], capsys)
    assert code == 130
    assert "rerun the same command to rebuild the report" in err
    assert "finished runs are stored" not in err


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
