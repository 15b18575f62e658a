"""The DatasetSplits container and the conversion of NumPy splits to tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DatasetSplits:
    """Training, validation and test tensors of one dataset, with their provenance.

    Images are uint8 tensors of shape [N, C, H, W] and labels are int64 tensors of
    shape [N]. All tensors are contiguous.
    """

    name: str
    classes: tuple[str, ...]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    # Path of each file read, mapped to the SHA-256 hex digest of its uncompressed content.
    source: dict[str, str]
    # One sentence for the report on how the validation split was taken.
    split_rule: str


def check_val_size(val_size: int, num_train: int) -> None:
    """Raise ValueError unless val_size leaves at least one image for each of the two splits."""
    if not 0 < val_size < num_train:
        raise ValueError(
            f"val_size must be between 1 and {num_train - 1} for {num_train} training images, "
            f"got {val_size}"
        )


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """Wrap a uint8 array as a contiguous tensor, copying only when needed.

    Arrays parsed with np.frombuffer are read-only, and torch.from_numpy warns on those,
    so they are copied as well as non-contiguous ones.
    """
    if not (images.flags.c_contiguous and images.flags.writeable):
        images = images.copy()
    return torch.from_numpy(images)


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(labels.astype(np.int64))
