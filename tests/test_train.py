from __future__ import annotations

import ctypes
import json
import math
import sys
from pathlib import Path

import pytest
import torch

import cnnlab.train as train_module
from cnnlab.config import Preprocess, to_dict
from cnnlab.data import DatasetSplits
from cnnlab.models import build_model, penalized_weights
from cnnlab.preprocess import augment, fit_scaler
from cnnlab.store import RunStore, run_key
from cnnlab.train import keep_freed_memory, make_optimizer, train_run
from conftest import make_splits, tiny_run


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_run_learns_tiny_data(tiny_data: DatasetSplits, precision: str) -> None:
    record = train_run(tiny_run(epochs=4, precision=precision), tiny_data, progress=False)
    assert record["status"] == "completed"
    assert len(record["history"]) == 4
    assert record["final"]["test_accuracy"] > 0.5
    json.dumps(record, allow_nan=False)


def test_same_seed_same_metrics(tiny_data: DatasetSplits) -> None:
    first = train_run(tiny_run(), tiny_data, progress=False)
    second = train_run(tiny_run(), tiny_data, progress=False)
    drop = ("epoch_time_s", "eval_time_s")
    strip = lambda h: [{k: v for k, v in row.items() if k not in drop} for row in h]  # noqa: E731
    assert strip(first["history"]) == strip(second["history"])
    assert first["confusion"] == second["confusion"]


def test_l2_penalty_is_logged_and_shrinks_weights(tiny_data: DatasetSplits) -> None:
    plain = train_run(tiny_run(), tiny_data, progress=False)
    penalised = train_run(tiny_run(l2=0.05), tiny_data, progress=False)
    assert all(row["l2_penalty"] == 0 for row in plain["history"])
    assert all(row["l2_penalty"] > 0 for row in penalised["history"])
    row = penalised["history"][-1]
    assert row["train_loss"] == pytest.approx(row["train_ce"] + row["l2_penalty"])
    assert penalised["final"]["weight_norm_sq"] < plain["final"]["weight_norm_sq"]


def test_penalty_covers_weights_not_biases() -> None:
    model = build_model(tiny_run().model, (1, 28, 28), 10)
    names = {id(p): n for n, p in model.named_parameters()}
    covered = [names[id(w)] for w in penalized_weights(model)]
    assert covered == ["features.0.conv.weight", "features.1.conv.weight", "head.1.weight"]


def test_divergence_is_recorded(tiny_data: DatasetSplits) -> None:
    record = train_run(tiny_run(lr=10.0, schedule="constant"), tiny_data, progress=False)
    assert record["status"] == "diverged"
    assert record["diverged_epoch"] == 1
    json.dumps(record, allow_nan=False)


def test_sparse_divergence_checks_same_result(
    tiny_data: DatasetSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking the loss every few steps, as on a GPU, trains the same and still stops."""
    every_step = train_run(tiny_run(), tiny_data, progress=False)
    monkeypatch.setitem(train_module.SYNC_STEPS, "cpu", 4)
    sparse = train_run(tiny_run(), tiny_data, progress=False)
    drop = ("epoch_time_s", "eval_time_s")
    for a, b in zip(every_step["history"], sparse["history"], strict=True):
        assert {k: v for k, v in a.items() if k not in drop} == {
            k: v for k, v in b.items() if k not in drop
        }
    diverged = train_run(tiny_run(lr=10.0, schedule="constant"), tiny_data, progress=False)
    assert (diverged["status"], diverged["diverged_epoch"]) == ("diverged", 1)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # fp16 also stores its loss scale
def test_resume_matches_uninterrupted(
    tiny_data: DatasetSplits, tmp_path: Path, precision: str
) -> None:
    """A run stopped after epoch 2 and resumed ends exactly like one that never stopped."""
    config = tiny_run(epochs=3, precision=precision)
    full = train_run(config, tiny_data, progress=False)
    checkpoint = tmp_path / "ckpt.pt"
    two = train_run(config, tiny_data, progress=False, checkpoint=checkpoint, stop_after=2)
    assert len(two["history"]) == 2
    assert checkpoint.exists()
    scaler_state = torch.load(checkpoint, weights_only=True)["grad_scaler"]
    assert (scaler_state is not None) == (precision == "fp16")
    resumed = train_run(config, tiny_data, progress=False, checkpoint=checkpoint)
    assert resumed["final"]["test_accuracy"] == full["final"]["test_accuracy"]
    assert resumed["history"][-1]["train_loss"] == full["history"][-1]["train_loss"]
    assert resumed["confusion"] == full["confusion"]


def test_scaler_uses_training_statistics() -> None:
    data = make_splits()
    scaler = fit_scaler(data.train_images, Preprocess(standardize=True))
    x = scaler(data.train_images)
    assert abs(float(x.mean())) < 1e-4
    assert float(x.std()) == pytest.approx(1.0, abs=1e-3)


def test_whitening_decorrelates_pixels() -> None:
    data = make_splits(n_train=600, size=8)
    scaler = fit_scaler(
        data.train_images, Preprocess(standardize=True, whiten=True), zca_epsilon=1e-4
    )
    x = scaler(data.train_images).reshape(600, -1).double()
    cov = torch.cov(x.T)
    off = cov - torch.diag(torch.diag(cov))
    assert float(off.abs().max()) < 0.05


@pytest.mark.parametrize(
    "pre",
    [
        Preprocess(translate=2),
        Preprocess(crop_padding=4),
        Preprocess(flip=True),
        Preprocess(cutout=8),
        Preprocess(crop_padding=4, flip=True, cutout=8),
    ],
)
def test_augment_keeps_shape_and_range(pre: Preprocess) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 32, 32) * 2 - 1
    y = augment(x, pre, generator)
    assert y.shape == x.shape
    assert y.dtype == x.dtype
    assert float(y.min()) >= -1.0
    assert float(y.max()) <= 1.0


def test_cutout_zeroes_a_square() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.ones(32, 1, 32, 32)
    y = augment(x, Preprocess(cutout=8), generator)
    zeros = (y == 0).flatten(1).sum(dim=1)
    assert int(zeros.max()) == 64
    assert int(zeros.min()) > 0


def test_flip_mirrors_some_images() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.arange(32.0).repeat(64, 1, 32, 1)  # each row counts 0..31
    y = augment(x, Preprocess(flip=True), generator)
    flipped = (y[:, 0, 0, 0] == 31).sum()
    kept = (y[:, 0, 0, 0] == 0).sum()
    assert int(flipped) + int(kept) == 64
    assert 10 < int(flipped) < 54


def test_translate_fills_with_background() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.ones(16, 1, 28, 28)
    y = augment(x, Preprocess(translate=2), generator, background=-0.5)
    assert set(torch.unique(y).tolist()) <= {1.0, -0.5}


def test_run_key_depends_on_config() -> None:
    first = run_key(to_dict(tiny_run()))
    assert first == run_key(to_dict(tiny_run()))
    assert first != run_key(to_dict(tiny_run(l2=1e-3)))


def test_store_ignores_corrupt_result(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.result_path("abc").write_text("{not json")
    assert store.get("abc") is None
    record = {"key": "abc", "status": "completed", "x": math.pi}
    store.put("abc", record)
    assert store.get("abc") == record
    store.put("abc", {"key": "abc", "x": math.pi})
    assert store.get("abc") is None, "a record without a status is incomplete"


def test_run_with_one_step(tiny_data: DatasetSplits) -> None:
    record = train_run(tiny_run(epochs=1, train_subset=20), tiny_data, progress=False)
    assert record["status"] == "completed"
    assert record["history"][0]["lr"] >= 0


def test_one_cycle_schedule_shape() -> None:
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = make_optimizer(model, tiny_run(lr=1.0, warmup_fraction=0.25).train, 8)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0 * 6 / 6])
    assert max(rates) == pytest.approx(1.0)
    assert rates == sorted(rates[:2]) + sorted(rates[2:], reverse=True)
    assert rates[-1] == pytest.approx(1 / 6)


def test_damaged_weights_file_means_retraining(tmp_path: Path) -> None:
    from cnnlab.study import _stored

    store = RunStore(tmp_path)
    record = {"key": "abc", "status": "completed"}
    store.put("abc", record)
    assert _stored(store, "abc") is None, "no weights file"
    torch.save({"w": torch.zeros(2)}, store.weights_path("abc"))
    assert _stored(store, "abc") == record
    data = store.weights_path("abc").read_bytes()
    store.weights_path("abc").write_bytes(data[: len(data) // 2])
    assert _stored(store, "abc") is None, "truncated weights file"


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_damaged_weights_warning_is_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    from cnnlab.study import _stored

    store = RunStore(tmp_path)
    store.put("abc", {"key": "abc", "status": "completed"})
    torch.save({"w": torch.arange(1000.0)}, store.weights_path("abc"))
    data = bytearray(store.weights_path("abc").read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        for i in range(0, len(data), 7):
            data[i] ^= 0x5A
    store.weights_path("abc").write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        assert _stored(store, "abc") is None
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1, messages
    assert "\n" not in messages[0]
    assert "weights_only" not in messages[0]
    assert str(store.weights_path("abc")) in messages[0]


class MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2: ten size_t counters of the heap."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_large_blocks_come_from_the_heap() -> None:
    """A 64 MiB tensor lands in the reusable heap, not in a mapping freed with it."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    assert keep_freed_memory()
    mapped_before = libc.mallinfo2().hblkhd
    block = torch.ones(16 * 2**20)  # 64 MiB, over glibc's largest mmap threshold
    mapped_with_block = libc.mallinfo2().hblkhd
    del block
    assert mapped_with_block - mapped_before < 2**20
