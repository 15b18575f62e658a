"""File reading, checksum and data-folder checks shared by the dataset readers.

Every failure becomes a one-line DataError that starts with the path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cnnlab.errors import DataError

# Appended to errors about a damaged file that a fresh download replaces.
REDOWNLOAD_HINT = "delete it and rerun to download again, or pass --data-dir"


def read_bytes(path: Path) -> bytes:
    """Read a whole file, turning an OSError such as a permission error into DataError."""
    try:
        return path.read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise DataError(
            f"{path}: cannot be read ({reason}); make it a readable file, or pass --data-dir"
        ) from error


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def verify_sha256(path: Path, actual: str, expected: str) -> None:
    """Raise DataError unless the SHA-256 digest of the file's content is the expected one."""
    if actual != expected:
        raise DataError(
            f"{path}: checksum mismatch: SHA-256 of the content is {actual}, "
            f"expected {expected}; {REDOWNLOAD_HINT}"
        )


def check_data_dir(data_dir: Path, dataset: str, *, download: bool) -> None:
    """Raise DataError if data_dir is not a folder, or is missing while downloading is off.

    A missing folder is fine when downloading is on, because the download creates it.
    """
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(
            f"{data_dir}: data folder is a file, not a folder; "
            f"pass --data-dir with the folder that contains {dataset}"
        )
    if not data_dir.exists() and not download:
        raise DataError(
            f"{data_dir}: data folder not found and downloading is off; "
            f"pass --data-dir with the folder that contains {dataset}, or enable downloading"
        )
