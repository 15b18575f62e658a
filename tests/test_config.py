from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from cnnlab.config import (
    ConvBlock,
    ModelSpec,
    default_study,
    read_config_file,
    study_from_dict,
    validate_model,
    validate_study,
)
from cnnlab.errors import ConfigError
from cnnlab.study import INPUT_SHAPES, plan_study


def test_default_studies_are_valid() -> None:
    for dataset in ("mnist", "cifar10"):
        for quick in (False, True):
            validate_study(default_study(dataset, quick=quick), INPUT_SHAPES[dataset])


def test_unknown_key_suggests_closest() -> None:
    base = default_study("mnist")
    with pytest.raises(
        ConfigError, match=r"unknown config key 'train.epoch'; did you mean 'epochs'\?"
    ):
        study_from_dict({"train": {"epoch": 3}}, base)


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'sead'; did you mean 'seed'\?"):
        study_from_dict({"sead": 3}, default_study("mnist"))


def test_overlay_keeps_other_defaults() -> None:
    base = default_study("mnist")
    study = study_from_dict({"train": {"epochs": 3}, "l2": {"alphas": [0, 0.5]}}, base)
    assert study.train.epochs == 3
    assert study.train.batch_size == base.train.batch_size
    assert study.l2.alphas == (0.0, 0.5)


def test_blocks_list_replaces_model() -> None:
    study = study_from_dict(
        {"model": {"blocks": [{"channels": 4, "kernel_size": 5}]}}, default_study("mnist")
    )
    assert study.model.blocks == (ConvBlock(4, kernel_size=5),)


def test_wrong_type_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"invalid train.epochs 'three': expected a whole number"):
        study_from_dict({"train": {"epochs": "three"}}, default_study("mnist"))
    # Booleans read as the config file spells them, not as Python does.
    with pytest.raises(ConfigError, match=r"invalid train.epochs true: expected a whole number"):
        study_from_dict({"train": {"epochs": True}}, default_study("mnist"))


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (ConvBlock(8, stride=0), r"stride 0: must be a finite number between 1 and 63"),
        (
            ConvBlock(8, kernel_size=31, padding=0),
            r"kernel_size 31: larger than its input 28x28",
        ),
        (ConvBlock(8, channels=0) if False else ConvBlock(0), r"channels 0"),
        (ConvBlock(8, activation="relux"), r"did you mean 'relu'"),
    ],
)
def test_invalid_block(block: ConvBlock, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_model(ModelSpec(blocks=(block,)), (1, 28, 28))


def test_collapse_to_zero_size_is_rejected() -> None:
    spec = ModelSpec(blocks=(ConvBlock(8, stride=4, pool=4), ConvBlock(8, kernel_size=1, pool=2)))
    with pytest.raises(ConfigError, match=r"zero size"):
        validate_model(spec, (1, 28, 28))


@pytest.mark.parametrize("alpha", [-1e-3, math.nan, math.inf])
def test_bad_alpha_is_rejected(alpha: float) -> None:
    study = study_from_dict({"l2": {"alphas": [0.0, alpha]}}, default_study("mnist"))
    with pytest.raises(ConfigError, match=r"invalid l2.alphas\[1\]"):
        validate_study(study, INPUT_SHAPES["mnist"])


def test_sweep_kernel_larger_than_input() -> None:
    study = study_from_dict({"stride_kernel": {"kernel_sizes": [3, 29]}}, default_study("mnist"))
    with pytest.raises(ConfigError, match=r"kernel_sizes\[1\] 29: larger than the 28x28 input"):
        validate_study(study, INPUT_SHAPES["mnist"])


def test_read_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text("seed = 4\n[train]\nepochs = 2\n")
    assert read_config_file(toml) == {"seed": 4, "train": {"epochs": 2}}
    js = tmp_path / "a.json"
    js.write_text(json.dumps({"seed": 5}))
    assert read_config_file(js) == {"seed": 5}


def test_read_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found; check the --config path"):
        read_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 4\n")
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        read_config_file(bad)
    other = tmp_path / "c.yaml"
    other.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"use a .toml or .json file"):
        read_config_file(other)
    with pytest.raises(ConfigError, match=r"Is a directory; check the --config path"):
        read_config_file(tmp_path)


@pytest.mark.parametrize(
    "text", ['{"seed": 1, "seed": 2}', '{"train": {"epochs": 1, "epochs": 50}}']
)
def test_json_duplicate_key_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "dup.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"is not valid JSON: duplicate key '(seed|epochs)'"):
        read_config_file(path)


def test_missing_required_block_key_is_named() -> None:
    with pytest.raises(
        ConfigError, match=r"invalid model.blocks\[0\]: missing key 'channels'; add channels = "
    ):
        study_from_dict({"model": {"blocks": [{"kernel_size": 5}]}}, default_study("mnist"))


def test_alternate_flip_needs_flip() -> None:
    study = study_from_dict(
        {"preprocess": {"flip": False, "alternate_flip": True}}, default_study("cifar10")
    )
    with pytest.raises(
        ConfigError, match=r"preprocess.alternate_flip true: .*needs preprocess.flip"
    ):
        validate_study(study, INPUT_SHAPES["cifar10"])


def test_mnist_preprocessing_comparison_rejected() -> None:
    """MNIST studies skip the preprocessing comparison, so asking for it is an error."""
    study = study_from_dict({"preprocessing": {"enabled": True}}, default_study("mnist"))
    with pytest.raises(ConfigError, match=r"preprocessing.enabled true for mnist: .*CIFAR-10 only"):
        validate_study(study, INPUT_SHAPES["mnist"])
    # Its other keys change nothing for MNIST and stay accepted.
    study = study_from_dict({"preprocessing": {"epochs": 2}}, default_study("mnist"))
    validate_study(study, INPUT_SHAPES["mnist"])


@pytest.mark.parametrize(
    ("whiten_patch", "epochs"),
    [(0, 10), (2, 3)],  # no stem to freeze; no epoch after the third to freeze it in
)
def test_inert_bias_freeze_keeps_key(whiten_patch: int, epochs: int) -> None:
    base = default_study("cifar10")
    base = dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, whiten_patch=whiten_patch),
        train=dataclasses.replace(base.train, epochs=epochs),
    )
    keys = {
        bias_epochs: plan_study(
            dataclasses.replace(
                base, train=dataclasses.replace(base.train, whiten_bias_epochs=bias_epochs)
            ),
            "cpu",
        ).sections["baseline"]["runs"]
        for bias_epochs in (0, 3)
    }
    assert keys[0] == keys[3]


def test_bias_freeze_changes_key() -> None:
    base = default_study("cifar10")
    with_freeze = plan_study(base, "cpu").runs.keys()
    without = plan_study(
        dataclasses.replace(base, train=dataclasses.replace(base.train, whiten_bias_epochs=0)),
        "cpu",
    ).runs.keys()
    assert set(with_freeze) != set(without)
