"""Helpers for the data tests: tiny fake MNIST and CIFAR-10 files, and the real data folder.

The fakes have the official formats but few items (60 training and 20 test images for
MNIST, 20 images per CIFAR-10 batch), so the tests read them with verify=False and a
small val_size.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

MNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR_BINARY_FILES = (*(f"data_batch_{number}.bin" for number in range(1, 6)), "test_batch.bin")
CIFAR_PYTHON_FILES = (*(f"data_batch_{number}" for number in range(1, 6)), "test_batch")


# --- MNIST ---------------------------------------------------------------------------


def idx_bytes(items: np.ndarray, *, magic: int | None = None) -> bytes:
    """Encode a uint8 array as IDX: magic number, one big-endian uint32 per dimension, data.

    The magic number defaults to 0x0800 + ndim, which is 2051 for images, 2049 for labels.
    """
    if magic is None:
        magic = 0x0800 + items.ndim
    header = struct.pack(f">I{items.ndim}I", magic, *items.shape)
    return header + items.astype(np.uint8).tobytes()


def write_file(path: Path, content: bytes) -> Path:
    """Write content to path, gzip-compressed if the name ends in .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def fake_mnist_arrays(
    num_train: int = 60, num_test: int = 20, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """Return random images and labels keyed by the official file stem."""
    rng = np.random.default_rng(seed)
    return {
        MNIST_STEMS[0]: rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        MNIST_STEMS[1]: rng.integers(0, 10, num_train, dtype=np.uint8),
        MNIST_STEMS[2]: rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        MNIST_STEMS[3]: rng.integers(0, 10, num_test, dtype=np.uint8),
    }


def mnist_file_name(stem: str, *, gz: bool = True, dotted: bool = False) -> str:
    name = stem.replace("-idx", ".idx") if dotted else stem
    return f"{name}.gz" if gz else name


def write_fake_mnist(
    folder: Path,
    *,
    gz: bool = True,
    dotted: bool = False,
    num_train: int = 60,
    num_test: int = 20,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write the four fake IDX files into folder and return their arrays by stem."""
    arrays = fake_mnist_arrays(num_train, num_test, seed=seed)
    for stem, items in arrays.items():
        write_file(folder / mnist_file_name(stem, gz=gz, dotted=dotted), idx_bytes(items))
    return arrays


# --- CIFAR-10 ------------------------------------------------------------------------


def fake_cifar_batches(
    images_per_batch: int = 20, *, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return six random batches of (images [N, 3, 32, 32], labels [N]), both uint8.

    The first five stand for data_batch_1 to data_batch_5 and the last for test_batch.
    """
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(0, 256, (images_per_batch, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, 10, images_per_batch, dtype=np.uint8),
        )
        for _ in range(6)
    ]


def cifar_binary_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Encode a batch as binary records: one label byte, then the R, G and B planes."""
    records = np.concatenate([labels.reshape(-1, 1), images.reshape(len(images), -1)], axis=1)
    return records.astype(np.uint8).tobytes()


def write_cifar_binary(
    folder: Path,
    batches: list[tuple[np.ndarray, np.ndarray]],
    *,
    classes: tuple[str, ...] = CIFAR_CLASSES,
) -> Path:
    """Write a binary layout (batches in CIFAR_BINARY_FILES order) into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in zip(CIFAR_BINARY_FILES, batches, strict=True):
        (folder / name).write_bytes(cifar_binary_bytes(images, labels))
    (folder / "batches.meta.txt").write_text("".join(f"{name}\n" for name in classes) + "\n")
    return folder


def python_batch_dict(images: np.ndarray, labels: np.ndarray, name: str) -> dict[str, object]:
    """Return the dict of an official python-layout batch, with str keys as Python 2 wrote them."""
    return {
        "batch_label": f"{name} of 6",
        "labels": [int(label) for label in labels],
        "data": images.reshape(len(images), -1),
        "filenames": [f"image_{index}.png" for index in range(len(images))],
    }


def write_cifar_python(
    folder: Path,
    batches: list[tuple[np.ndarray, np.ndarray]],
    *,
    writer: str = "python2",
    classes: tuple[str, ...] = CIFAR_CLASSES,
) -> Path:
    """Write a python layout into folder.

    writer="python2" emits the opcodes that Python 2's cPickle wrote for the official
    files (byte-string keys, numpy.core names). writer="python3" uses pickle.dumps at
    protocol 2 with bytes keys, as a Python 3 user re-saving the files would.
    """
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "num_cases_per_batch": len(batches[0][1]),
        "label_names": list(classes),
        "num_vis": 3072,
    }
    contents = {"batches.meta": meta}
    for name, (images, labels) in zip(CIFAR_PYTHON_FILES, batches, strict=True):
        contents[name] = python_batch_dict(images, labels, name)

    for name, content in contents.items():
        if writer == "python2":
            data = python2_pickle(content)
        else:
            data = pickle.dumps(_with_bytes_keys(content), protocol=2)
        (folder / name).write_bytes(data)
    return folder


def _with_bytes_keys(value: object) -> object:
    if isinstance(value, dict):
        return {key.encode(): _with_bytes_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [item.encode() if isinstance(item, str) else item for item in value]
    if isinstance(value, str):
        return value.encode()
    return value


def python2_pickle(value: object) -> bytes:
    """Pickle value with the protocol-2 opcodes that Python 2's cPickle and NumPy 1 emit.

    Supports dicts, lists, tuples, str (written as a Python 2 byte string), ints, None,
    bools and uint8 NumPy arrays. Python 3's pickle cannot write Python 2 byte strings,
    and the official CIFAR-10 files contain them.
    """
    out = bytearray(b"\x80\x02")  # PROTO 2
    _emit(value, out)
    out += b"."  # STOP
    return bytes(out)


def _emit(value: object, out: bytearray) -> None:
    if value is None:
        out += b"N"
    elif isinstance(value, bool):
        out += b"\x88" if value else b"\x89"  # NEWTRUE, NEWFALSE
    elif isinstance(value, int) and 0 <= value < 256:
        out += b"K" + bytes([value])  # BININT1
    elif isinstance(value, int):
        out += b"J" + struct.pack("<i", value)  # BININT
    elif isinstance(value, str | bytes):
        data = value.encode("latin1") if isinstance(value, str) else value
        if len(data) < 256:
            out += b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
        else:
            out += b"T" + struct.pack("<I", len(data)) + data  # BINSTRING
    elif isinstance(value, tuple):
        out += b"("  # MARK
        for item in value:
            _emit(item, out)
        out += b"t"  # TUPLE
    elif isinstance(value, list):
        out += b"]("  # EMPTY_LIST, MARK
        for item in value:
            _emit(item, out)
        out += b"e"  # APPENDS
    elif isinstance(value, dict):
        out += b"}("  # EMPTY_DICT, MARK
        for key, item in value.items():
            _emit(key, out)
            _emit(item, out)
        out += b"u"  # SETITEMS
    elif isinstance(value, np.ndarray) and value.dtype == np.uint8:
        # _reconstruct(ndarray, (0,), "b"), then BUILD with the state that
        # ndarray.__reduce__ returns: (version, shape, dtype, is_fortran, raw bytes).
        out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        _emit((0,), out)
        _emit("b", out)
        out += b"\x87R"  # TUPLE3, REDUCE
        out += b"("
        _emit(1, out)
        _emit(tuple(value.shape), out)
        out += b"cnumpy\ndtype\n"
        _emit(("u1", 0, 1), out)
        out += b"R"
        _emit((3, "|", None, None, None, -1, -1, 0), out)
        out += b"b"  # BUILD the dtype
        _emit(False, out)
        _emit(np.ascontiguousarray(value).tobytes(), out)
        out += b"tb"  # TUPLE, BUILD the array
    else:
        raise TypeError(f"python2_pickle does not support {type(value).__name__}")


def write_tar_gz(archive: Path, folder: Path) -> Path:
    """Pack folder into a gzip-compressed tar archive, under the folder's own name."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


# --- Real data -----------------------------------------------------------------------


def real_data_dir() -> Path:
    """Return the folder with the real datasets, or skip the test if it is absent.

    The folder is $CNNLAB_TEST_DATA if set, else ../shared/data next to the repository.
    When $CI is "true" a missing folder fails the test, because CI must run these tests.
    """
    configured = os.environ.get("CNNLAB_TEST_DATA")
    if configured:
        folder = Path(configured)
    else:
        folder = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not folder.is_dir():
        reason = (
            f"real datasets not found at {folder}; set CNNLAB_TEST_DATA to a folder "
            f"that contains mnist/ and cifar10/"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return folder
