"""Typed, validated configuration: model spec, training recipe, preprocessing, study.

A study config is read from defaults, then from an optional TOML or JSON file
(``--config``), then from command-line options. Every value is validated here,
before any data is read or any training starts, and every error names the key,
the bad value, what is allowed and what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cnnlab.errors import ConfigError

ACTIVATIONS = ("relu", "gelu", "elu", "leaky_relu", "tanh", "none")
OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
SCHEDULES = ("onecycle", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
MAX_SEED = 2**31 - 1  # the first seed; seeds past 64 bits make torch.manual_seed fail
MAX_SEEDS = 100  # seeds per comparison
GLOBAL_POOLS = ("none", "max", "avg")
TTA_MODES = ("none", "flip", "multicrop", "shift")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ConvBlock:
    """One convolution, then optional batch norm, activation, max pooling and dropout."""

    channels: int
    kernel_size: int = 3
    stride: int = 1
    padding: int | None = None  # None: kernel_size // 2, which keeps the size at stride 1
    pool: int = 1  # max-pool window and stride after the activation; 1 means no pooling
    batch_norm: bool = True
    activation: str = "relu"
    dropout: float = 0.0

    @property
    def pad(self) -> int:
        return self.kernel_size // 2 if self.padding is None else self.padding


@dataclass(frozen=True)
class ModelSpec:
    """Conv blocks, then flatten, optional hidden fully connected layers, and a linear classifier.

    The fields after ``head_dropout`` are the fast-training architecture of
    Jordan (2024), each switchable on its own.
    """

    blocks: tuple[ConvBlock, ...]
    hidden: tuple[int, ...] = ()
    head_dropout: float = 0.0
    # Side of a frozen first convolution whose 2·C·p² filters whiten p x p input
    # patches, computed from training images; 0 means no such stem.
    whiten_patch: int = 0
    # Pool right after each convolution, before batch norm and activation. The
    # same function where both are monotonic, with 4x less normalisation work.
    pool_before_norm: bool = False
    global_pool: str = "none"  # reduce the last map to 1x1 before the head: none, max or avg
    logit_scale: float = 1.0  # multiplies the classifier output
    bn_scale: bool = True  # learn batch norm's scale; False keeps it at 1
    bn_momentum: float = 0.1  # PyTorch convention: weight of the newest batch statistics
    identity_init: bool = False  # start each conv close to the identity on its first channels


@dataclass(frozen=True)
class Preprocess:
    """Input scaling and training-time augmentation, all on batched tensors."""

    standardize: bool = True  # per-channel mean and std from the training split only
    whiten: bool = False  # ZCA whitening fitted on the training split
    translate: int = 0  # random shift of up to this many pixels, edges filled with background
    crop_padding: int = 0  # random crop after reflection padding by this many pixels
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side in pixels of a random square set to zero; 0 disables
    # With flip: flip each image at random in the first epoch, then the opposite way
    # to the previous epoch, so consecutive epochs always see both orientations.
    alternate_flip: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe; ``l2`` is α in E = cross-entropy + α·Σ‖w‖²."""

    epochs: int = 6
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.2  # peak learning rate
    momentum: float = 0.9
    schedule: str = "onecycle"
    warmup_fraction: float = 0.25  # share of steps spent warming up (onecycle)
    label_smoothing: float = 0.1
    l2: float = 0.0
    train_subset: int | None = None  # train on the first n training images; None uses all
    # auto: bf16 autocast where the device runs it fast; else fp16 (with loss scaling)
    # on a GPU and fp32 on a CPU.
    precision: str = "auto"
    bias_lr_scale: float = 1.0  # learning-rate multiplier for batch-norm biases
    # optimizer = "muon": the convolution filters step with Muon at this learning rate
    # and momentum; everything else takes Nesterov SGD steps at lr and momentum, the
    # biases (batch norm's and the whitening stem's) at lr x bias_lr_scale.
    muon_lr: float = 0.24
    muon_momentum: float = 0.6
    # Lookahead: every k steps pull the weights towards a slow moving average of
    # themselves, more strongly late in training; 0 disables.
    lookahead_every: int = 0
    # Epochs in which the whitening stem's bias trains before it freezes, which skips
    # the first convolution's input gradient from then on. With 0 it trains throughout.
    # A study stores a run whose model has no stem, or with no epoch left to freeze it
    # in, with 0 here, so it shares the key of the same run configured with 0.
    whiten_bias_epochs: int = 0
    # Test-time augmentation of the final evaluation: none, flip, multicrop or shift.
    tta: str = "none"
    # torch.compile the training forward and backward passes. The first steps then pay
    # a compile time of tens of seconds; on a 2-core CPU it gained nothing measurable.
    compile: bool = False


@dataclass(frozen=True)
class SweepConfig:
    """Stride x kernel-size grid, applied to conv blocks of the baseline model.

    ``blocks`` lists the indices (from 0) of the blocks that the grid changes;
    empty means every block. With ``replace_pooling`` a block whose stride is
    above 1 drops its max pooling, because the strided convolution already
    downsamples. Without it a deep pooled model shrinks to zero size at stride 2.
    """

    enabled: bool = True
    strides: tuple[int, ...] = (1, 2)
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    blocks: tuple[int, ...] = ()
    replace_pooling: bool = True
    epochs: int = 2
    train_subset: int | None = None


@dataclass(frozen=True)
class L2Config:
    """Explicit L2 penalty strengths to compare, trained with the given budget."""

    enabled: bool = True
    alphas: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)
    epochs: int = 6
    train_subset: int | None = None


@dataclass(frozen=True)
class PreprocessStudyConfig:
    """Preprocessing ablation (CIFAR-10): each step added in turn, then all."""

    enabled: bool = True
    epochs: int = 5
    train_subset: int | None = None


@dataclass(frozen=True)
class AnalysisConfig:
    """Sizes of the prediction and feature-map analyses."""

    grid_images: int = 16  # images per grid of correct and of wrong predictions
    feature_images: int = 3  # test images whose feature maps are drawn
    feature_channels: int = 16  # channels drawn per conv block


@dataclass(frozen=True)
class StudyConfig:
    dataset: str
    model: ModelSpec
    train: TrainConfig
    preprocess: Preprocess
    stride_kernel: SweepConfig = field(default_factory=SweepConfig)
    l2: L2Config = field(default_factory=L2Config)
    preprocessing: PreprocessStudyConfig = field(default_factory=PreprocessStudyConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    seed: int = 0
    seeds: int = 1
    device: str = "auto"


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on; its key is derived from this alone."""

    dataset: str
    model: ModelSpec
    train: TrainConfig
    preprocess: Preprocess
    seed: int
    device: str  # "cpu" or "cuda", resolved; results may differ between devices


# ---------------------------------------------------------------------------
# Defaults


def default_model(dataset: str) -> ModelSpec:
    if dataset == "mnist":
        return ModelSpec(
            blocks=(
                ConvBlock(24, pool=2),
                ConvBlock(48, pool=2),
                ConvBlock(96, pool=2),
            )
        )

    # The network of Jordan's airbench94 (arXiv:2404.00498, 2024): a frozen 2x2
    # patch-whitening stem, then three stages of two GELU convolutions (64, 256, 256
    # channels). Each stage pools after its first convolution, and a global max pool
    # feeds the classifier.
    def gelu(channels: int, pool: int = 1) -> ConvBlock:
        return ConvBlock(channels, pool=pool, activation="gelu")

    return ModelSpec(
        blocks=(gelu(64, 2), gelu(64), gelu(256, 2), gelu(256), gelu(256, 2), gelu(256)),
        whiten_patch=2,
        pool_before_norm=True,
        global_pool="max",
        logit_scale=1 / 9,
        bn_scale=False,
        bn_momentum=0.4,
        identity_init=True,
    )


def default_study(dataset: str, *, quick: bool = False) -> StudyConfig:
    """Return the study that ``cnnlab study DATASET`` runs without a config file."""
    check_choice("dataset", dataset, ("mnist", "cifar10"))
    if dataset == "mnist":
        study = StudyConfig(
            dataset="mnist",
            model=default_model("mnist"),
            train=TrainConfig(epochs=6, batch_size=128, lr=0.2),
            preprocess=Preprocess(standardize=True, translate=2),
            stride_kernel=SweepConfig(epochs=2),
            l2=L2Config(epochs=3),
            preprocessing=PreprocessStudyConfig(enabled=False),
        )
        if quick:
            study = dataclasses.replace(
                study,
                train=dataclasses.replace(study.train, epochs=2),
                stride_kernel=dataclasses.replace(
                    study.stride_kernel, epochs=1, train_subset=10_000
                ),
                l2=dataclasses.replace(study.l2, epochs=1, train_subset=10_000),
            )
        return study
    study = StudyConfig(
        dataset="cifar10",
        model=default_model("cifar10"),
        # lr and l2 restate airbench94's summed-loss values for a mean loss: its 11.5 per
        # 1024 images with momentum 0.85 is 1.5, its decay 0.0153 is α = 6.7e-4.
        train=TrainConfig(
            epochs=10,
            batch_size=1024,
            lr=1.5,
            momentum=0.85,
            warmup_fraction=0.23,
            label_smoothing=0.2,
            l2=6.7e-4,
            bias_lr_scale=64.0,
            lookahead_every=5,
            whiten_bias_epochs=3,
            tta="multicrop",
        ),
        preprocess=Preprocess(standardize=True, crop_padding=2, flip=True, alternate_flip=True),
        # The maps shrink to 3x3 before the last block, where a 5x5 kernel no longer
        # fits, so the grid changes the first convolution only.
        stride_kernel=SweepConfig(epochs=3, train_subset=15_000, blocks=(0,)),
        l2=L2Config(epochs=4, train_subset=15_000),
        preprocessing=PreprocessStudyConfig(epochs=4, train_subset=15_000),
    )
    if quick:
        study = dataclasses.replace(
            study,
            # Batches of 256 give the short runs four times as many steps. The learning
            # rate scales with the batch, as airbench94's per-image rate implies, and α
            # stays the same. Test-time augmentation is left out to save its evaluation.
            train=dataclasses.replace(
                study.train, epochs=2, train_subset=10_000, batch_size=256, lr=0.375, tta="none"
            ),
            stride_kernel=dataclasses.replace(
                study.stride_kernel, epochs=1, train_subset=5_000, kernel_sizes=(3, 5)
            ),
            l2=dataclasses.replace(
                study.l2, epochs=1, train_subset=5_000, alphas=(0.0, 1e-3, 1e-2)
            ),
            preprocessing=dataclasses.replace(study.preprocessing, epochs=1, train_subset=5_000),
        )
    return study


# ---------------------------------------------------------------------------
# Validation helpers


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value in choices:
        return
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, choices, n=1)
        if close:
            hint = f" (did you mean '{close[0]}'?)"
    raise ConfigError(f"invalid {name} {value!r}: choose one of {', '.join(choices)}{hint}")


def check_range(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    hint: str = "",
) -> None:
    bad = isinstance(value, float) and not math.isfinite(value)
    if low is not None and (value < low or (low_open and value == low)):
        bad = True
    if high is not None and value > high:
        bad = True
    if not bad:
        return
    if low is not None and high is not None:
        allowed = (
            f"greater than {low} and at most {high}" if low_open else f"between {low} and {high}"
        )
    elif low is not None:
        allowed = f"greater than {low}" if low_open else f"at least {low}"
    else:
        allowed = f"at most {high}"
    raise ConfigError(f"invalid {name} {value!r}: must be a finite number {allowed}{hint}")


def validate_model(
    spec: ModelSpec, input_shape: tuple[int, int, int], where: str = "model"
) -> None:
    """Check every block's values and that no feature map shrinks to zero."""
    from cnnlab.models import conv_output_size  # local: models imports torch

    if not spec.blocks:
        raise ConfigError(f"invalid {where}.blocks: need at least one conv block")
    _, height, width = input_shape
    if spec.whiten_patch > 0:
        height, width = height - spec.whiten_patch + 1, width - spec.whiten_patch + 1
    for i, block in enumerate(spec.blocks):
        name = f"{where}.blocks[{i}]"
        check_range(f"{name}.channels", block.channels, low=1, high=4096)
        check_range(f"{name}.kernel_size", block.kernel_size, low=1, high=63)
        check_range(f"{name}.stride", block.stride, low=1, high=63, hint="; use 1 to keep the size")
        check_range(f"{name}.padding", block.pad, low=0, high=63)
        check_range(f"{name}.pool", block.pool, low=1, high=16, hint="; use 1 for no pooling")
        check_range(f"{name}.dropout", block.dropout, low=0.0, high=0.95)
        check_choice(f"{name}.activation", block.activation, ACTIVATIONS)
        if block.kernel_size > min(height, width):
            raise ConfigError(
                f"invalid {name}.kernel_size {block.kernel_size}: larger than its input "
                f"{height}x{width}; use a smaller kernel, smaller strides or less pooling before it"
            )
        height = conv_output_size(height, block.kernel_size, block.stride, block.pad)
        width = conv_output_size(width, block.kernel_size, block.stride, block.pad)
        if block.pool > 1:
            if min(height, width) < block.pool:
                raise ConfigError(
                    f"invalid {name}.pool {block.pool}: its input is only {height}x{width}, "
                    "so the output would have zero size; use pool 1 or a smaller stride"
                )
            height, width = height // block.pool, width // block.pool
    for i, units in enumerate(spec.hidden):
        check_range(f"{where}.hidden[{i}]", units, low=1, high=65536)
    check_range(f"{where}.head_dropout", spec.head_dropout, low=0.0, high=0.95)
    check_range(f"{where}.whiten_patch", spec.whiten_patch, low=0, high=4)
    check_choice(f"{where}.global_pool", spec.global_pool, GLOBAL_POOLS)
    check_range(f"{where}.logit_scale", spec.logit_scale, low=0.0, low_open=True, high=100.0)
    check_range(f"{where}.bn_momentum", spec.bn_momentum, low=0.0, low_open=True, high=1.0)


def validate_train(train: TrainConfig, where: str = "train") -> None:
    check_range(f"{where}.epochs", train.epochs, low=1, high=1000)
    check_range(f"{where}.batch_size", train.batch_size, low=1, high=65536)
    check_choice(f"{where}.optimizer", train.optimizer, OPTIMIZERS)
    check_range(f"{where}.lr", train.lr, low=0.0, low_open=True)
    check_range(f"{where}.momentum", train.momentum, low=0.0, high=0.999)
    check_range(f"{where}.muon_lr", train.muon_lr, low=0.0, low_open=True, high=10.0)
    check_range(f"{where}.muon_momentum", train.muon_momentum, low=0.0, high=0.999)
    check_choice(f"{where}.schedule", train.schedule, SCHEDULES)
    check_range(f"{where}.warmup_fraction", train.warmup_fraction, low=0.0, high=0.9)
    check_range(f"{where}.label_smoothing", train.label_smoothing, low=0.0, high=0.9)
    check_range(f"{where}.l2", train.l2, low=0.0, hint="; α is the weight of the penalty α·Σ‖w‖²")
    if train.train_subset is not None:
        check_range(f"{where}.train_subset", train.train_subset, low=1)
    check_choice(f"{where}.precision", train.precision, PRECISIONS)
    check_range(f"{where}.bias_lr_scale", train.bias_lr_scale, low=0.0, low_open=True, high=1000)
    check_range(f"{where}.lookahead_every", train.lookahead_every, low=0, high=1000)
    check_range(f"{where}.whiten_bias_epochs", train.whiten_bias_epochs, low=0, high=1000)
    check_choice(f"{where}.tta", train.tta, TTA_MODES)


def validate_preprocess(pre: Preprocess, image_size: int, where: str = "preprocess") -> None:
    check_range(f"{where}.translate", pre.translate, low=0, high=image_size // 2)
    check_range(f"{where}.crop_padding", pre.crop_padding, low=0, high=image_size // 2)
    check_range(f"{where}.cutout", pre.cutout, low=0, high=image_size)
    if pre.alternate_flip and not pre.flip:
        raise ConfigError(
            f"invalid {where}.alternate_flip true: it sets which images flip, so it needs "
            f"{where}.flip = true; set flip = true or alternate_flip = false"
        )


def validate_study(study: StudyConfig, input_shape: tuple[int, int, int]) -> None:
    """Validate a whole study, including every model the stride x kernel sweep will build."""
    check_choice("dataset", study.dataset, ("mnist", "cifar10"))
    check_choice("device", study.device, DEVICES)
    check_range("seed", study.seed, low=0, high=MAX_SEED)
    check_range("seeds", study.seeds, low=1, high=MAX_SEEDS)
    validate_model(study.model, input_shape)
    validate_train(study.train)
    validate_preprocess(study.preprocess, input_shape[-1])
    sweep = study.stride_kernel
    for i, stride in enumerate(sweep.strides):
        check_range(
            f"stride_kernel.strides[{i}]", stride, low=1, high=63, hint="; use 1 to keep the size"
        )
    for i, kernel in enumerate(sweep.kernel_sizes):
        check_range(f"stride_kernel.kernel_sizes[{i}]", kernel, low=1, high=63)
        if kernel > input_shape[-1]:
            raise ConfigError(
                f"invalid stride_kernel.kernel_sizes[{i}] {kernel}: larger than the "
                f"{input_shape[-1]}x{input_shape[-1]} input; use at most {input_shape[-1]}"
            )
    for i, index in enumerate(sweep.blocks):
        if not 0 <= index < len(study.model.blocks):
            raise ConfigError(
                f"invalid stride_kernel.blocks[{i}] {index}: the model has blocks 0 to "
                f"{len(study.model.blocks) - 1}; list block indices from 0, or [] for all"
            )
    if sweep.enabled and (not sweep.strides or not sweep.kernel_sizes):
        raise ConfigError("invalid stride_kernel: strides and kernel_sizes must not be empty")
    check_range("stride_kernel.epochs", sweep.epochs, low=1, high=1000)
    for i, alpha in enumerate(study.l2.alphas):
        check_range(
            f"l2.alphas[{i}]", alpha, low=0.0, hint="; α is the weight of the penalty α·Σ‖w‖²"
        )
    if study.l2.enabled and not study.l2.alphas:
        raise ConfigError("invalid l2.alphas: must not be empty; for example [0, 1e-4, 1e-3]")
    check_range("l2.epochs", study.l2.epochs, low=1, high=1000)
    check_range("preprocessing.epochs", study.preprocessing.epochs, low=1, high=1000)
    if study.dataset == "mnist" and study.preprocessing.enabled:
        raise ConfigError(
            "invalid preprocessing.enabled true for mnist: the preprocessing comparison "
            "is for CIFAR-10 only; set enabled = false or remove [preprocessing] from the "
            "MNIST config"
        )
    for name in ("stride_kernel", "l2", "preprocessing"):
        subset = getattr(study, name).train_subset
        if subset is not None:
            check_range(f"{name}.train_subset", subset, low=1)
    check_range("analysis.grid_images", study.analysis.grid_images, low=1, high=100)
    check_range("analysis.feature_images", study.analysis.feature_images, low=1, high=16)
    check_range("analysis.feature_channels", study.analysis.feature_channels, low=1, high=64)


# ---------------------------------------------------------------------------
# Conversion from and to plain dicts (config files, results.json)


def to_dict(obj: Any) -> Any:
    """Convert a config dataclass to plain JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(item) for item in obj]
    return obj


def _as_written(value: Any) -> str:
    """Return ``value`` for a message, with booleans and null spelled as in TOML and JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"invalid {where} {_as_written(value)}: expected a list")
        return tuple(_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is Literal:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"invalid {where} {_as_written(value)}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"invalid {where} {_as_written(value)}: expected a whole number")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"invalid {where} {_as_written(value)}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"invalid {where} {_as_written(value)}: expected a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def from_dict(cls: Any, data: Any, where: str = "config", base: Any = None) -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with a suggestion.

    Fields missing from ``data`` come from ``base`` when given, else from the
    dataclass defaults.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"invalid {where}: expected a table of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            prefix = "" if where == "config" else f"{where}."
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        sub = f"{f.name}" if where == "config" else f"{where}.{f.name}"
        base_value = getattr(base, f.name) if base is not None else dataclasses.MISSING
        if f.name in data:
            if dataclasses.is_dataclass(hints[f.name]) and base_value is not dataclasses.MISSING:
                values[f.name] = from_dict(hints[f.name], data[f.name], sub, base_value)
            else:
                values[f.name] = _convert(hints[f.name], data[f.name], sub)
        elif base_value is not dataclasses.MISSING:
            values[f.name] = base_value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"invalid {where}: missing key '{f.name}'; add {f.name} = ...")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid {where}: {exc}") from exc


def whiten_bias_freezes(model: ModelSpec, train: TrainConfig) -> bool:
    """Return True if the run freezes its whitening stem's bias at some epoch."""
    return bool(model.whiten_patch) and 0 < train.whiten_bias_epochs < train.epochs


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"duplicate key '{key}'")
    return dict(pairs)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (.toml) or JSON (.json) study config file into a dict."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; check the --config path") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}; check the --config path"
        ) from None
    try:
        if path.suffix.lower() == ".json":
            # TOML rejects a repeated key, and so does this, where JSON keeps the last value.
            data = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
        elif path.suffix.lower() == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            raise ConfigError(f"config file {path}: unknown format; use a .toml or .json file")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {path} is not valid {path.suffix[1:].upper()}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a table of keys at the top level")
    return data


def study_from_dict(data: dict[str, Any], base: StudyConfig) -> StudyConfig:
    """Overlay a config file's values on ``base``; a new ``model.blocks`` list replaces the old."""
    return typing.cast(StudyConfig, from_dict(StudyConfig, data, "config", base))
