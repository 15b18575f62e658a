"""Tests of the MNIST reader, the dataset registry and the data folder, on tiny fake files."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pooch
import pytest
import requests
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.data import DATASETS, load_dataset, resolve_data_dir
from cnnlab.data._download import describe_download_error
from cnnlab.data.mnist import (
    MIRRORS,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    VAL_SIZE,
    load_mnist,
    parse_idx,
    read_idx,
    split_mnist,
)
from cnnlab.errors import ConfigError, DataError
from datafakes import (
    MNIST_STEMS,
    fake_mnist_arrays,
    idx_bytes,
    mnist_file_name,
    write_fake_mnist,
    write_file,
)

TRAIN_IMAGES_GZ = "train-images-idx3-ubyte.gz"


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


# --- Reading and splitting -------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
@pytest.mark.parametrize("dotted", [False, True], ids=["dashed", "dotted"])
def test_load_mnist_fake_files(tmp_path: Path, gz: bool, dotted: bool) -> None:
    arrays = write_fake_mnist(tmp_path / "mnist", gz=gz, dotted=dotted)

    splits = load_mnist(tmp_path, download=False, verify=False, val_size=10)

    train_images, train_labels, test_images, test_labels = arrays.values()
    assert splits.name == "mnist"
    assert splits.classes == tuple("0123456789")
    assert splits.train_images.shape == (50, 1, 28, 28)
    assert splits.val_images.shape == (10, 1, 28, 28)
    assert splits.test_images.shape == (20, 1, 28, 28)
    assert splits.train_labels.shape == (50,)
    assert splits.val_labels.shape == (10,)
    assert splits.test_labels.shape == (20,)
    for images in (splits.train_images, splits.val_images, splits.test_images):
        assert images.dtype == torch.uint8
        assert images.is_contiguous()
    for labels in (splits.train_labels, splits.val_labels, splits.test_labels):
        assert labels.dtype == torch.int64
        assert labels.is_contiguous()
    # Validation is the first val_size images of the training file.
    assert np.array_equal(splits.val_images.numpy()[:, 0], train_images[:10])
    assert np.array_equal(splits.val_labels.numpy(), train_labels[:10])
    assert np.array_equal(splits.train_images.numpy()[:, 0], train_images[10:])
    assert np.array_equal(splits.train_labels.numpy(), train_labels[10:])
    assert np.array_equal(splits.test_images.numpy()[:, 0], test_images)
    assert np.array_equal(splits.test_labels.numpy(), test_labels)


def test_load_mnist_source_hashes_uncompressed(tmp_path: Path) -> None:
    arrays = write_fake_mnist(tmp_path / "mnist", gz=True)

    splits = load_mnist(tmp_path, download=False, verify=False, val_size=10)

    expected = {
        str(tmp_path / "mnist" / f"{stem}.gz"): hashlib.sha256(idx_bytes(items)).hexdigest()
        for stem, items in arrays.items()
    }
    assert splits.source == expected


def test_load_mnist_split_rule_states_counts(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path / "mnist")

    splits = load_mnist(tmp_path, download=False, verify=False, val_size=10)

    assert "first 10 images" in splits.split_rule
    assert "remaining 50" in splits.split_rule
    assert "20 official test images" in splits.split_rule


def test_load_mnist_files_in_data_dir_itself(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, gz=False)

    splits = load_mnist(tmp_path, download=False, verify=False, val_size=10)

    assert splits.train_images.shape == (50, 1, 28, 28)
    assert all(Path(path).parent == tmp_path for path in splits.source)


def test_load_mnist_prefers_mnist_subfolder(tmp_path: Path) -> None:
    in_subfolder = write_fake_mnist(tmp_path / "mnist", seed=1)
    write_fake_mnist(tmp_path, seed=2)

    splits = load_mnist(tmp_path, download=False, verify=False, val_size=10)

    assert np.array_equal(splits.test_labels.numpy(), in_subfolder[MNIST_STEMS[3]])
    assert all(Path(path).parent == tmp_path / "mnist" for path in splits.source)


def test_split_mnist_default_val_size() -> None:
    arrays = fake_mnist_arrays(VAL_SIZE + 3, 2)
    train = (arrays[MNIST_STEMS[0]], arrays[MNIST_STEMS[1]])
    test = (arrays[MNIST_STEMS[2]], arrays[MNIST_STEMS[3]])

    splits = split_mnist(train, test, source={})

    assert len(splits.val_images) == 5_000
    assert len(splits.train_images) == 3


@pytest.mark.parametrize("val_size", [0, -1, 60, 61])
def test_split_mnist_rejects_bad_val_size(val_size: int) -> None:
    arrays = fake_mnist_arrays(60, 20)
    train = (arrays[MNIST_STEMS[0]], arrays[MNIST_STEMS[1]])
    test = (arrays[MNIST_STEMS[2]], arrays[MNIST_STEMS[3]])

    with pytest.raises(ValueError, match="val_size must be between 1 and 59"):
        split_mnist(train, test, source={}, val_size=val_size)


def test_read_idx_official_count_required(tmp_path: Path) -> None:
    path = write_file(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(60, np.uint8)))

    with pytest.raises(DataError) as error:
        read_idx(path, TRAIN_LABELS)

    assert_data_error(error, path, "60 labels, expected 60,000 in the official file")


def test_read_idx_checksum_mismatch(tmp_path: Path) -> None:
    # 10,000 zero labels pass the count check of the official test labels file.
    content = idx_bytes(np.zeros(10_000, np.uint8))
    path = write_file(tmp_path / "t10k-labels-idx1-ubyte.gz", content)

    with pytest.raises(DataError) as error:
        read_idx(path, TEST_LABELS)

    assert_data_error(error, path, "checksum mismatch")
    assert hashlib.sha256(content).hexdigest() in str(error.value)
    assert TEST_LABELS.sha256 in str(error.value)


def test_read_idx_without_verify_returns_digest(tmp_path: Path) -> None:
    content = idx_bytes(np.arange(10, dtype=np.uint8))
    path = write_file(tmp_path / "t10k-labels-idx1-ubyte.gz", content)

    labels, digest = read_idx(path, TEST_LABELS, verify=False)

    assert labels.tolist() == list(range(10))
    assert digest == hashlib.sha256(content).hexdigest()


# --- Malformed files -----------------------------------------------------------------


def _images(count: int = 3, size: int = 28) -> np.ndarray:
    return np.zeros((count, size, size), np.uint8)


def _with_magic(magic: int) -> bytes:
    return idx_bytes(_images(), magic=magic)


# Each case: file name, content, key phrase of the message.
MALFORMED: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "empty file": (TRAIN_IMAGES_GZ, lambda: b"", "empty file"),
    "shorter than magic": (TRAIN_IMAGES_GZ, lambda: b"\x00\x00", "truncated: the IDX header"),
    "header cut short": (TRAIN_IMAGES_GZ, lambda: idx_bytes(_images())[:10], "truncated"),
    "truncated data": (
        TRAIN_IMAGES_GZ,
        lambda: idx_bytes(_images())[:1_000],
        "truncated: header promises 2,368 bytes, file has 1,000",
    ),
    "trailing bytes": (
        TRAIN_IMAGES_GZ,
        lambda: idx_bytes(_images()) + b"extra",
        "5 trailing bytes: header promises 2,368 bytes, file has 2,373",
    ),
    "wrong magic": (TRAIN_IMAGES_GZ, lambda: _with_magic(0x12345678), "wrong magic number"),
    "float data type": (TRAIN_IMAGES_GZ, lambda: _with_magic(0x0D03), "wrong magic number"),
    "labels magic in images file": (
        TRAIN_IMAGES_GZ,
        lambda: idx_bytes(np.zeros(3, np.uint8)),
        "wrong number of dimensions: the header declares 1, expected 3",
    ),
    "wrong image size": (
        TRAIN_IMAGES_GZ,
        lambda: idx_bytes(_images(size=32)),
        "wrong image dimensions 32x32, expected 28x28",
    ),
    "zero images": (TRAIN_IMAGES_GZ, lambda: idx_bytes(_images(count=0)), "declares 0 images"),
    "label out of range": (
        "train-labels-idx1-ubyte",
        lambda: idx_bytes(np.array([1, 2, 12, 3, 10], np.uint8)),
        "label 12 at index 2 is outside 0-9 (2 such labels)",
    ),
}


@pytest.mark.parametrize("name, build, phrase", MALFORMED.values(), ids=MALFORMED.keys())
def test_read_idx_rejects_malformed(
    tmp_path: Path, name: str, build: Callable[[], bytes], phrase: str
) -> None:
    path = write_file(tmp_path / name, build())
    spec = TRAIN_LABELS if "labels" in name else TRAIN_IMAGES

    with pytest.raises(DataError) as error:
        read_idx(path, spec, verify=False)

    assert_data_error(error, path, phrase)


def _corrupt_gzip(tmp_path: Path) -> Path:
    path = write_file(tmp_path / TRAIN_IMAGES_GZ, idx_bytes(_images(50)))
    compressed = bytearray(path.read_bytes())
    compressed[len(compressed) // 2] ^= 0xFF
    compressed[-8] ^= 0xFF  # the CRC-32, in case the deflate stream still decodes
    path.write_bytes(bytes(compressed))
    return path


def _cut_gzip(tmp_path: Path) -> Path:
    path = write_file(tmp_path / TRAIN_IMAGES_GZ, idx_bytes(_images(50)))
    path.write_bytes(path.read_bytes()[:-20])
    return path


def _raw_named_gz(tmp_path: Path) -> Path:
    path = tmp_path / TRAIN_IMAGES_GZ
    path.write_bytes(idx_bytes(_images()))
    return path


@pytest.mark.parametrize("make", [_corrupt_gzip, _cut_gzip, _raw_named_gz])
def test_read_idx_rejects_bad_gzip(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)

    with pytest.raises(DataError) as error:
        read_idx(path, TRAIN_IMAGES, verify=False)

    assert_data_error(error, path, "invalid gzip file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file with mode 000")
def test_read_idx_unreadable_file(tmp_path: Path) -> None:
    path = write_file(tmp_path / TRAIN_IMAGES_GZ, idx_bytes(_images()))
    path.chmod(0)

    with pytest.raises(DataError) as error:
        read_idx(path, TRAIN_IMAGES, verify=False)

    assert_data_error(error, path, "cannot be read (Permission denied)")


def test_read_idx_folder_in_place_of_file(tmp_path: Path) -> None:
    path = tmp_path / TRAIN_IMAGES_GZ
    path.mkdir()

    with pytest.raises(DataError) as error:
        read_idx(path, TRAIN_IMAGES, verify=False)

    assert_data_error(error, path, "cannot be read (Is a directory)")


def test_load_mnist_image_label_count_mismatch(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path / "mnist")
    labels_path = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    write_file(labels_path, idx_bytes(np.zeros(59, np.uint8)))

    with pytest.raises(DataError) as error:
        load_mnist(tmp_path, download=False, verify=False, val_size=10)

    assert_data_error(error, labels_path, "59 labels for 60 images")
    assert "train-images-idx3-ubyte.gz" in str(error.value)


def test_load_mnist_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "absent"

    with pytest.raises(DataError) as error:
        load_mnist(folder, download=False)

    assert_data_error(error, folder, "data folder not found and downloading is off")
    assert "--data-dir" in str(error.value)


def test_load_mnist_data_dir_is_file(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("not a folder")

    with pytest.raises(DataError) as error:
        load_mnist(path, download=True)

    assert_data_error(error, path, "data folder is a file, not a folder")


def test_load_mnist_missing_files_no_download(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()

    with pytest.raises(DataError) as error:
        load_mnist(tmp_path, download=False)

    message = str(error.value)
    assert "MNIST files not found: t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)" in (
        message
    )
    assert f"looked in {tmp_path / 'mnist'} and {tmp_path}" in message
    assert "pass --data-dir" in message
    assert "train-images" not in message


# --- Downloads, with pooch.retrieve replaced -----------------------------------------


class FakeRetrieve:
    """Stand-in for pooch.retrieve that copies files from a local folder.

    URLs whose prefix is in failing_mirrors raise requests.ConnectionError, the error
    that requests raises when a host cannot be reached.
    """

    def __init__(self, origin: Path, failing_mirrors: tuple[str, ...] = ()) -> None:
        self.origin = origin
        self.failing_mirrors = failing_mirrors
        self.calls: list[dict[str, object]] = []

    def __call__(
        self,
        url: str,
        known_hash: str | None = None,
        fname: str | None = None,
        path: str | os.PathLike[str] | None = None,
        progressbar: bool = False,
    ) -> str:
        self.calls.append({"url": url, "known_hash": known_hash, "fname": fname, "path": path})
        if url.startswith(self.failing_mirrors):
            raise requests.ConnectionError(f"cannot reach {url}")
        assert fname is not None
        assert path is not None
        target = Path(path) / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.origin / fname, target)
        return str(target)


def test_download_mnist_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_fake_mnist(tmp_path / "origin")
    retrieve = FakeRetrieve(tmp_path / "origin")
    monkeypatch.setattr(pooch, "retrieve", retrieve)
    data_dir = tmp_path / "data"

    splits = load_mnist(data_dir, download=True, verify=False, val_size=10)

    assert [call["url"] for call in retrieve.calls] == [
        f"{MIRRORS[0]}{stem}.gz" for stem in MNIST_STEMS
    ]
    assert all(call["known_hash"] is None for call in retrieve.calls)
    assert all(Path(str(call["path"])) == data_dir / "mnist" for call in retrieve.calls)
    assert np.array_equal(splits.test_labels.numpy(), arrays[MNIST_STEMS[3]])


def test_download_mnist_only_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_mnist(tmp_path / "origin")
    write_fake_mnist(tmp_path / "data" / "mnist")
    (tmp_path / "data" / "mnist" / TRAIN_IMAGES_GZ).unlink()
    retrieve = FakeRetrieve(tmp_path / "origin")
    monkeypatch.setattr(pooch, "retrieve", retrieve)

    load_mnist(tmp_path / "data", download=True, verify=False, val_size=10)

    assert [call["fname"] for call in retrieve.calls] == [TRAIN_IMAGES_GZ]


def test_download_mnist_second_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_mnist(tmp_path / "origin")
    write_fake_mnist(tmp_path / "data" / "mnist")
    (tmp_path / "data" / "mnist" / TRAIN_IMAGES_GZ).unlink()
    retrieve = FakeRetrieve(tmp_path / "origin", failing_mirrors=(MIRRORS[0],))
    monkeypatch.setattr(pooch, "retrieve", retrieve)

    load_mnist(tmp_path / "data", download=True, verify=False, val_size=10)

    assert [call["url"] for call in retrieve.calls] == [
        MIRRORS[0] + TRAIN_IMAGES_GZ,
        MIRRORS[1] + TRAIN_IMAGES_GZ,
    ]


def test_download_mnist_all_mirrors_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    retrieve = FakeRetrieve(tmp_path / "origin", failing_mirrors=MIRRORS)
    monkeypatch.setattr(pooch, "retrieve", retrieve)
    data_dir = tmp_path / "data"

    with pytest.raises(DataError) as error:
        load_mnist(data_dir, download=True)

    message = str(error.value)
    assert "MNIST files train-images-idx3-ubyte(.gz) and 3 more not found" in message
    assert f"in {data_dir} or its mnist/ folder," in message
    assert "the download failed (could not connect)" in message
    assert "put the files in --data-dir or $CNNLAB_DATA, see Data in README.md" in message
    assert "cannot reach" not in message
    assert "\n" not in message
    assert len(message) - len(str(data_dir)) < 200
    assert [call["url"] for call in retrieve.calls] == [
        MIRRORS[0] + TRAIN_IMAGES_GZ,
        MIRRORS[1] + TRAIN_IMAGES_GZ,
    ]


def test_download_mnist_fails_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_mnist(tmp_path / "origin")
    retrieve = FakeRetrieve(tmp_path / "origin")

    def second_file_offline(url: str, **kwargs: object) -> str:
        if kwargs["fname"] != TRAIN_IMAGES_GZ:
            raise requests.ConnectionError(f"cannot reach {url}")
        return retrieve(url, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pooch, "retrieve", second_file_offline)
    data_dir = tmp_path / "data"

    with pytest.raises(DataError) as error:
        load_mnist(data_dir, download=True)

    # The first file arrived, so the message starts at the second and counts the rest.
    assert "MNIST files train-labels-idx1-ubyte(.gz) and 2 more not found" in str(error.value)
    assert (data_dir / "mnist" / TRAIN_IMAGES_GZ).is_file()


def test_download_mnist_last_file_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_mnist(tmp_path / "data" / "mnist")
    (tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setattr(pooch, "retrieve", FakeRetrieve(tmp_path / "origin", MIRRORS))

    with pytest.raises(DataError) as error:
        load_mnist(tmp_path / "data", download=True, verify=False)

    assert "MNIST file t10k-labels-idx1-ubyte(.gz) not found" in str(error.value)


def http_error(status: int, reason: str) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response.reason = reason
    return requests.HTTPError(f"{status} Client Error: {reason} for url: x", response=response)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            requests.ConnectionError("HTTPSConnectionPool(...): Max retries exceeded"),
            "could not connect",
        ),
        (requests.ConnectTimeout("HTTPSConnectionPool(...): Max retries exceeded"), "timed out"),
        (requests.ReadTimeout("HTTPSConnectionPool(...): Read timed out."), "timed out"),
        (http_error(404, "Not Found"), "HTTP 404 Not Found"),
        (requests.HTTPError("no response"), "HTTP error"),
        (requests.exceptions.ChunkedEncodingError("Connection broken"), "ChunkedEncodingError"),
        (
            ValueError("MD5 hash of downloaded file (x) does not match the known hash"),
            "checksum mismatch",
        ),
        (PermissionError(13, "Permission denied"), "Permission denied"),
        (OSError("disk\nfull"), "disk full"),
    ],
)
def test_describe_download_error(error: Exception, reason: str) -> None:
    assert describe_download_error(error) == reason


def test_download_mnist_bad_content_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake_mnist(tmp_path / "origin")
    monkeypatch.setattr(pooch, "retrieve", FakeRetrieve(tmp_path / "origin"))
    data_dir = tmp_path / "data"

    with pytest.raises(DataError) as error:
        load_mnist(data_dir, download=True)

    assert_data_error(error, data_dir / "mnist", "expected 60,000 in the official file")


# --- Registry and data folder --------------------------------------------------------


def test_datasets_names() -> None:
    assert DATASETS == ("mnist", "cifar10")


def test_load_dataset_unknown_name_suggests() -> None:
    with pytest.raises(ConfigError) as error:
        load_dataset("mnsit")

    assert str(error.value) == (
        "unknown dataset 'mnsit'; choose one of: mnist, cifar10 (did you mean 'mnist'?)"
    )


def test_load_dataset_uppercase_name_suggests() -> None:
    with pytest.raises(ConfigError, match=r"\(did you mean 'cifar10'\?\)"):
        load_dataset("CIFAR10")


def test_load_dataset_unrelated_name() -> None:
    with pytest.raises(ConfigError) as error:
        load_dataset("imagenet")

    assert str(error.value) == "unknown dataset 'imagenet'; choose one of: mnist, cifar10"


def test_load_dataset_mnist_needs_official_counts(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path / "mnist")

    with pytest.raises(DataError) as error:
        load_dataset("mnist", tmp_path, download=False)

    assert_data_error(error, tmp_path / "mnist", "expected 60,000 in the official file")


def test_resolve_data_dir_argument_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))

    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_resolve_data_dir_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))

    assert resolve_data_dir(None) == tmp_path / "env"


@pytest.mark.parametrize("environment", [None, ""])
def test_resolve_data_dir_default_cache(
    monkeypatch: pytest.MonkeyPatch, environment: str | None
) -> None:
    if environment is None:
        monkeypatch.delenv("CNNLAB_DATA", raising=False)
    else:
        monkeypatch.setenv("CNNLAB_DATA", environment)

    assert resolve_data_dir(None) == Path(pooch.os_cache("cnnlab")).absolute()


def test_resolve_data_dir_absolute_and_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    assert resolve_data_dir("~/data") == tmp_path / "data"
    assert resolve_data_dir("relative") == tmp_path / "relative"


# --- Property-based tests of the IDX parser ------------------------------------------


@st.composite
def idx_contents(draw: st.DrawFn) -> tuple[bytes, int, bool]:
    """Return a small IDX file, possibly with one random defect, the ndim to parse it with,
    and whether it is left intact and valid.

    Starting from a valid file makes both outcomes, items and DataError, common.
    """
    ndim = draw(st.sampled_from([1, 3]))
    count = draw(st.integers(1, 5))
    shape = (count, 28, 28) if ndim == 3 else (count,)
    fill = draw(st.sampled_from([0, 5, 9, 10, 255]))  # 10 and 255 are invalid labels
    content = bytearray(idx_bytes(np.full(shape, fill, np.uint8)))
    header_size = 4 + 4 * ndim

    defect = draw(st.sampled_from(["none", "header byte", "dimension", "truncate", "append"]))
    if defect == "header byte":
        content[draw(st.integers(0, header_size - 1))] = draw(st.integers(0, 255))
    elif defect == "dimension":
        offset = 4 + 4 * draw(st.integers(0, ndim - 1))
        value = draw(st.sampled_from([0, 1, 6, 27, 29, 2**31, 2**32 - 1]))
        content[offset : offset + 4] = struct.pack(">I", value)
    elif defect == "truncate":
        del content[draw(st.integers(0, len(content) - 1)) :]
    elif defect == "append":
        content += draw(st.binary(min_size=1, max_size=8))

    intact = defect == "none" and (ndim == 3 or fill <= 9)
    return bytes(content), ndim, intact


@settings(max_examples=300, deadline=None)
@given(idx_contents())
def test_parse_idx_shape_or_data_error(case: tuple[bytes, int, bool]) -> None:
    content, ndim, intact = case
    path = Path("fuzz-idx-ubyte")

    try:
        items = parse_idx(content, path, ndim=ndim)
    except DataError as error:
        assert not intact, f"a valid file was rejected: {error}"
        assert str(path) in str(error)
        return

    header_size = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    assert items.dtype == np.uint8
    assert items.shape == shape
    assert content[:4] == struct.pack(">I", 0x0800 + ndim)
    assert len(content) == header_size + items.size
    if ndim == 3:
        assert items.shape[1:] == (28, 28)
    else:
        assert items.max() <= 9


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([1, 3]))
def test_parse_idx_random_bytes(content: bytes, ndim: int) -> None:
    path = Path("random-idx-ubyte")
    try:
        items = parse_idx(content, path, ndim=ndim)
    except DataError as error:
        assert str(path) in str(error)
        return
    assert items.ndim == ndim


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 9), min_size=1, max_size=50),
    st.integers(1, 4),
)
def test_parse_idx_valid_files_round_trip(labels: list[int], num_images: int) -> None:
    label_array = np.array(labels, np.uint8)
    pixels = np.arange(num_images * 28 * 28, dtype=np.int64).astype(np.uint8)
    image_array = pixels.reshape(num_images, 28, 28)

    parsed_labels = parse_idx(idx_bytes(label_array), Path("labels"), ndim=1)
    parsed_images = parse_idx(idx_bytes(image_array), Path("images"), ndim=3)

    assert np.array_equal(parsed_labels, label_array)
    assert np.array_equal(parsed_images, image_array)


def test_gzip_and_raw_give_same_digest(tmp_path: Path) -> None:
    content = idx_bytes(np.arange(10, dtype=np.uint8))
    raw = tmp_path / "raw" / "t10k-labels-idx1-ubyte"
    compressed = tmp_path / "gz" / "t10k-labels-idx1-ubyte.gz"
    write_file(raw, content)
    write_file(compressed, content)

    assert gzip.decompress(compressed.read_bytes()) == content
    assert (
        read_idx(raw, TEST_LABELS, verify=False)[1]
        == read_idx(compressed, TEST_LABELS, verify=False)[1]
    )


def test_mnist_file_names_accepted() -> None:
    assert mnist_file_name(MNIST_STEMS[0], gz=False, dotted=True) == "train-images.idx3-ubyte"
    assert TRAIN_IMAGES.names() == (
        "train-images-idx3-ubyte",
        "train-images-idx3-ubyte.gz",
        "train-images.idx3-ubyte",
        "train-images.idx3-ubyte.gz",
    )
