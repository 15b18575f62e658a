"""Shared fixtures: tiny in-memory datasets and tiny study configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cnnlab.config import ConvBlock, ModelSpec, Preprocess, RunConfig, TrainConfig
from cnnlab.data import DatasetSplits


def make_splits(
    n_train: int = 240, n_val: int = 60, n_test: int = 80, channels: int = 1, size: int = 28
) -> DatasetSplits:
    """Return a learnable random dataset: each class is a bright square in its own place."""
    generator = torch.Generator().manual_seed(1234)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % 10
        images = torch.randint(
            0, 60, (n, channels, size, size), generator=generator, dtype=torch.uint8
        )
        for i, label in enumerate(labels.tolist()):
            row, col = divmod(label, 4)
            images[i, :, 2 + 6 * row : 8 + 6 * row, 2 + 6 * col : 8 + 6 * col] = 250
        return images, labels

    train_x, train_y = split(n_train)
    val_x, val_y = split(n_val)
    test_x, test_y = split(n_test)
    name = "mnist" if channels == 1 else "cifar10"
    return DatasetSplits(
        name=name,
        classes=tuple(str(c) for c in range(10)),
        train_images=train_x,
        train_labels=train_y,
        val_images=val_x,
        val_labels=val_y,
        test_images=test_x,
        test_labels=test_y,
        source={},
        split_rule="synthetic test data",
    )


TINY_MODEL = ModelSpec(blocks=(ConvBlock(8, pool=2), ConvBlock(16, pool=2)))


def tiny_run(**train_overrides: object) -> RunConfig:
    train = dataclasses.replace(
        TrainConfig(epochs=2, batch_size=32, lr=0.05, precision="fp32"), **train_overrides
    )
    return RunConfig("mnist", TINY_MODEL, train, Preprocess(translate=2), seed=0, device="cpu")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep every test off the network and out of the user's data cache."""

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network access is disabled in the tests")

    monkeypatch.setattr("pooch.retrieve", offline)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path_factory.mktemp("cnnlab-cache")))


@pytest.fixture(scope="session")
def tiny_data() -> DatasetSplits:
    return make_splits()
