"""Dataset loading: find, verify, parse and split MNIST and CIFAR-10.

load_dataset returns a DatasetSplits of uint8 image tensors and int64 label tensors,
with a fixed validation split and the SHA-256 of every file read.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pooch

from cnnlab.data._splits import DatasetSplits
from cnnlab.data.cifar10 import load_cifar10
from cnnlab.data.mnist import load_mnist
from cnnlab.errors import ConfigError

__all__ = ["DATASETS", "DatasetSplits", "load_dataset", "resolve_data_dir"]

DATASETS: tuple[str, ...] = ("mnist", "cifar10")

DATA_DIR_ENV = "CNNLAB_DATA"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """Return the data folder: data_dir if given, else $CNNLAB_DATA, else the user cache.

    The user cache is pooch.os_cache("cnnlab"), for example ~/.cache/cnnlab on Linux.
    An empty $CNNLAB_DATA counts as unset. The result is absolute, so that the paths in
    DatasetSplits.source and in error messages are too.
    """
    if data_dir is not None:
        folder = Path(data_dir)
    elif os.environ.get(DATA_DIR_ENV):
        folder = Path(os.environ[DATA_DIR_ENV])
    else:
        folder = Path(pooch.os_cache("cnnlab"))
    return folder.expanduser().absolute()


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
) -> DatasetSplits:
    """Find, verify, parse and split a dataset; raise DataError/ConfigError with a one-line message.

    Files missing from the data folder are downloaded when download is True. Every file
    must have the official item count, and the MNIST and binary CIFAR-10 files must
    match their official SHA-256.
    """
    if name not in DATASETS:
        message = f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}"
        suggestions = difflib.get_close_matches(name.lower(), DATASETS, n=1)
        if suggestions:
            message += f" (did you mean {suggestions[0]!r}?)"
        raise ConfigError(message)

    folder = resolve_data_dir(data_dir)
    if name == "mnist":
        return load_mnist(folder, download=download)
    return load_cifar10(folder, download=download)
