"""Reliability of a study through the command line: interruption and resume, damaged run
files and checkpoints, bad settings, unwritable output, divergence, determinism and
damaged dataset files.

Every study here is tiny (two runs of two small conv blocks, 2,000 training images,
two epochs). Studies that must run in their own process start ``python -m cnnlab``
with one CPU thread, because the README promises identical numbers only for the same
thread count, and one thread is also the fastest on a busy 2-core machine. Tests that
call ``main`` in this process switch torch to one thread for the same reason.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from cnnlab.cli import main
from cnnlab.errors import DataError
from datafakes import fake_cifar_batches, real_data_dir, write_cifar_python

# Two baseline runs (seeds 0 and 1) and nothing else, so that the first run is stored
# while the second one writes its checkpoint. The small analysis sizes keep the report
# quick to draw.
TINY_STUDY = """\
seeds = 2

[model]
blocks = [ { channels = 4, pool = 2 }, { channels = 8, pool = 2 } ]

[train]
epochs = 2
train_subset = 2000
batch_size = 100

[stride_kernel]
enabled = false

[l2]
enabled = false

[analysis]
grid_images = 4
feature_images = 1
feature_channels = 4
"""

# Fields that measure time and so differ between two runs of the same config.
TIME_FIELDS = frozenset(
    {"epoch_time_s", "eval_time_s", "train_time_s", "images_per_s", "wall_time_s"}
)

# Bound on one tiny study, which took 10 to 25 s on a 2-core CPU shared with other jobs.
STUDY_TIMEOUT_S = 180
POLL_INTERVAL_S = 0.01


# --- helpers ---------------------------------------------------------------------------


def write_config(folder: Path, text: str = TINY_STUDY, name: str = "tiny.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def study_args(out: Path, config: Path, data_dir: Path | None = None) -> list[str]:
    """Return the arguments of ``cnnlab study mnist`` for the tiny study."""
    data = real_data_dir() if data_dir is None else data_dir
    return ["study", "mnist", "--config", str(config), "--out", str(out), "--data-dir", str(data)]


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Return an environment with an empty data cache and one CPU thread."""
    env = dict(os.environ)
    env["CNNLAB_DATA"] = str(tmp_path / "cnnlab-cache")
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_study_process(
    out: Path, config: Path, tmp_path: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cnnlab", *study_args(out, config), "--quiet", *extra]
    return subprocess.run(
        command,
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=STUDY_TIMEOUT_S,
        check=False,
    )


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Call the command line in this process and return its exit code and stderr."""
    try:
        code = main(args)
    except SystemExit as exc:  # argparse exits on its own errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def without_times(row: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name not in TIME_FIELDS}


def run_metrics(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return each run's outcome, final metrics, history and confusion matrix, less times."""
    return {
        key: {
            "status": run["status"],
            "diverged_epoch": run["diverged_epoch"],
            "final": without_times(run["final"]),
            "history": [without_times(row) for row in run["history"]],
            "confusion": run["confusion"],
        }
        for key, run in results["runs"].items()
    }


def read_results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def assert_same_metrics(out: Path, reference: Path) -> None:
    actual = run_metrics(read_results(out))
    expected = run_metrics(read_results(reference))
    assert sorted(actual) == sorted(expected)
    for key, metrics in expected.items():
        assert actual[key] == metrics, f"run {key} differs from the uninterrupted run"


def baseline_keys(out: Path) -> list[str]:
    return read_results(out)["sections"]["baseline"]["runs"]


def file_states(folder: Path, pattern: str) -> dict[str, tuple[bytes, int]]:
    """Return the bytes and modification time of each file matching pattern."""
    return {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.glob(pattern)
    }


def wait_for_resume_point(process: subprocess.Popen[str], runs: Path) -> tuple[list[Path], Path]:
    """Poll until a run is stored and the next run has a checkpoint, and return both."""
    deadline = time.monotonic() + STUDY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the study exited with code {process.returncode} before the checkpoint")
        stored = sorted(runs.glob("*.json"))
        stored_keys = {path.stem for path in stored}
        for checkpoint in runs.glob("*.checkpoint.pt"):
            if stored and checkpoint.name.removesuffix(".checkpoint.pt") not in stored_keys:
                return stored, checkpoint
        time.sleep(POLL_INTERVAL_S)
    process.kill()
    pytest.fail(f"no stored run and next checkpoint in {runs} within {STUDY_TIMEOUT_S} s")


class MakeDirOnLoad:
    """Payload that unpickles as os.mkdir(marker), so a folder at marker proves that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> Path:
    """Return the folder of the tiny study run once, uninterrupted, in its own process."""
    tmp_path = tmp_path_factory.mktemp("reference")
    out = tmp_path / "study"
    result = run_study_process(out, tiny_config, tmp_path)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def study_copy(reference: Path, tmp_path: Path) -> Path:
    """Return a copy of the finished reference study that a test may damage."""
    return Path(shutil.copytree(reference, tmp_path / "study"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Train on one thread, as the subprocesses do, so that the numbers match theirs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mnist_copy(tmp_path: Path) -> Path:
    """Return a data folder with copies of the four real MNIST .gz files in mnist/."""
    folder = tmp_path / "data"
    shutil.copytree(real_data_dir() / "mnist", folder / "mnist")
    return folder


# --- interruption, resume and determinism ----------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize(
    "signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda signum: signum.name
)
def test_study_resumes_after_signal(
    signum: signal.Signals, reference: Path, tiny_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "study"
    runs = out / "runs"
    command = [sys.executable, "-m", "cnnlab", *study_args(out, tiny_config), "--quiet"]
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        env = subprocess_env(tmp_path)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            stored, checkpoint = wait_for_resume_point(process, runs)
            process.send_signal(signum)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    if signum != signal.SIGKILL:
        interrupted = stderr_path.read_text()
        assert process.returncode > 0, interrupted
        assert "Traceback" not in interrupted
        assert len(error_lines(interrupted)) == 1, interrupted
        assert "rerun" in interrupted

    assert checkpoint.exists(), "the interrupted run left no checkpoint"
    checkpoint_history = torch.load(checkpoint, weights_only=True)["history"]
    assert checkpoint_history, "the checkpoint holds no finished epoch"
    stored_before = file_states(runs, "*.json")
    assert {path.name for path in stored} <= set(stored_before)

    rerun = run_study_process(out, tiny_config, tmp_path)
    assert rerun.returncode == 0, rerun.stderr

    stored_after = file_states(runs, "*.json")
    for name in (path.name for path in stored):
        assert stored_after[name] == stored_before[name], f"finished run {name} was rewritten"
    assert not checkpoint.exists()
    resumed_key = checkpoint.name.removesuffix(".checkpoint.pt")
    resumed = read_results(out)["runs"][resumed_key]
    # Epochs restored from the checkpoint keep their measured times. Retrained ones would not.
    restored_times = [row["epoch_time_s"] for row in resumed["history"][: len(checkpoint_history)]]
    assert restored_times == [row["epoch_time_s"] for row in checkpoint_history]
    assert_same_metrics(out, reference)
    assert (out / "report.md").exists()


@pytest.mark.realdata
@pytest.mark.slow
def test_same_seed_gives_same_metrics(reference: Path, tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    result = run_study_process(out, tiny_config, tmp_path)
    assert result.returncode == 0, result.stderr
    assert_same_metrics(out, reference)


# --- damaged run records and checkpoints -----------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"null\n", id="null"),
        pytest.param(lambda data: b"[]\n", id="list"),
    ],
)
def test_damaged_run_record_is_retrained(
    damage: Any, study_copy: Path, reference: Path, tiny_config: Path, one_thread: None
) -> None:
    runs = study_copy / "runs"
    kept_key, damaged_key = baseline_keys(study_copy)
    damaged = runs / f"{damaged_key}.json"
    damaged.write_bytes(damage(damaged.read_bytes()))
    kept_before = file_states(runs, f"{kept_key}*")
    weights_before = (runs / f"{damaged_key}.weights.pt").stat().st_mtime_ns

    assert main([*study_args(study_copy, tiny_config), "--quiet"]) == 0

    record = json.loads(damaged.read_text(encoding="utf-8"))
    assert record["key"] == damaged_key
    assert record["status"] == "completed"
    assert (runs / f"{damaged_key}.weights.pt").stat().st_mtime_ns != weights_before
    assert file_states(runs, f"{kept_key}*") == kept_before
    assert_same_metrics(study_copy, reference)


def remove_second_run(study: Path) -> Path:
    """Delete the second run's record and weights, and return its checkpoint path."""
    runs = study / "runs"
    key = baseline_keys(study)[1]
    (runs / f"{key}.json").unlink()
    (runs / f"{key}.weights.pt").unlink()
    return runs / f"{key}.checkpoint.pt"


@pytest.mark.realdata
@pytest.mark.slow
def test_truncated_checkpoint_is_ignored(
    study_copy: Path,
    reference: Path,
    tiny_config: Path,
    one_thread: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    checkpoint = remove_second_run(study_copy)
    # A torch.save archive cut in half, as a crash during a non-atomic write leaves it.
    weights = (study_copy / "runs" / f"{baseline_keys(study_copy)[0]}.weights.pt").read_bytes()
    checkpoint.write_bytes(weights[: len(weights) // 2])

    assert main([*study_args(study_copy, tiny_config), "--quiet"]) == 0

    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any(str(checkpoint) in message for message in warnings), warnings
    assert not checkpoint.exists()
    assert_same_metrics(study_copy, reference)


@pytest.mark.realdata
@pytest.mark.slow
def test_checkpoint_without_state_is_ignored(
    study_copy: Path, reference: Path, tiny_config: Path, one_thread: None
) -> None:
    checkpoint = remove_second_run(study_copy)
    torch.save({}, checkpoint)

    assert main([*study_args(study_copy, tiny_config), "--quiet"]) == 0

    assert not checkpoint.exists()
    assert_same_metrics(study_copy, reference)


@pytest.mark.realdata
@pytest.mark.slow
def test_checkpoint_pickle_runs_no_code(
    study_copy: Path,
    reference: Path,
    tiny_config: Path,
    tmp_path: Path,
    one_thread: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    marker = tmp_path / "code-ran"
    checkpoint = remove_second_run(study_copy)
    torch.save({"model": MakeDirOnLoad(marker)}, checkpoint)
    # A full unpickling runs the payload, so the file is live.
    torch.load(checkpoint, weights_only=False)
    assert marker.is_dir()
    marker.rmdir()

    try:
        code = main([*study_args(study_copy, tiny_config), "--quiet"])
    finally:
        # Checked even when main raises, because a payload that ran can break the load.
        assert not marker.exists(), "loading the checkpoint ran code from it"

    assert code == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any(str(checkpoint) in message for message in warnings), warnings
    assert_same_metrics(study_copy, reference)


# --- bad settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("nan-alpha.toml", "[l2]\nalphas = [0.0, nan]\n", "invalid l2.alphas[1] nan"),
        ("inf-alpha.toml", "[l2]\nalphas = [inf]\n", "invalid l2.alphas[0] inf"),
        ("nan-l2.toml", "[train]\nl2 = nan\n", "invalid train.l2 nan"),
        ("nan-lr.toml", "[train]\nlr = nan\n", "invalid train.lr nan"),
        ("zero-lr.toml", "[train]\nlr = 0.0\n", "invalid train.lr 0.0"),
        ("zero-batch.toml", "[train]\nbatch_size = 0\n", "invalid train.batch_size 0"),
        ("fraction-epochs.toml", "[train]\nepochs = 2.5\n", "invalid train.epochs 2.5"),
        ("zero-subset.toml", "[train]\ntrain_subset = 0\n", "invalid train.train_subset 0"),
        ("precision.toml", '[train]\nprecision = "fp8"\n', "invalid train.precision 'fp8'"),
        ("device.toml", 'device = "gpu"\n', "invalid device 'gpu'"),
        ("seeds.toml", "seeds = 0\n", "invalid seeds 0"),
        ("hidden.toml", "[model]\nhidden = [0]\n", "invalid model.hidden[0] 0"),
        ("sweep-kernel.toml", "[stride_kernel]\nkernel_sizes = [29]\n", "kernel_sizes[0] 29"),
        (
            "sweep-zero-size.toml",
            "[stride_kernel]\nstrides = [3]\nreplace_pooling = false\n",
            "zero size",
        ),
        (
            "unknown-key.toml",
            "[l2]\nalpha = [0.1]\n",
            "unknown config key 'l2.alpha'; did you mean 'alphas'?",
        ),
        (
            "unknown-table.toml",
            "[trian]\nepochs = 2\n",
            "unknown config key 'trian'; did you mean 'train'?",
        ),
        ("list-for-table.json", '{"train": [1, 2]}', "invalid train: expected a table of keys"),
        ("table-for-list.json", '{"model": {"blocks": {"channels": 8}}}', "invalid model.blocks"),
        ("number-for-block.json", '{"model": {"blocks": [8]}}', "invalid model.blocks[0]"),
        ("top-level-list.json", "[1, 2]", "expected a table of keys at the top level"),
        ("string-for-number.json", '{"train": {"lr": "0.1"}}', "invalid train.lr '0.1'"),
        ("bool-for-number.json", '{"train": {"epochs": true}}', "invalid train.epochs true"),
    ],
)
def test_invalid_config_file_exits_2(
    name: str, text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, text, name)
    out = tmp_path / "out"
    data = tmp_path / "data"
    code, err = run_cli(study_args(out, config, data), capsys)
    assert code == 2, err
    assert message in err
    assert len(error_lines(err)) == 1, err
    assert not out.exists()
    assert not data.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "-1"], "invalid value -1: must be at least 1"),
        (["--seeds", "101"], "invalid --seeds 101"),
        (["--seed", "-1"], "invalid value -1: must be 0 or more"),
        (["--seed", str(2**31)], f"invalid --seed {2**31}"),
        (["--seeds", "1.5"], "invalid value '1.5': expected a whole number"),
    ],
)
def test_invalid_option_exits_2(
    args: list[str],
    message: str,
    tiny_config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    data = tmp_path / "data"
    code, err = run_cli([*study_args(out, tiny_config, data), *args], capsys)
    assert code == 2, err
    assert message in err
    assert len(error_lines(err)) == 1, err
    assert not out.exists()
    assert not data.exists()


@pytest.mark.realdata
def test_nan_alpha_in_separate_process(tmp_path: Path) -> None:
    # The tiny study with one bad value, so that a validation gap trains for seconds only.
    config = write_config(
        tmp_path,
        TINY_STUDY.replace("[l2]\nenabled = false", "[l2]\nalphas = [0.0, nan]\nepochs = 1"),
        "nan-alpha.toml",
    )
    out = tmp_path / "out"
    result = run_study_process(out, config, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "invalid l2.alphas[1] nan" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert not out.exists()


@pytest.mark.realdata
def test_out_is_existing_file(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.txt"
    out.write_text("keep me\n")
    code, err = run_cli(study_args(out, tiny_config), capsys)
    assert code == 4, err  # the exit code for output that cannot be written
    assert str(out) in err
    assert len(error_lines(err)) == 1, err
    assert out.read_text() == "keep me\n"


@pytest.mark.parametrize("other_runs", [False, True])  # True: a TensorBoard-style runs/
def test_out_folder_with_other_files_kept(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], other_runs: bool
) -> None:
    """A folder that is not a cnnlab run folder is left alone, so report.md is not overwritten."""
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "report.md").write_text("my own report\n")
    if other_runs:
        (out / "runs" / "tb").mkdir(parents=True)
    code, err = run_cli(study_args(out, tiny_config), capsys)
    assert code == 4, err
    assert "already contains files that cnnlab did not write" in err
    assert len(error_lines(err)) == 1, err
    assert (out / "report.md").read_text() == "my own report\n"
    expected = ["report.md", "runs"] if other_runs else ["report.md"]
    assert sorted(path.name for path in out.iterdir()) == expected
    if other_runs:
        assert [path.name for path in (out / "runs").iterdir()] == ["tb"]


def test_out_file_rejected_before_data(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.txt"
    out.write_text("keep me\n")
    data = tmp_path / "data"
    data.mkdir()
    code, err = run_cli(study_args(out, tiny_config, data), capsys)
    assert code == 4, err
    assert str(out) in err
    assert list(data.iterdir()) == []


# --- output that cannot be written -----------------------------------------------------


@pytest.mark.realdata
def test_out_under_regular_file(
    study_copy: Path, tiny_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = {**file_states(study_copy, "*.*"), **file_states(study_copy / "runs", "*")}
    out = study_copy / "results.json" / "again"
    code, err = run_cli([*study_args(out, tiny_config), "--quiet"], capsys)
    assert code == 4, err
    assert str(out) in err
    assert "Traceback" not in err
    assert len(error_lines(err)) == 1, err
    assert {**file_states(study_copy, "*.*"), **file_states(study_copy / "runs", "*")} == stored


def test_out_under_read_only_folder(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions; test_out_under_regular_file covers root")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    out = locked / "out"
    try:
        code, err = run_cli([*study_args(out, tiny_config), "--quiet"], capsys)
    finally:
        locked.chmod(0o755)
    assert code == 4, err
    assert str(out) in err
    assert len(error_lines(err)) == 1, err
    assert not out.exists()


@pytest.mark.realdata
@pytest.mark.slow
def test_blocked_figures_folder_keeps_runs(
    study_copy: Path, tiny_config: Path, one_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = study_copy / "figures"
    shutil.rmtree(figures)
    figures.write_text("not a folder\n")
    runs_before = file_states(study_copy / "runs", "*")

    code, err = run_cli([*study_args(study_copy, tiny_config), "--quiet"], capsys)

    assert code == 4, err
    assert str(figures) in err
    assert len(error_lines(err)) == 1, err
    assert file_states(study_copy / "runs", "*") == runs_before
    assert figures.read_text() == "not a folder\n"


# --- divergence ------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_diverged_runs_are_reported(tmp_path: Path, one_thread: None) -> None:
    # Two runs: the baseline and one L2 cell, both at a learning rate of 10.
    text = TINY_STUDY.replace("seeds = 2", "seeds = 1")
    text = text.replace("batch_size = 100", 'batch_size = 100\nlr = 10.0\nschedule = "constant"')
    text = text.replace(
        "[l2]\nenabled = false", "[l2]\nalphas = [1e-4]\nepochs = 2\ntrain_subset = 2000"
    )
    config = write_config(tmp_path, text, "diverge.toml")
    out = tmp_path / "study"

    assert main([*study_args(out, config), "--quiet"]) == 0

    results = read_results(out)
    assert len(results["runs"]) == 2
    for key, run in results["runs"].items():
        assert run["status"] == "diverged", key
        assert run["diverged_epoch"] in (1, 2), key
        assert (out / "runs" / f"{key}.json").exists()
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "diverged" in markdown
    assert (out / "report.html").exists()


# --- damaged dataset files -------------------------------------------------------------


def damage_gz(path: Path, change: Any) -> None:
    """Rewrite a .gz file with its uncompressed content passed through change."""
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


def cut_gz_stream(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def cut_content(path: Path) -> None:
    damage_gz(path, lambda content: content[: len(content) // 2])


def compress_twice(path: Path) -> None:
    # One gunzip then leaves gzip bytes, whose first four (1f 8b 08 00) are no IDX magic.
    path.write_bytes(gzip.compress(path.read_bytes()))


def label_magic(path: Path) -> None:
    # 2049 is the magic number of a label file, which declares one dimension, not three.
    damage_gz(path, lambda content: (2049).to_bytes(4, "big") + content[4:])


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("file_name", "damage", "message"),
    [
        ("train-labels-idx1-ubyte.gz", cut_gz_stream, "invalid gzip file"),
        ("t10k-labels-idx1-ubyte.gz", cut_content, "truncated"),
        ("t10k-labels-idx1-ubyte.gz", compress_twice, "wrong magic number"),
        ("t10k-images-idx3-ubyte.gz", label_magic, "wrong number of dimensions"),
    ],
    ids=["cut-gzip", "cut-content", "compressed-twice", "label-magic"],
)
def test_damaged_mnist_file_exits_3(
    file_name: str,
    damage: Any,
    message: str,
    mnist_copy: Path,
    tiny_config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    damaged = mnist_copy / "mnist" / file_name
    damage(damaged)
    out = tmp_path / "out"
    code, err = run_cli([*study_args(out, tiny_config, mnist_copy), "--quiet"], capsys)
    assert code == 3, err
    assert str(damaged) in err
    assert message in err
    assert len(error_lines(err)) == 1, err
    assert not out.exists()


@pytest.mark.realdata
def test_damaged_mnist_in_separate_process(
    mnist_copy: Path, tiny_config: Path, tmp_path: Path
) -> None:
    damaged = mnist_copy / "mnist" / "t10k-labels-idx1-ubyte.gz"
    cut_content(damaged)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cnnlab", *study_args(out, tiny_config, mnist_copy), "--quiet"]

    result = subprocess.run(
        command, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert str(damaged) in result.stderr
    assert not out.exists()


@pytest.mark.realdata
def test_damaged_mnist_debug_raises(mnist_copy: Path, tiny_config: Path, tmp_path: Path) -> None:
    damaged = mnist_copy / "mnist" / "t10k-labels-idx1-ubyte.gz"
    cut_content(damaged)
    out = tmp_path / "out"
    # With --debug, main re-raises, so Python prints the full traceback.
    with pytest.raises(DataError, match="truncated"):
        main([*study_args(out, tiny_config, mnist_copy), "--quiet", "--debug"])
    assert not out.exists()


def test_cifar_pickle_runs_no_code(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(MakeDirOnLoad(marker), protocol=2)
    pickle.loads(payload)  # plain pickle runs the payload, so the payload is live
    assert marker.is_dir()
    marker.rmdir()
    data = tmp_path / "data"
    folder = write_cifar_python(data / "cifar10" / "cifar-10-batches-py", fake_cifar_batches())
    damaged = folder / "data_batch_1"
    damaged.write_bytes(payload)
    # The tiny study, so that a gap in the checks trains for seconds only.
    tiny_cifar = TINY_STUDY.replace("[model]", "[preprocessing]\nenabled = false\n\n[model]")
    config = write_config(tmp_path, tiny_cifar)
    out = tmp_path / "out"
    args = ["study", "cifar10", "--config", str(config), "--out", str(out), "--data-dir", str(data)]

    code, err = run_cli(args, capsys)

    assert code == 3, err
    assert str(damaged) in err
    assert len(error_lines(err)) == 1, err
    assert not marker.exists(), "reading the batch ran code from it"
    assert not out.exists()
