"""Read MNIST from the four original IDX files, verify them and split off validation images.

IDX is the format of the original MNIST files: a 4-byte magic number (two zero bytes,
a data-type code, the number of dimensions), one big-endian uint32 per dimension, then
the items in row-major order.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data._download import DownloadError, download_file
from cnnlab.data._files import (
    REDOWNLOAD_HINT,
    check_data_dir,
    read_bytes,
    sha256_hex,
    verify_sha256,
)
from cnnlab.data._splits import DatasetSplits, check_val_size, images_to_tensor, labels_to_tensor
from cnnlab.errors import DataError

CLASSES = tuple(str(digit) for digit in range(10))
IMAGE_SIZE = 28
VAL_SIZE = 5_000

# Mirrors of the original files, tried in order. A mirror may recompress the .gz files,
# so only their uncompressed content is verified.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

IDX_UNSIGNED_BYTE = 0x08
IDX_HEADER_MAGIC_BYTES = 4


@dataclass(frozen=True)
class IdxFile:
    """One of the four official MNIST files."""

    stem: str  # file name without .gz, e.g. "train-images-idx3-ubyte"
    ndim: int  # 3 for images (count, rows, columns), 1 for labels
    count: int  # number of items in the official file
    sha256: str  # SHA-256 of the uncompressed official file

    @property
    def magic(self) -> int:
        return (IDX_UNSIGNED_BYTE << 8) | self.ndim  # 2051 for images, 2049 for labels

    @property
    def kind(self) -> str:
        return "image" if self.ndim == 3 else "label"

    def names(self) -> tuple[str, ...]:
        """Return the accepted file names in order of preference, raw before .gz.

        Some unpackers write a dot in place of the dash before "idx"
        (train-images.idx3-ubyte), so those names are accepted too.
        """
        dotted = self.stem.replace("-idx", ".idx")
        return (self.stem, f"{self.stem}.gz", dotted, f"{dotted}.gz")


TRAIN_IMAGES = IdxFile(
    "train-images-idx3-ubyte",
    3,
    60_000,
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
)
TRAIN_LABELS = IdxFile(
    "train-labels-idx1-ubyte",
    1,
    60_000,
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
)
TEST_IMAGES = IdxFile(
    "t10k-images-idx3-ubyte",
    3,
    10_000,
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
)
TEST_LABELS = IdxFile(
    "t10k-labels-idx1-ubyte",
    1,
    10_000,
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
)
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def parse_idx(content: bytes, path: Path, *, ndim: int) -> np.ndarray:
    """Validate the uncompressed content of an MNIST IDX file and return its items.

    Returns a read-only uint8 array of shape [N, 28, 28] for ndim=3 or [N] for ndim=1.
    Raises DataError, naming path, for a wrong magic number, wrong dimensions, a length
    that differs from the one the header declares, no items, or labels outside 0-9.
    """
    kind = "image" if ndim == 3 else "label"
    if not content:
        raise DataError(f"{path}: empty file; {REDOWNLOAD_HINT}")

    header_size = IDX_HEADER_MAGIC_BYTES + 4 * ndim
    if len(content) < IDX_HEADER_MAGIC_BYTES:
        raise DataError(
            f"{path}: truncated: the IDX header needs {header_size} bytes, "
            f"file has {len(content):,}; {REDOWNLOAD_HINT}"
        )

    magic = int.from_bytes(content[:IDX_HEADER_MAGIC_BYTES], "big")
    expected_magic = (IDX_UNSIGNED_BYTE << 8) | ndim
    if magic >> 8 != IDX_UNSIGNED_BYTE:
        raise DataError(
            f"{path}: wrong magic number {magic} (0x{magic:08x}), expected {expected_magic} "
            f"for an IDX {kind} file of unsigned bytes; the file is not MNIST data, "
            f"{REDOWNLOAD_HINT}"
        )
    if content[3] != ndim:
        raise DataError(
            f"{path}: wrong number of dimensions: the header declares {content[3]}, "
            f"expected {ndim} for MNIST {kind}s (magic number {expected_magic}); "
            f"{REDOWNLOAD_HINT}"
        )

    if len(content) < header_size:
        raise DataError(
            f"{path}: truncated: the IDX header needs {header_size} bytes, "
            f"file has {len(content):,}; {REDOWNLOAD_HINT}"
        )
    shape = tuple(
        int.from_bytes(content[offset : offset + 4], "big")
        for offset in range(IDX_HEADER_MAGIC_BYTES, header_size, 4)
    )
    if ndim == 3 and shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{path}: wrong image dimensions {shape[1]}x{shape[2]}, expected "
            f"{IMAGE_SIZE}x{IMAGE_SIZE} for MNIST; {REDOWNLOAD_HINT}"
        )
    if shape[0] == 0:
        raise DataError(f"{path}: the header declares 0 {kind}s; {REDOWNLOAD_HINT}")

    # math.prod on Python ints, because three uint32 dimensions can overflow int64.
    expected_size = header_size + math.prod(shape)
    if len(content) < expected_size:
        raise DataError(
            f"{path}: truncated: header promises {expected_size:,} bytes, "
            f"file has {len(content):,}; {REDOWNLOAD_HINT}"
        )
    if len(content) > expected_size:
        raise DataError(
            f"{path}: {len(content) - expected_size:,} trailing bytes: header promises "
            f"{expected_size:,} bytes, file has {len(content):,}; {REDOWNLOAD_HINT}"
        )

    items = np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)
    if ndim == 1:
        _check_labels(items, path)
    return items


def _check_labels(labels: np.ndarray, path: Path) -> None:
    bad = np.flatnonzero(labels >= len(CLASSES))
    if bad.size:
        raise DataError(
            f"{path}: label {labels[bad[0]]} at index {bad[0]:,} is outside 0-9 "
            f"({bad.size:,} such labels); {REDOWNLOAD_HINT}"
        )


def read_idx(path: Path, spec: IdxFile, *, verify: bool = True) -> tuple[np.ndarray, str]:
    """Read, decompress if the name ends in .gz, and validate one IDX file.

    Returns the items as parse_idx does, and the SHA-256 hex digest of the uncompressed
    content. With verify=True the file must also have the official item count and
    checksum. Tests pass verify=False to read tiny fake files.
    """
    content = read_bytes(path)
    if path.suffix == ".gz":
        content = _gunzip(content, path)

    items = parse_idx(content, path, ndim=spec.ndim)
    digest = sha256_hex(content)
    if verify:
        if len(items) != spec.count:
            raise DataError(
                f"{path}: {len(items):,} {spec.kind}s, expected {spec.count:,} in the "
                f"official file; {REDOWNLOAD_HINT}"
            )
        verify_sha256(path, digest, spec.sha256)
    return items, digest


def _gunzip(compressed: bytes, path: Path) -> bytes:
    try:
        return gzip.decompress(compressed)
    # BadGzipFile for a wrong header or CRC, EOFError for a cut-off stream, and
    # zlib.error for corrupt deflate data.
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path}: invalid gzip file ({error}); {REDOWNLOAD_HINT}") from error


def _search_dirs(data_dir: Path) -> tuple[Path, Path]:
    return (data_dir / "mnist", data_dir)


def find_mnist_files(data_dir: Path) -> dict[IdxFile, Path | None]:
    """Locate each of the four files in <data_dir>/mnist/, then in <data_dir>/ itself.

    Within a folder the raw file is preferred to the .gz, and the official name to the
    dotted one. A path that exists but is not a readable file is returned too, so that
    reading it reports the problem.
    """
    found: dict[IdxFile, Path | None] = {}
    for spec in FILES:
        candidates = (folder / name for folder in _search_dirs(data_dir) for name in spec.names())
        found[spec] = next((path for path in candidates if path.exists()), None)
    return found


def _missing_files_message(data_dir: Path, missing: list[IdxFile]) -> str:
    names = ", ".join(f"{spec.stem}(.gz)" for spec in missing)
    folders = " and ".join(str(folder) for folder in _search_dirs(data_dir))
    return f"MNIST files not found: {names}; looked in {folders}"


def download_mnist(data_dir: Path, missing: list[IdxFile]) -> None:
    """Download the missing .gz files into <data_dir>/mnist/, trying each mirror in turn."""
    for index, spec in enumerate(missing):
        target = data_dir / "mnist" / f"{spec.stem}.gz"
        try:
            download_file([mirror + target.name for mirror in MIRRORS], target, known_hash=None)
        except DownloadError as error:
            raise DataError(_download_failed_message(data_dir, missing[index:], error)) from error


def _download_failed_message(data_dir: Path, missing: list[IdxFile], error: DownloadError) -> str:
    """Return the one-line error for files that are neither in data_dir nor downloadable.

    missing starts with the file whose download failed and lists only files still missing.
    """
    if len(missing) == 1:
        files = f"MNIST file {missing[0].stem}(.gz)"
    else:
        files = f"MNIST files {missing[0].stem}(.gz) and {len(missing) - 1} more"
    return (
        f"{files} not found in {data_dir} or its mnist/ folder, and the download failed "
        f"({error}); put the files in --data-dir or $CNNLAB_DATA, see Data in README.md"
    )


def split_mnist(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    source: dict[str, str],
    val_size: int = VAL_SIZE,
) -> DatasetSplits:
    """Take the first val_size training images as validation and the rest as training.

    train and test are (images [N, 28, 28], labels [N]) pairs as read_idx returns them.
    """
    train_images, train_labels = train
    test_images, test_labels = test
    check_val_size(val_size, len(train_images))

    def to_nchw(images: np.ndarray) -> np.ndarray:
        return images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)

    num_train = len(train_images) - val_size
    split_rule = (
        f"MNIST validation is the first {val_size:,} images of the official training file "
        f"(the convention of TensorFlow's read_data_sets), training is the remaining "
        f"{num_train:,}, and test is the {len(test_images):,} official test images."
    )
    return DatasetSplits(
        name="mnist",
        classes=CLASSES,
        train_images=images_to_tensor(to_nchw(train_images[val_size:])),
        train_labels=labels_to_tensor(train_labels[val_size:]),
        val_images=images_to_tensor(to_nchw(train_images[:val_size])),
        val_labels=labels_to_tensor(train_labels[:val_size]),
        test_images=images_to_tensor(to_nchw(test_images)),
        test_labels=labels_to_tensor(test_labels),
        source=source,
        split_rule=split_rule,
    )


def load_mnist(
    data_dir: Path,
    *,
    download: bool = True,
    verify: bool = True,
    val_size: int = VAL_SIZE,
) -> DatasetSplits:
    """Find, download if missing, read, verify and split MNIST.

    With verify=True every file must have the official item count and SHA-256.
    """
    check_data_dir(data_dir, "the MNIST files", download=download)
    paths = find_mnist_files(data_dir)
    missing = [spec for spec, path in paths.items() if path is None]
    if missing:
        if not download:
            raise DataError(
                f"{_missing_files_message(data_dir, missing)}; pass --data-dir with the "
                f"folder that contains them, or enable downloading"
            )
        download_mnist(data_dir, missing)
        paths = find_mnist_files(data_dir)

    arrays: dict[IdxFile, np.ndarray] = {}
    source: dict[str, str] = {}
    for spec, path in paths.items():
        if path is None:  # the download reported success but the file is not there
            raise DataError(_missing_files_message(data_dir, [spec]))
        arrays[spec], source[str(path)] = read_idx(path, spec, verify=verify)

    for images_spec, labels_spec in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        num_images = len(arrays[images_spec])
        num_labels = len(arrays[labels_spec])
        if num_images != num_labels:
            raise DataError(
                f"{paths[labels_spec]}: {num_labels:,} labels for {num_images:,} images in "
                f"{paths[images_spec]}; the two files do not belong together, "
                f"delete both and rerun to download again, or pass --data-dir"
            )

    return split_mnist(
        (arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]),
        (arrays[TEST_IMAGES], arrays[TEST_LABELS]),
        source=source,
        val_size=val_size,
    )
