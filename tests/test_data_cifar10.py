"""Tests of the CIFAR-10 reader and its restricted unpickler, on tiny fake files."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pooch
import pytest
import requests
import torch

from cnnlab.data import DatasetSplits, load_dataset
from cnnlab.data._safe_pickle import load_restricted_pickle
from cnnlab.data.cifar10 import (
    ARCHIVE_HASH,
    ARCHIVE_URL,
    BINARY,
    PYTHON,
    VAL_SIZE,
    Layout,
    load_cifar10,
    read_binary_batch,
    read_class_names,
    read_python_batch,
    split_cifar10,
)
from cnnlab.errors import DataError
from datafakes import (
    CIFAR_BINARY_FILES,
    CIFAR_CLASSES,
    CIFAR_PYTHON_FILES,
    cifar_binary_bytes,
    fake_cifar_batches,
    python2_pickle,
    python_batch_dict,
    write_cifar_binary,
    write_cifar_python,
    write_tar_gz,
)

Batches = list[tuple[np.ndarray, np.ndarray]]


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that reaches pooch.retrieve without replacing it first."""

    def reject(*args: object, **kwargs: object) -> str:
        raise AssertionError(f"a test tried to download: {args} {kwargs}")

    monkeypatch.setattr(pooch, "retrieve", reject)


def assert_data_error(error: pytest.ExceptionInfo[DataError], path: Path, phrase: str) -> None:
    message = str(error.value)
    assert str(path) in message
    assert phrase in message
    assert "\n" not in message


def assert_matches_batches(splits: DatasetSplits, batches: Batches, val_size: int) -> None:
    """Compare every split with the fake batches that were written."""
    train_images = np.concatenate([images for images, _ in batches[:5]])
    train_labels = np.concatenate([labels for _, labels in batches[:5]])
    num_train = len(train_images) - val_size
    assert np.array_equal(splits.train_images.numpy(), train_images[:num_train])
    assert np.array_equal(splits.train_labels.numpy(), train_labels[:num_train])
    assert np.array_equal(splits.val_images.numpy(), train_images[num_train:])
    assert np.array_equal(splits.val_labels.numpy(), train_labels[num_train:])
    assert np.array_equal(splits.test_images.numpy(), batches[5][0])
    assert np.array_equal(splits.test_labels.numpy(), batches[5][1])
    assert splits.classes == CIFAR_CLASSES


def load_fake(data_dir: Path, *, download: bool = False) -> DatasetSplits:
    return load_cifar10(data_dir, download=download, verify=False, val_size=10)


# --- Layouts -------------------------------------------------------------------------


def test_load_binary_layout(tmp_path: Path) -> None:
    batches = fake_cifar_batches(20)
    write_cifar_binary(tmp_path / "cifar10" / BINARY.folder, batches)

    splits = load_fake(tmp_path)

    assert splits.name == "cifar10"
    assert splits.classes == CIFAR_CLASSES
    assert splits.train_images.shape == (90, 3, 32, 32)
    assert splits.val_images.shape == (10, 3, 32, 32)
    assert splits.test_images.shape == (20, 3, 32, 32)
    assert splits.train_labels.shape == (90,)
    for images in (splits.train_images, splits.val_images, splits.test_images):
        assert images.dtype == torch.uint8
        assert images.is_contiguous()
    for labels in (splits.train_labels, splits.val_labels, splits.test_labels):
        assert labels.dtype == torch.int64
        assert labels.is_contiguous()
    assert_matches_batches(splits, batches, val_size=10)


def test_load_binary_validation_is_end_of_batch_5(tmp_path: Path) -> None:
    batches = fake_cifar_batches(20)
    write_cifar_binary(tmp_path / "cifar10" / BINARY.folder, batches)

    splits = load_fake(tmp_path)

    batch_5_images, batch_5_labels = batches[4]
    assert np.array_equal(splits.val_images.numpy(), batch_5_images[10:])
    assert np.array_equal(splits.val_labels.numpy(), batch_5_labels[10:])
    assert "last 10 of the 100 official training images" in splits.split_rule
    assert "training is the first 90" in splits.split_rule


def test_binary_record_planes_are_rgb(tmp_path: Path) -> None:
    # One record: label 3, then a red plane of 10s, a green plane of 20s, a blue one of 30s.
    record = bytes([3]) + bytes([10]) * 1024 + bytes([20]) * 1024 + bytes([30]) * 1024
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(record * 2)

    images, labels, _ = read_binary_batch(path, verify=False)

    assert labels.tolist() == [3, 3]
    assert images.shape == (2, 3, 32, 32)
    assert (images[:, 0] == 10).all()
    assert (images[:, 1] == 20).all()
    assert (images[:, 2] == 30).all()


def test_binary_source_hashes(tmp_path: Path) -> None:
    batches = fake_cifar_batches(20)
    folder = write_cifar_binary(tmp_path / "cifar10" / BINARY.folder, batches)

    splits = load_fake(tmp_path)

    expected = {
        str(folder / name): hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ("batches.meta.txt", *CIFAR_BINARY_FILES)
    }
    assert splits.source == expected


@pytest.mark.parametrize("writer", ["python2", "python3"])
def test_load_python_layout(tmp_path: Path, writer: str) -> None:
    batches = fake_cifar_batches(20)
    folder = write_cifar_python(tmp_path / "cifar10" / PYTHON.folder, batches, writer=writer)

    splits = load_fake(tmp_path)

    assert_matches_batches(splits, batches, val_size=10)
    assert set(splits.source) == {
        str(folder / name) for name in ("batches.meta", *CIFAR_PYTHON_FILES)
    }


def test_python2_fake_uses_official_globals(tmp_path: Path) -> None:
    images, labels = fake_cifar_batches(2)[0]
    content = python2_pickle(python_batch_dict(images, labels, "data_batch_1"))

    names = {arg for op, arg, _ in pickletools.genops(content) if op.name == "GLOBAL"}

    assert names == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def test_python3_pickle_uses_allowed_globals() -> None:
    images, labels = fake_cifar_batches(2)[0]
    batch = {b"data": images.reshape(2, -1), b"labels": [int(label) for label in labels]}
    content = pickle.dumps(batch, protocol=2)

    names = {arg for op, arg, _ in pickletools.genops(content) if op.name == "GLOBAL"}

    assert names == {
        "_codecs encode",
        "numpy._core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
    }
    unpickled = load_restricted_pickle(content, Path("batch"), hint="")
    assert isinstance(unpickled, dict)
    assert np.array_equal(unpickled[b"data"], images.reshape(2, -1))


@pytest.mark.parametrize(
    "relative",
    ["cifar10/cifar-10-python/cifar-10-batches-py", "downloads/cifar-10-batches-py"],
)
def test_python_layout_one_folder_deeper(tmp_path: Path, relative: str) -> None:
    batches = fake_cifar_batches(20)
    write_cifar_python(tmp_path / relative, batches)

    assert_matches_batches(load_fake(tmp_path), batches, val_size=10)


def test_hidden_scratch_folder_ignored(tmp_path: Path) -> None:
    batches = fake_cifar_batches(20)
    write_cifar_binary(tmp_path / ".extract-abc123" / BINARY.folder, fake_cifar_batches(3))
    # Sorted, ".extract-abc123" comes before "download", so only the skip avoids it.
    write_cifar_binary(tmp_path / "download" / BINARY.folder, batches)

    splits = load_fake(tmp_path)

    assert_matches_batches(splits, batches, val_size=10)
    assert all("/.extract-" not in path for path in splits.source)


def test_data_dir_is_layout_folder(tmp_path: Path) -> None:
    batches = fake_cifar_batches(20)
    folder = write_cifar_binary(tmp_path / BINARY.folder, batches)

    assert_matches_batches(load_fake(folder), batches, val_size=10)


def test_binary_preferred_over_python(tmp_path: Path) -> None:
    binary_batches = fake_cifar_batches(20, seed=1)
    write_cifar_python(tmp_path / PYTHON.folder, fake_cifar_batches(20, seed=2))
    write_cifar_binary(tmp_path / "cifar10" / "extracted" / BINARY.folder, binary_batches)

    assert_matches_batches(load_fake(tmp_path), binary_batches, val_size=10)


def test_split_cifar10_default_val_size() -> None:
    images = np.zeros((VAL_SIZE + 7, 3, 32, 32), np.uint8)
    labels = np.zeros(VAL_SIZE + 7, np.uint8)

    splits = split_cifar10(
        (images, labels), (images[:3], labels[:3]), classes=CIFAR_CLASSES, source={}
    )

    assert len(splits.train_images) == 7
    assert len(splits.val_images) == 5_000


@pytest.mark.parametrize("val_size", [0, 100])
def test_split_cifar10_rejects_bad_val_size(val_size: int) -> None:
    images = np.zeros((100, 3, 32, 32), np.uint8)
    labels = np.zeros(100, np.uint8)

    with pytest.raises(ValueError, match="val_size must be between 1 and 99"):
        split_cifar10(
            (images, labels), (images, labels), classes=CIFAR_CLASSES, source={}, val_size=val_size
        )


# --- Archives ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [BINARY, PYTHON], ids=["binary", "python"])
def test_load_from_archive(tmp_path: Path, layout: Layout) -> None:
    batches = fake_cifar_batches(20)
    write_layout = write_cifar_binary if layout.binary else write_cifar_python
    folder = write_layout(tmp_path / "staging" / layout.folder, batches)
    data_dir = tmp_path / "data"
    write_tar_gz(data_dir / layout.archive, folder)

    assert_matches_batches(load_fake(data_dir), batches, val_size=10)
    assert (data_dir / folder.name).is_dir()
    assert [path.name for path in data_dir.iterdir() if path.name.startswith(".")] == []


def test_archive_extracted_only_once(tmp_path: Path) -> None:
    batches = fake_cifar_batches(20)
    folder = write_cifar_binary(tmp_path / "staging" / BINARY.folder, batches)
    archive = write_tar_gz(tmp_path / "data" / "cifar10" / BINARY.archive, folder)
    load_cifar10(tmp_path / "data", download=False, verify=False, val_size=10)

    archive.write_bytes(b"no longer a valid archive")

    assert_matches_batches(load_fake(tmp_path / "data"), batches, val_size=10)


def _tar_with_member(archive: Path, name: str, *, symlink_to: str | None = None) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo(name)
        if symlink_to is None:
            payload = b"escaped"
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        else:
            member.type = tarfile.SYMTYPE
            member.linkname = symlink_to
            tar.addfile(member)
    return archive


@pytest.mark.parametrize(
    "name, symlink_to",
    [
        ("../escaped.bin", None),
        ("cifar-10-batches-bin/../../escaped.bin", None),
        ("cifar-10-batches-bin/link", "../../escaped.bin"),
    ],
    ids=["parent", "nested-parent", "symlink"],
)
def test_archive_path_traversal_rejected(tmp_path: Path, name: str, symlink_to: str | None) -> None:
    data_dir = tmp_path / "data"
    archive = _tar_with_member(data_dir / BINARY.archive, name, symlink_to=symlink_to)

    with pytest.raises(DataError) as error:
        load_cifar10(data_dir, download=False, verify=False)

    assert_data_error(error, archive, "extraction failed")
    assert not (tmp_path / "escaped.bin").exists()
    assert not (data_dir / "escaped.bin").exists()
    assert not (data_dir / BINARY.folder).exists()
    assert [path.name for path in data_dir.iterdir()] == [BINARY.archive]


def test_archive_absolute_member_stays_inside(tmp_path: Path) -> None:
    # The "data" filter strips the leading slash, so the member lands in the scratch folder.
    outside = tmp_path / "escaped.bin"
    data_dir = tmp_path / "data"
    archive = _tar_with_member(data_dir / BINARY.archive, str(outside))

    with pytest.raises(DataError) as error:
        load_cifar10(data_dir, download=False, verify=False)

    assert_data_error(error, archive, "the archive has no folder cifar-10-batches-bin/")
    assert not outside.exists()
    assert [path.name for path in data_dir.iterdir()] == [BINARY.archive]


def test_archive_corrupt(tmp_path: Path) -> None:
    folder = write_cifar_binary(tmp_path / "staging" / BINARY.folder, fake_cifar_batches(20))
    archive = write_tar_gz(tmp_path / "data" / BINARY.archive, folder)
    archive.write_bytes(archive.read_bytes()[:500])

    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path / "data", download=False, verify=False)

    assert_data_error(error, archive, "extraction failed")
    assert not (tmp_path / "data" / BINARY.folder).exists()


def test_archive_without_layout_folder(tmp_path: Path) -> None:
    archive = _tar_with_member(tmp_path / BINARY.archive, "readme.txt")

    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=False, verify=False)

    assert_data_error(error, archive, "the archive has no folder cifar-10-batches-bin/")


# --- Restricted unpickler ------------------------------------------------------------


class RunsCode:
    """Pickles to a call of `function(argument)`, which plain pickle.load would run."""

    def __init__(self, function: Callable[[str], object], argument: str) -> None:
        self.function = function
        self.argument = argument

    def __reduce__(self) -> tuple[Callable[[str], object], tuple[str]]:
        return (self.function, (self.argument,))


def _marker_payload(marker: Path) -> RunsCode:
    return RunsCode(exec, f"open({str(marker)!r}, 'w').close()")


def test_code_payload_works_with_plain_pickle(tmp_path: Path) -> None:
    # Proves that the payload of the next tests is live: plain pickle runs it.
    marker = tmp_path / "marker"

    pickle.loads(pickle.dumps(_marker_payload(marker), protocol=2))

    assert marker.exists()


@pytest.mark.parametrize("nested", [False, True], ids=["bare", "inside-batch"])
def test_code_payload_rejected(tmp_path: Path, nested: bool) -> None:
    marker = tmp_path / "marker"
    payload: object = _marker_payload(marker)
    if nested:
        images, labels = fake_cifar_batches(2)[0]
        payload = {
            b"data": images.reshape(2, -1),
            b"labels": [int(label) for label in labels],
            b"batch_label": payload,
        }
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(payload, protocol=2))

    with pytest.raises(DataError) as error:
        read_python_batch(path, verify=False)

    # Protocol 2 writes Python 2 module names, so builtins.exec appears as __builtin__.exec.
    assert_data_error(error, path, "rejected: the pickle asks for '__builtin__.exec'")
    assert "the file is not an official CIFAR-10 batch" in str(error.value)
    assert not marker.exists()


def test_os_system_payload_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(RunsCode(os.system, f"touch '{marker}'"), protocol=2))

    with pytest.raises(DataError) as error:
        read_python_batch(path, verify=False)

    assert_data_error(error, path, f"rejected: the pickle asks for '{os.system.__module__}.system'")
    assert not marker.exists()


def test_codecs_encode_only_latin1(tmp_path: Path) -> None:
    # _codecs.encode is admitted for Python 3's protocol-2 bytes, but only with latin-1.
    # _codecs.encode("x", "rot13_foo"): GLOBAL, two BINUNICODE strings, TUPLE2, REDUCE.
    content = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x09\x00\x00\x00rot13_foo\x86R."
    path = tmp_path / "data_batch_1"
    path.write_bytes(content)

    with pytest.raises(DataError) as error:
        read_python_batch(path, verify=False)

    assert_data_error(error, path, "invalid pickle")
    assert "rot13_foo" in str(error.value)


# --- Malformed python-layout batches -------------------------------------------------


def _valid_batch() -> dict[bytes, object]:
    images, labels = fake_cifar_batches(4)[0]
    return {b"data": images.reshape(4, -1), b"labels": [int(label) for label in labels]}


def _batch_with(**changes: object) -> bytes:
    batch = _valid_batch()
    for key, value in changes.items():
        if value is None:
            del batch[key.encode()]
        else:
            batch[key.encode()] = value
    return pickle.dumps(batch, protocol=2)


# Each case: content of data_batch_1 in the python layout, key phrase of the message.
MALFORMED_PYTHON: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty file": (lambda: b"", "empty file"),
    "not a pickle": (lambda: b"this is not a pickle", "invalid pickle"),
    "truncated pickle": (lambda: pickle.dumps(_valid_batch(), protocol=2)[:-50], "invalid pickle"),
    "not a dict": (
        lambda: pickle.dumps([1, 2, 3], protocol=2),
        "the pickle contains a list of 3 items, expected the dict of a CIFAR-10",
    ),
    "missing data": (lambda: _batch_with(data=None), "'data' is missing"),
    "float data": (
        lambda: _batch_with(data=np.zeros((4, 3072), np.float32)),
        "'data' is a float32 array of shape [4, 3072], expected a uint8 array",
    ),
    "short rows": (
        lambda: _batch_with(data=np.zeros((4, 3000), np.uint8)),
        "'data' is a uint8 array of shape [4, 3000], expected a uint8 array of shape [N, 3072]",
    ),
    "no images": (
        lambda: _batch_with(data=np.zeros((0, 3072), np.uint8), labels=[]),
        "the batch contains no images",
    ),
    "missing labels": (lambda: _batch_with(labels=None), "'labels' is missing"),
    "text labels": (
        lambda: _batch_with(labels=["cat", "dog", "cat", "dog"]),
        "'labels' is a list of 4 items, expected a list of int",
    ),
    "label count mismatch": (lambda: _batch_with(labels=[1, 2, 3]), "3 labels for 4 images"),
    "label too large": (
        lambda: _batch_with(labels=[1, 10, 2, 3]),
        "label 10 of image 1 is outside 0-9",
    ),
    "negative label": (lambda: _batch_with(labels=[1, 2, -1, 3]), "label -1 of image 2"),
}


@pytest.mark.parametrize("build, phrase", MALFORMED_PYTHON.values(), ids=MALFORMED_PYTHON.keys())
def test_python_batch_rejects_malformed(
    tmp_path: Path, build: Callable[[], bytes], phrase: str
) -> None:
    path = tmp_path / PYTHON.folder / "data_batch_1"
    path.parent.mkdir()
    path.write_bytes(build())

    with pytest.raises(DataError) as error:
        read_python_batch(path, verify=False)

    assert_data_error(error, path, phrase)


def test_python_batch_official_count_required(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(_batch_with())

    with pytest.raises(DataError) as error:
        read_python_batch(path)

    assert_data_error(error, path, "4 images, expected 10,000 in an official CIFAR-10 batch")


# --- Malformed binary-layout batches -------------------------------------------------


def _records(count: int, label: int = 1) -> bytes:
    return (bytes([label]) + bytes(3072)) * count


MALFORMED_BINARY: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty file": (lambda: b"", "empty file"),
    "3072-byte records": (
        lambda: bytes(3072) * 3,
        "record size wrong: 9,216 bytes is not a multiple of the 3,073-byte CIFAR-10 record",
    ),
    "trailing byte": (lambda: _records(2) + b"\x00", "record size wrong: 6,147 bytes"),
    "label out of range": (
        lambda: _records(2) + _records(1, label=200),
        "label 200 of image 2 is outside 0-9",
    ),
}


@pytest.mark.parametrize("build, phrase", MALFORMED_BINARY.values(), ids=MALFORMED_BINARY.keys())
def test_binary_batch_rejects_malformed(
    tmp_path: Path, build: Callable[[], bytes], phrase: str
) -> None:
    path = tmp_path / BINARY.folder / "data_batch_1.bin"
    path.parent.mkdir()
    path.write_bytes(build())

    with pytest.raises(DataError) as error:
        read_binary_batch(path, verify=False)

    assert_data_error(error, path, phrase)
    assert f"delete {path.parent} and rerun" in str(error.value)


def test_binary_batch_official_count_required(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(_records(20))

    with pytest.raises(DataError) as error:
        read_binary_batch(path)

    assert_data_error(error, path, "20 images, expected 10,000 in an official CIFAR-10 batch")


def test_binary_batch_checksum_mismatch(tmp_path: Path) -> None:
    content = _records(10_000)
    path = tmp_path / "test_batch.bin"
    path.write_bytes(content)

    with pytest.raises(DataError) as error:
        read_binary_batch(path)

    assert_data_error(error, path, "checksum mismatch")
    assert hashlib.sha256(content).hexdigest() in str(error.value)
    assert "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b" in str(error.value)


def test_binary_batch_unknown_name_with_verify(tmp_path: Path) -> None:
    path = tmp_path / "extra_batch.bin"
    path.write_bytes(_records(10_000))

    with pytest.raises(DataError) as error:
        read_binary_batch(path)

    assert_data_error(error, path, "not an official CIFAR-10 file name")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file with mode 000")
def test_binary_batch_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(_records(2))
    path.chmod(0)

    with pytest.raises(DataError) as error:
        read_binary_batch(path, verify=False)

    assert_data_error(error, path, "cannot be read (Permission denied)")


def test_binary_batch_folder_in_place_of_file(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1.bin"
    path.mkdir()

    with pytest.raises(DataError) as error:
        read_binary_batch(path, verify=False)

    assert_data_error(error, path, "cannot be read (Is a directory)")


# --- Class names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "\n".join(CIFAR_CLASSES[:9]),
        "\n".join((*CIFAR_CLASSES[:9], "airplane")),
        "\n".join((*CIFAR_CLASSES, "extra")),
    ],
    ids=["nine", "duplicate", "eleven"],
)
def test_class_names_text_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "batches.meta.txt"
    path.write_text(text)

    with pytest.raises(DataError) as error:
        read_class_names(path, BINARY)

    assert_data_error(error, path, "expected 10 distinct non-empty class names")


def test_class_names_not_ascii(tmp_path: Path) -> None:
    path = tmp_path / "batches.meta.txt"
    path.write_bytes(b"\xff\xfe" + b"\n".join(name.encode() for name in CIFAR_CLASSES))

    with pytest.raises(DataError) as error:
        read_class_names(path, BINARY)

    assert_data_error(error, path, "not an ASCII text file")


def test_class_names_pickle_without_names(tmp_path: Path) -> None:
    path = tmp_path / "batches.meta"
    path.write_bytes(pickle.dumps({b"num_vis": 3072}, protocol=2))

    with pytest.raises(DataError) as error:
        read_class_names(path, PYTHON)

    assert_data_error(error, path, "'label_names' is missing, expected a list")


def test_class_names_text_ignores_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "batches.meta.txt"
    path.write_text("\n".join(CIFAR_CLASSES) + "\n\n\n")

    names, digest = read_class_names(path, BINARY)

    assert names == CIFAR_CLASSES
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


# --- Missing files -------------------------------------------------------------------


def test_load_cifar10_incomplete_folder(tmp_path: Path) -> None:
    folder = write_cifar_binary(tmp_path / BINARY.folder, fake_cifar_batches(20))
    (folder / "data_batch_3.bin").unlink()
    (folder / "batches.meta.txt").unlink()

    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=False, verify=False)

    assert_data_error(error, folder, "missing data_batch_3.bin, batches.meta.txt")


def test_load_cifar10_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=False)

    message = str(error.value)
    assert "CIFAR-10 not found: looked for cifar-10-batches-bin/, cifar-10-batches-py/" in message
    assert "cifar-10-binary.tar.gz or cifar-10-python.tar.gz" in message
    assert f"in {tmp_path / 'cifar10'} and {tmp_path}" in message
    assert "pass --data-dir" in message


def test_load_cifar10_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "absent"

    with pytest.raises(DataError) as error:
        load_cifar10(folder, download=False)

    assert_data_error(error, folder, "data folder not found and downloading is off")


def test_load_dataset_cifar10_needs_official_counts(tmp_path: Path) -> None:
    folder = write_cifar_binary(tmp_path / "cifar10" / BINARY.folder, fake_cifar_batches(20))

    with pytest.raises(DataError) as error:
        load_dataset("cifar10", tmp_path, download=False)

    assert_data_error(error, folder, "20 images, expected 10,000")


# --- Downloads, with pooch.retrieve replaced -----------------------------------------


def test_download_cifar10_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = fake_cifar_batches(20)
    folder = write_cifar_binary(tmp_path / "staging" / BINARY.folder, batches)
    origin = write_tar_gz(tmp_path / "origin" / BINARY.archive, folder)
    calls: list[dict[str, object]] = []

    def fake_retrieve(
        url: str,
        known_hash: str | None = None,
        fname: str | None = None,
        path: str | os.PathLike[str] | None = None,
        progressbar: bool = False,
    ) -> str:
        calls.append({"url": url, "known_hash": known_hash, "fname": fname, "path": path})
        assert path is not None
        assert fname is not None
        target = Path(path) / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, target)
        return str(target)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    data_dir = tmp_path / "data"

    assert_matches_batches(load_fake(data_dir, download=True), batches, val_size=10)
    assert calls == [
        {
            "url": ARCHIVE_URL,
            "known_hash": ARCHIVE_HASH,
            "fname": BINARY.archive,
            "path": data_dir / "cifar10",
        }
    ]
    assert ARCHIVE_HASH == "md5:c32a1d4ab5d03f1284b67883e8d87530"
    assert (data_dir / "cifar10" / BINARY.folder / "data_batch_1.bin").is_file()


def test_download_cifar10_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(url: str, **kwargs: object) -> str:
        raise requests.ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(pooch, "retrieve", unreachable)
    data_dir = tmp_path / "data"

    with pytest.raises(DataError) as error:
        load_cifar10(data_dir, download=True)

    message = str(error.value)
    assert f"CIFAR-10 files not found in {data_dir} or its cifar10/ folder," in message
    assert f"the download of {ARCHIVE_URL} failed (could not connect)" in message
    assert "put cifar-10-batches-bin/ or cifar-10-binary.tar.gz in --data-dir" in message
    assert "or $CNNLAB_DATA, see Data in README.md" in message
    assert "cannot reach" not in message
    assert "\n" not in message


def test_download_cifar10_hash_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong_hash(url: str, **kwargs: object) -> str:
        raise ValueError("MD5 hash of downloaded file does not match the known hash")

    monkeypatch.setattr(pooch, "retrieve", wrong_hash)

    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=True)

    assert "failed (checksum mismatch)" in str(error.value)


def test_cifar_binary_bytes_layout() -> None:
    images, labels = fake_cifar_batches(3)[0]

    content = cifar_binary_bytes(images, labels)

    assert len(content) == 3 * 3073
    assert content[3073] == labels[1]
    assert content[3074 : 3074 + 1024] == images[1, 0].tobytes()
