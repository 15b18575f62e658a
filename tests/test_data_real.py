"""Smoke tests on the real MNIST and CIFAR-10 files, with checksums verified.

The files come from $CNNLAB_TEST_DATA, else ../shared/data next to the repository. The
tests skip when neither exists, and fail instead when $CI is "true".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import DatasetSplits, load_dataset
from cnnlab.data.cifar10 import BINARY, BINARY_SHA256, PYTHON, load_cifar10
from cnnlab.data.mnist import FILES as MNIST_FILES
from datafakes import CIFAR_CLASSES, python2_pickle, python_batch_dict, real_data_dir

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def mnist() -> DatasetSplits:
    return load_dataset("mnist", real_data_dir(), download=False)


@pytest.fixture(scope="module")
def cifar10() -> DatasetSplits:
    return load_dataset("cifar10", real_data_dir(), download=False)


def assert_tensors_well_formed(splits: DatasetSplits, image_shape: tuple[int, int, int]) -> None:
    for images in (splits.train_images, splits.val_images, splits.test_images):
        assert images.dtype == torch.uint8
        assert images.is_contiguous()
        assert tuple(images.shape[1:]) == image_shape
    for labels in (splits.train_labels, splits.val_labels, splits.test_labels):
        assert labels.dtype == torch.int64
        assert labels.is_contiguous()
        assert int(labels.min()) == 0
        assert int(labels.max()) == 9


def test_mnist_split_sizes(mnist: DatasetSplits) -> None:
    assert mnist.name == "mnist"
    assert len(mnist.train_images) == 55_000
    assert len(mnist.train_labels) == 55_000
    assert len(mnist.val_images) == 5_000
    assert len(mnist.val_labels) == 5_000
    assert len(mnist.test_images) == 10_000
    assert len(mnist.test_labels) == 10_000
    assert_tensors_well_formed(mnist, (1, 28, 28))


def test_mnist_classes_and_order(mnist: DatasetSplits) -> None:
    assert mnist.classes == tuple("0123456789")
    # The first training image of MNIST is a 5 and the first test image a 7, so the
    # validation split starts at the start of the training file.
    assert int(mnist.val_labels[0]) == 5
    assert int(mnist.test_labels[0]) == 7


def test_mnist_label_histograms(mnist: DatasetSplits) -> None:
    # Each digit is 9-11% of MNIST: the smallest class, 5, has 5,421 of the 60,000
    # training images and the largest, 1, has 6,742.
    for labels, low, high in (
        (mnist.train_labels, 4_500, 6_500),
        (mnist.val_labels, 400, 650),
        (mnist.test_labels, 850, 1_150),
    ):
        counts = torch.bincount(labels, minlength=10)
        assert int(counts.min()) >= low
        assert int(counts.max()) <= high


def test_mnist_pixel_mean(mnist: DatasetSplits) -> None:
    # The usual normalisation mean of MNIST is 0.1307, which is 33.3 on the 0-255 scale.
    mean = float(mnist.train_images.float().mean())
    assert 32.0 < mean < 35.0


def test_mnist_checksums_recorded(mnist: DatasetSplits) -> None:
    assert len(mnist.source) == 4
    assert sorted(mnist.source.values()) == sorted(spec.sha256 for spec in MNIST_FILES)


def test_cifar10_split_sizes(cifar10: DatasetSplits) -> None:
    assert cifar10.name == "cifar10"
    assert len(cifar10.train_images) == 45_000
    assert len(cifar10.train_labels) == 45_000
    assert len(cifar10.val_images) == 5_000
    assert len(cifar10.val_labels) == 5_000
    assert len(cifar10.test_images) == 10_000
    assert len(cifar10.test_labels) == 10_000
    assert_tensors_well_formed(cifar10, (3, 32, 32))


def test_cifar10_classes_and_order(cifar10: DatasetSplits) -> None:
    assert cifar10.classes == CIFAR_CLASSES
    # The first image of data_batch_1 is a frog (6) and the first test image a cat (3).
    assert int(cifar10.train_labels[0]) == 6
    assert int(cifar10.test_labels[0]) == 3


def test_cifar10_label_histograms(cifar10: DatasetSplits) -> None:
    # The training set has exactly 5,000 images per class and the test set 1,000.
    train_and_val = torch.cat([cifar10.train_labels, cifar10.val_labels])
    assert torch.bincount(train_and_val, minlength=10).tolist() == [5_000] * 10
    assert torch.bincount(cifar10.test_labels, minlength=10).tolist() == [1_000] * 10
    val_counts = torch.bincount(cifar10.val_labels, minlength=10)
    assert int(val_counts.min()) >= 400
    assert int(val_counts.max()) <= 600


def test_cifar10_checksums_recorded(cifar10: DatasetSplits) -> None:
    assert len(cifar10.source) == 7
    digests = {Path(path).name: digest for path, digest in cifar10.source.items()}
    for name, digest in BINARY_SHA256.items():
        assert digests[name] == digest


def test_cifar10_python_layout_matches_binary(cifar10: DatasetSplits, tmp_path: Path) -> None:
    """Rebuild the python layout from the binary files and check that both read the same."""
    binary_folder = real_data_dir() / "cifar10" / BINARY.folder
    python_folder = tmp_path / PYTHON.folder
    python_folder.mkdir()
    for binary_name, python_name in zip(BINARY.batch_files, PYTHON.batch_files, strict=True):
        records = np.fromfile(binary_folder / binary_name, dtype=np.uint8).reshape(-1, 3073)
        images = records[:, 1:].reshape(-1, 3, 32, 32)
        batch = python_batch_dict(images, records[:, 0], python_name)
        (python_folder / python_name).write_bytes(python2_pickle(batch))
    meta = {"label_names": list(CIFAR_CLASSES)}
    (python_folder / PYTHON.meta_file).write_bytes(python2_pickle(meta))

    from_python = load_cifar10(tmp_path, download=False)

    assert from_python.classes == cifar10.classes
    for field in ("train", "val", "test"):
        for kind in ("images", "labels"):
            name = f"{field}_{kind}"
            assert torch.equal(getattr(from_python, name), getattr(cifar10, name)), name


def test_real_data_dir_missing_skips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNNLAB_TEST_DATA", str(tmp_path / "absent"))
    monkeypatch.delenv("CI", raising=False)

    with pytest.raises(pytest.skip.Exception, match="real datasets not found"):
        real_data_dir()


def test_real_data_dir_missing_fails_on_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNNLAB_TEST_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("CI", "true")

    with pytest.raises(pytest.fail.Exception, match="set CNNLAB_TEST_DATA"):
        real_data_dir()
