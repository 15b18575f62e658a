"""Unpickle CIFAR-10 python-layout batches without running code from the file.

A pickle can call any importable function while it loads, so plain pickle.load on a
downloaded file runs whatever functions the file names. RestrictedUnpickler admits only the
globals that a CIFAR-10 batch needs to rebuild its dict of NumPy arrays, lists, ints
and strings, and rejects every other global before anything is called.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import DataError

# The function that ndarray.__reduce__ names. Taking it from a live array avoids
# importing numpy.core, which NumPy 2 deprecates, and works on NumPy 1 and 2.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]


def _encode_latin1(text: str, encoding: str) -> bytes:
    """Stand in for _codecs.encode, which Python 3 uses to store bytes at protocol 2."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _empty_bytes() -> bytes:
    """Stand in for bytes(), which Python 3 uses to store b"" at protocol 2."""
    return b""


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    # The official files come from Python 2 and NumPy 1, which name numpy.core.
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    # Files written by NumPy 2 name numpy._core.
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _encode_latin1,
    # Protocol 2 writes Python 2 module names, so Python 3 writes builtins as __builtin__.
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in _ALLOWED_GLOBALS.

    Strings from Python 2 pickles decode as latin-1, which is the encoding NumPy
    documents for loading Python 2 arrays. Persistent ids are rejected by the base
    class because persistent_load is not defined.
    """

    def __init__(self, file: io.BytesIO, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path}: rejected: the pickle asks for '{module}.{name}', which a "
                f"CIFAR-10 batch never contains; the file is not an official CIFAR-10 batch"
            ) from None


def load_restricted_pickle(content: bytes, path: Path, *, hint: str) -> object:
    """Unpickle content with RestrictedUnpickler; raise DataError naming path on failure."""
    try:
        return RestrictedUnpickler(io.BytesIO(content), path).load()
    except DataError:
        raise
    # A damaged pickle can make the unpickler or NumPy raise almost any exception type
    # (UnpicklingError, EOFError, ValueError, TypeError, KeyError, MemoryError, ...).
    except Exception as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise DataError(f"{path}: invalid pickle ({reason}); {hint}") from error
