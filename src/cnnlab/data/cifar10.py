"""Read CIFAR-10 in its binary or python layout, verify it and split off validation images.

Both official layouts hold five training batches and one test batch of 10,000 images.
Each image is 3,072 bytes: the 32x32 red, green and blue planes, each in row-major
order. The binary layout prefixes every image with one label byte. The python layout
pickles one dict per batch, with the images in b"data" and the labels in b"labels".
"""

from __future__ import annotations

import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data._download import DownloadError, download_file
from cnnlab.data._files import check_data_dir, read_bytes, sha256_hex, verify_sha256
from cnnlab.data._safe_pickle import load_restricted_pickle
from cnnlab.data._splits import DatasetSplits, check_val_size, images_to_tensor, labels_to_tensor
from cnnlab.errors import DataError

NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)  # channels (R, G, B), rows, columns
IMAGE_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + IMAGE_BYTES  # binary layout: one label byte, then the image
IMAGES_PER_FILE = 10_000
VAL_SIZE = 5_000

ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE_HASH = "md5:c32a1d4ab5d03f1284b67883e8d87530"  # MD5 of the official archive

# SHA-256 of the official binary files. The python layout has no published per-file
# checksums, so its files are validated by structure and record count only.
BINARY_SHA256 = {
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}


@dataclass(frozen=True)
class Layout:
    """File names of one official CIFAR-10 layout."""

    folder: str  # the folder that the official archive extracts
    archive: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str  # class names in label order
    binary: bool

    @property
    def batch_files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file)


BINARY = Layout(
    folder="cifar-10-batches-bin",
    archive="cifar-10-binary.tar.gz",
    train_files=tuple(f"data_batch_{number}.bin" for number in range(1, 6)),
    test_file="test_batch.bin",
    meta_file="batches.meta.txt",
    binary=True,
)
PYTHON = Layout(
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    train_files=tuple(f"data_batch_{number}" for number in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    binary=False,
)
LAYOUTS = (BINARY, PYTHON)  # in order of preference


def _redownload_hint(path: Path) -> str:
    return f"delete {path.parent} and rerun to download again, or pass --data-dir"


def read_binary_batch(path: Path, *, verify: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Read one batch file of the binary layout.

    Returns images [N, 3, 32, 32] uint8, labels [N] uint8 and the SHA-256 hex digest of
    the file. With verify=True the file must hold exactly 10,000 records and match the
    official checksum for its name. Tests pass verify=False to read tiny fake files.
    """
    content = read_bytes(path)
    hint = _redownload_hint(path)
    if not content:
        raise DataError(f"{path}: empty file; {hint}")
    if len(content) % RECORD_BYTES:
        raise DataError(
            f"{path}: record size wrong: {len(content):,} bytes is not a multiple of the "
            f"{RECORD_BYTES:,}-byte CIFAR-10 record (1 label byte and {IMAGE_BYTES:,} "
            f"pixel bytes); {hint}"
        )

    records = np.frombuffer(content, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0]
    images = records[:, 1:].reshape(-1, *IMAGE_SHAPE)
    _check_labels_and_count(labels, path, verify=verify, hint=hint)

    digest = sha256_hex(content)
    if verify:
        expected = BINARY_SHA256.get(path.name)
        if expected is None:
            raise DataError(
                f"{path}: not an official CIFAR-10 file name, expected one of "
                f"{', '.join(BINARY_SHA256)}"
            )
        verify_sha256(path, digest, expected)
    return images, labels, digest


def read_python_batch(path: Path, *, verify: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Read one pickled batch of the python layout with the restricted unpickler.

    Returns images [N, 3, 32, 32] uint8, labels [N] int64 and the SHA-256 hex digest of
    the file. With verify=True the batch must hold exactly 10,000 images. No checksum is
    checked, because none is published for these files.
    """
    content = read_bytes(path)
    hint = _redownload_hint(path)
    if not content:
        raise DataError(f"{path}: empty file; {hint}")
    batch = _entries(load_restricted_pickle(content, path, hint=hint), path, hint)

    data = batch.get("data")
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == IMAGE_BYTES
    ):
        raise DataError(
            f"{path}: 'data' is {_describe(data)}, expected a uint8 array of shape "
            f"[N, {IMAGE_BYTES}]; {hint}"
        )
    if len(data) == 0:
        raise DataError(f"{path}: the batch contains no images; {hint}")
    labels = _labels_array(batch.get("labels"), path, hint)
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(labels):,} labels for {len(data):,} images; {hint}")
    _check_labels_and_count(labels, path, verify=verify, hint=hint)

    images = data.reshape(-1, *IMAGE_SHAPE)
    return images, labels, sha256_hex(content)


def _entries(unpickled: object, path: Path, hint: str) -> dict[object, object]:
    """Return the dict of a python-layout file with bytes keys decoded to str.

    Keys are str when Python 2 wrote the file, as for the official files, and bytes when
    Python 3 did.
    """
    if not isinstance(unpickled, dict):
        raise DataError(
            f"{path}: the pickle contains {_describe(unpickled)}, expected the dict of a "
            f"CIFAR-10 python-layout file; {hint}"
        )
    return {_to_str(key): value for key, value in unpickled.items()}


def _to_str(value: object) -> object:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {list(value.shape)}"
    if isinstance(value, list):
        return f"a list of {len(value):,} items"
    if value is None:
        return "missing"
    return f"a {type(value).__name__}"


def _labels_array(labels: object, path: Path, hint: str) -> np.ndarray:
    if isinstance(labels, list | np.ndarray):
        try:
            array = np.asarray(labels)
        except (ValueError, TypeError):  # NumPy 2 rejects ragged nested lists with ValueError
            array = None
        if array is not None and array.ndim == 1 and np.issubdtype(array.dtype, np.integer):
            return array
    raise DataError(f"{path}: 'labels' is {_describe(labels)}, expected a list of int; {hint}")


def _check_labels_and_count(labels: np.ndarray, path: Path, *, verify: bool, hint: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise DataError(
            f"{path}: label {labels[bad[0]]} of image {bad[0]:,} is outside 0-9 "
            f"({bad.size:,} such labels); {hint}"
        )
    if verify and len(labels) != IMAGES_PER_FILE:
        raise DataError(
            f"{path}: {len(labels):,} images, expected {IMAGES_PER_FILE:,} in an official "
            f"CIFAR-10 batch; {hint}"
        )


def read_class_names(path: Path, layout: Layout) -> tuple[tuple[str, ...], str]:
    """Read the 10 class names in label order and the SHA-256 hex digest of the file."""
    content = read_bytes(path)
    hint = _redownload_hint(path)
    if layout.binary:
        try:
            text = content.decode("ascii")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not an ASCII text file ({error}); {hint}") from error
        names: list[object] = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        meta = _entries(load_restricted_pickle(content, path, hint=hint), path, hint)
        label_names = meta.get("label_names")
        if not isinstance(label_names, list):
            raise DataError(
                f"{path}: 'label_names' is {_describe(label_names)}, expected a list; {hint}"
            )
        names = [_to_str(name) for name in label_names]

    valid = all(isinstance(name, str) and name for name in names)
    if not valid or len(set(names)) != NUM_CLASSES or len(names) != NUM_CLASSES:
        shown = ", ".join(repr(name) for name in names[:12])  # a damaged file can be long
        if len(names) > 12:
            shown += ", ..."
        raise DataError(
            f"{path}: expected {NUM_CLASSES} distinct non-empty class names, found "
            f"{len(set(names))} distinct among {len(names)}: "
            f"{shown}; {hint}"
        )
    return tuple(str(name) for name in names), sha256_hex(content)


def _search_dirs(data_dir: Path) -> tuple[Path, Path]:
    return (data_dir / "cifar10", data_dir)


def find_layout_dir(data_dir: Path, layout: Layout) -> Path | None:
    """Find the layout's folder in <data_dir>/cifar10/ or <data_dir>/, or one level deeper.

    Users often extract the archive into a folder of its own, which puts the layout
    folder one level deeper. data_dir may also be the layout folder itself. Hidden
    folders are skipped, among them the ".extract-*" scratch folders that an
    interrupted extract_archive leaves behind.
    """
    for base in _search_dirs(data_dir):
        deeper = [
            path
            for path in sorted(base.glob(f"*/{layout.folder}"))
            if not path.parent.name.startswith(".")
        ]
        candidates = [base / layout.folder, *deeper]
        if base.name == layout.folder:
            candidates.insert(0, base)
        for candidate in candidates:
            if candidate.is_dir():
                return candidate
    return None


def find_archive(data_dir: Path) -> tuple[Layout, Path] | None:
    """Find an official archive in <data_dir>/cifar10/ or <data_dir>/, binary first."""
    for layout in LAYOUTS:
        for base in _search_dirs(data_dir):
            if (base / layout.archive).is_file():
                return layout, base / layout.archive
    return None


def extract_archive(archive: Path, layout: Layout) -> Path:
    """Extract the layout folder from an official archive next to it and return its path.

    tarfile's "data" filter rejects members that would land outside the target folder,
    links that point outside it, and device files. The archive is extracted into a
    temporary folder first, so a failed extraction leaves no half-filled layout folder.
    """
    target = archive.parent / layout.folder
    hint = "delete it and rerun to download again, or pass --data-dir"
    try:
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=archive.parent) as scratch:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(scratch, filter="data")
            extracted = Path(scratch) / layout.folder
            if not extracted.is_dir():
                raise DataError(f"{archive}: the archive has no folder {layout.folder}/; {hint}")
            extracted.rename(target)
    # TarError includes the errors of the "data" filter. A damaged gzip stream raises
    # EOFError, zlib.error or gzip.BadGzipFile, which is an OSError.
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        reason = " ".join(str(error).split())
        raise DataError(f"{archive}: extraction failed ({reason}); {hint}") from error
    return target


def _not_found_message(data_dir: Path) -> str:
    folders = " and ".join(str(folder) for folder in _search_dirs(data_dir))
    return (
        f"CIFAR-10 not found: looked for {BINARY.folder}/, {PYTHON.folder}/, "
        f"{BINARY.archive} or {PYTHON.archive} in {folders}"
    )


def locate_cifar10(data_dir: Path, *, download: bool) -> tuple[Layout, Path]:
    """Return the layout and folder to read, extracting or downloading the archive if needed.

    An extracted layout wins over an archive, and the binary layout over the python one.
    """
    for layout in LAYOUTS:
        folder = find_layout_dir(data_dir, layout)
        if folder is not None:
            return layout, folder

    found = find_archive(data_dir)
    if found is not None:
        layout, archive = found
        return layout, extract_archive(archive, layout)

    if not download:
        raise DataError(
            f"{_not_found_message(data_dir)}; pass --data-dir with the folder that contains "
            f"them, or enable downloading"
        )
    archive = data_dir / "cifar10" / BINARY.archive
    try:
        download_file([ARCHIVE_URL], archive, known_hash=ARCHIVE_HASH)
    except DownloadError as error:
        raise DataError(
            f"CIFAR-10 files not found in {data_dir} or its cifar10/ folder, and the "
            f"download of {ARCHIVE_URL} failed ({error}); put {BINARY.folder}/ or "
            f"{BINARY.archive} in --data-dir or $CNNLAB_DATA, see Data in README.md"
        ) from error
    return BINARY, extract_archive(archive, BINARY)


def split_cifar10(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    classes: tuple[str, ...],
    source: dict[str, str],
    val_size: int = VAL_SIZE,
) -> DatasetSplits:
    """Take the last val_size training images as validation and the rest as training.

    train is (images [N, 3, 32, 32], labels [N]) of all training batches in file order,
    and test is the same for the test batch.
    """
    train_images, train_labels = train
    test_images, test_labels = test
    check_val_size(val_size, len(train_images))

    num_train = len(train_images) - val_size
    split_rule = (
        f"CIFAR-10 validation is the last {val_size:,} of the {len(train_images):,} official "
        f"training images in file order (data_batch_1 to data_batch_5), training is the "
        f"first {num_train:,}, and test is the {len(test_images):,} images of test_batch."
    )
    return DatasetSplits(
        name="cifar10",
        classes=classes,
        train_images=images_to_tensor(train_images[:num_train]),
        train_labels=labels_to_tensor(train_labels[:num_train]),
        val_images=images_to_tensor(train_images[num_train:]),
        val_labels=labels_to_tensor(train_labels[num_train:]),
        test_images=images_to_tensor(test_images),
        test_labels=labels_to_tensor(test_labels),
        source=source,
        split_rule=split_rule,
    )


def load_cifar10(
    data_dir: Path,
    *,
    download: bool = True,
    verify: bool = True,
    val_size: int = VAL_SIZE,
) -> DatasetSplits:
    """Find, extract or download if needed, read, verify and split CIFAR-10.

    With verify=True every batch must hold 10,000 images, and the binary files must also
    match their official SHA-256.
    """
    check_data_dir(data_dir, "CIFAR-10", download=download)
    layout, folder = locate_cifar10(data_dir, download=download)

    missing = [
        name for name in (*layout.batch_files, layout.meta_file) if not (folder / name).exists()
    ]
    if missing:
        raise DataError(
            f"{folder}: incomplete CIFAR-10 folder, missing {', '.join(missing)}; "
            f"delete the folder and rerun to download again, or pass --data-dir"
        )

    classes, meta_digest = read_class_names(folder / layout.meta_file, layout)
    source = {str(folder / layout.meta_file): meta_digest}
    read_batch = read_binary_batch if layout.binary else read_python_batch

    batches = []
    for name in layout.batch_files:
        images, labels, digest = read_batch(folder / name, verify=verify)
        batches.append((images, labels))
        source[str(folder / name)] = digest

    train_batches, test_batch = batches[:-1], batches[-1]
    train_images = np.concatenate([images for images, _ in train_batches])
    train_labels = np.concatenate([labels for _, labels in train_batches])
    return split_cifar10(
        (train_images, train_labels),
        test_batch,
        classes=classes,
        source=source,
        val_size=val_size,
    )
