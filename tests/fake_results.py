"""Synthetic but schema-complete results.json and artifacts.npz contents for report tests.

``make_study`` builds a study as docs/results.md describes it, without
training anything: MNIST-like (1×28×28) or CIFAR-like (3×32×32) images, one
or several seeds, one diverged stride/kernel run and one invalid stride/kernel
cell. The accuracies are planted so that the tests know the expected values:
stride 1 beats stride 2 by about 2 points, kernel size changes accuracy by
about 0.1 points, and α = ``BEST_ALPHA`` has the highest validation accuracy.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from cnnlab.store import run_key

MNIST_CLASSES = [str(digit) for digit in range(10)]
CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
STRIDES = [1, 2, 3]
KERNEL_SIZES = [3, 5, 7]
INVALID_CELL = (3, 7)
DIVERGED_CELL = (2, 7)
ALPHAS = [0.0, 1e-4, 1e-3, 1e-2]
BEST_ALPHA = 1e-3
# Planted validation accuracy of each α cell, before seed noise.
ALPHA_VAL_ACCURACY = {0.0: 0.962, 1e-4: 0.968, 1e-3: 0.975, 1e-2: 0.951}
# The most confused pair planted in the confusion matrix (true, predicted).
CONFUSED_PAIR = (3, 5)
WEAKEST_CLASS = 3
BASELINE_EPOCHS = 6
SWEEP_EPOCHS = 3
SWEEP_SUBSET = 20000
# Differs from SWEEP_SUBSET so that the "none" step is not the stride 1, kernel 3 cell
# under the same key.
PREPROCESS_SUBSET = 10000
SPLITS = {
    "mnist": {"train": 55000, "validation": 5000, "test": 10000},
    "cifar10": {"train": 45000, "validation": 5000, "test": 10000},
}
ENVIRONMENT = {
    "python": "3.11.2",
    "torch": "2.13.0",
    "numpy": "2.4.6",
    "platform": "Linux-6.1-x86_64",
    "processor": "x86_64",
    "threads": 2,
    "device_name": "cpu",
    "precision": "fp32",
    "channels_last": False,
}
NO_PREPROCESS = {
    "standardize": False,
    "whiten": False,
    "crop_padding": 0,
    "flip": False,
    "cutout": 0,
    "translate": 0,
}
PREPROCESS_STEPS = [
    ("none", {}, 0.0),
    ("standardize", {"standardize": True}, 0.012),
    ("flip", {"standardize": True, "flip": True}, 0.031),
    ("crop", {"standardize": True, "flip": True, "crop_padding": 4}, 0.052),
]


def _model_config(channels: list[int], kernel_size: int, stride: int) -> dict[str, Any]:
    blocks = [
        {
            "channels": width,
            "kernel_size": kernel_size,
            "stride": stride,
            "padding": kernel_size // 2,
            "pool": 2,
            "batch_norm": False,
            "activation": "relu",
            "dropout": 0.0,
        }
        for width in channels
    ]
    return {"blocks": blocks, "hidden": [64], "head_dropout": 0.25}


def _architecture(model: dict[str, Any], image_shape: list[int]) -> list[dict[str, Any]]:
    """Return the layer table of ``model`` with shapes, params, FLOPs and receptive fields.

    Names and kinds follow the study's layer table: an input row, ``blockN.conv``
    and ``blockN.pool`` rows, ``fcN`` hidden layers and the ``classifier``.
    """
    channels, height, width = image_shape
    receptive_field, jump = 1, 1
    layers: list[dict[str, Any]] = [_layer("input", "Input", [channels, height, width], 0, 0, 1)]
    for index, block in enumerate(model["blocks"], start=1):
        kernel, stride, padding = block["kernel_size"], block["stride"], block["padding"]
        out_channels = block["channels"]
        height = max(0, (height + 2 * padding - kernel) // stride + 1)
        width = max(0, (width + 2 * padding - kernel) // stride + 1)
        receptive_field += (kernel - 1) * jump
        jump *= stride
        params = out_channels * (channels * kernel * kernel + 1)
        flops = 2 * channels * kernel * kernel * out_channels * height * width
        shape = [out_channels, height, width]
        kind = f"Conv {kernel}x{kernel}/{stride} + relu"
        layers.append(_layer(f"block{index}.conv", kind, shape, params, flops, receptive_field))
        pool = block["pool"]
        receptive_field += (pool - 1) * jump
        jump *= pool
        height, width = height // pool, width // pool
        shape = [out_channels, height, width]
        flops = out_channels * height * width * (pool * pool - 1)
        layers.append(
            _layer(f"block{index}.pool", f"MaxPool {pool}x{pool}", shape, 0, flops, receptive_field)
        )
        channels = out_channels
    features = channels * height * width
    for index, units in enumerate(model["hidden"], start=1):
        params = units * (features + 1)
        layers.append(
            _layer(f"fc{index}", "Linear + relu", [units], params, 2 * features * units, None)
        )
        features = units
    params = 10 * (features + 1)
    layers.append(_layer("classifier", "Linear", [10], params, 2 * features * 10, None))
    return layers


def _layer(
    name: str, kind: str, shape: list[int], params: int, flops: int, receptive_field: int | None
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "output_shape": shape,
        "params": params,
        "flops": flops,
        "receptive_field": receptive_field,
    }


def _parameter_names(model: dict[str, Any]) -> list[str]:
    """Return the model's parameter tensor names in PyTorch's named_parameters order."""
    names = []
    for index in range(len(model["blocks"])):
        names += [f"features.{index}.conv.weight", f"features.{index}.conv.bias"]
    # The head is Flatten, then Linear, ReLU and Dropout per hidden layer, then Linear.
    position = 1
    for _ in model["hidden"]:
        names += [f"head.{position}.weight", f"head.{position}.bias"]
        position += 3
    names += [f"head.{position}.weight", f"head.{position}.bias"]
    return names


def _weights(
    model: dict[str, Any], epochs: int, shrink: float, rng: np.random.Generator
) -> dict[str, Any]:
    """Return weight statistics whose spread grows over training unless ``shrink`` pulls it in."""
    layers: dict[str, Any] = {}
    z = np.array([-2.5, -1.645, -0.674, 0.0, 0.674, 1.645, 2.5])
    for position, name in enumerate(_parameter_names(model)):
        kind = "bias" if name.endswith("bias") else "weight"
        start = 0.1 / (1 + position) if kind == "weight" else 0.02
        growth = (1.0 + 0.15 * position) / (1.0 + shrink)
        stds = [start * (1.0 + (growth - 1.0) * epoch / epochs) for epoch in range(epochs + 1)]
        means = [0.001 * epoch * (1 if kind == "weight" else -1) for epoch in range(epochs + 1)]
        quantiles = [(m + s * z).round(6).tolist() for m, s in zip(means, stds, strict=True)]
        final = rng.normal(means[-1], stds[-1], size=2000)
        counts, edges = np.histogram(final, bins=50)
        layers[name] = {
            "kind": kind,
            "quantiles": quantiles,
            "mean": means,
            "std": stds,
            "hist_edges": edges.round(6).tolist(),
            "hist_counts": counts.tolist(),
        }
    return {"epochs": list(range(epochs + 1)), "layers": layers}


def _confusion(test_size: int) -> list[list[int]]:
    per_class = test_size // 10
    matrix = np.zeros((10, 10), dtype=int)
    for true in range(10):
        wrong = 8 + true
        matrix[true, (true + 1) % 10] = wrong // 2
        matrix[true, (true + 2) % 10] = wrong - wrong // 2
    true, predicted = CONFUSED_PAIR
    matrix[true, predicted] = 40
    for true in range(10):
        matrix[true, true] = per_class - matrix[true].sum()
    matrix[WEAKEST_CLASS, WEAKEST_CLASS] -= 30
    matrix[WEAKEST_CLASS, 0] += 30
    return matrix.tolist()


class _Builder:
    """Accumulates runs under their keys while the sections are built."""

    def __init__(self, dataset: str, seeds: int, rng: np.random.Generator) -> None:
        self.dataset = dataset
        self.seeds = list(range(seeds))
        self.rng = rng
        self.image_shape = [1, 28, 28] if dataset == "mnist" else [3, 32, 32]
        self.channels = [16, 32] if dataset == "mnist" else [32, 64, 128]
        self.split = SPLITS[dataset]
        self.runs: dict[str, dict[str, Any]] = {}

    def add_run(
        self,
        *,
        seed: int,
        model: dict[str, Any],
        epochs: int,
        train_subset: int | None,
        l2: float,
        preprocess: dict[str, Any],
        val: float,
        test: float,
        diverged: bool = False,
    ) -> str:
        config = {
            "dataset": self.dataset,
            "seed": seed,
            "device": "cpu",
            "model": model,
            "train": {
                "epochs": epochs,
                "batch_size": 128,
                "optimizer": "sgd",
                "lr": 0.05,
                "momentum": 0.9,
                "schedule": "cosine",
                "label_smoothing": 0.0,
                "l2": l2,
                "train_subset": train_subset,
                "precision": "fp32",
            },
            "preprocess": {**NO_PREPROCESS, **preprocess},
        }

        key = run_key(config)
        if key in self.runs:
            return key

        architecture = _architecture(model, self.image_shape)
        params = sum(layer["params"] for layer in architecture)
        flops = sum(layer["flops"] for layer in architecture)
        finished = 1 if diverged else epochs
        norm = 400.0 / (1.0 + 300.0 * l2)

        history = []
        for epoch in range(1, finished + 1):
            progress = epoch / epochs
            # The first epoch includes 0.5 s of warm-up, and every epoch varies by up to 2%
            # with the epoch and the seed, so the report has timing noise to measure.
            epoch_time = (2.0 + flops / 1e7) * (1.0 + 0.02 * math.sin(2.0 * epoch + 3.0 * seed))
            epoch_time += 0.5 if epoch == 1 else 0.0
            ce = 1.6 * (1.0 - progress) * (1.0 - val) + 0.05
            history.append(
                {
                    "epoch": epoch,
                    "lr": 0.05 * (1.0 - progress),
                    "train_loss": ce + l2 * norm,
                    "train_ce": ce,
                    "l2_penalty": l2 * norm,
                    "train_accuracy": min(1.0, val - 0.05 + 0.06 * progress),
                    "val_loss": 0.3 * (1.0 - progress) + 0.1,
                    "val_accuracy": val - 0.1 * (1.0 - progress),
                    "test_loss": 0.3 * (1.0 - progress) + 0.11,
                    "test_accuracy": test - 0.1 * (1.0 - progress),
                    "epoch_time_s": epoch_time,
                    "eval_time_s": 0.5,
                    "weight_norm_sq": norm,
                }
            )

        train_time = sum(entry["epoch_time_s"] for entry in history)
        images = (train_subset or self.split["train"]) * finished
        # A diverged run keeps only its cost, as the study writes it: no accuracies,
        # no losses and an empty confusion matrix.
        final: dict[str, Any] = {"train_time_s": train_time, "params": params, "flops": flops}
        if not diverged:
            final.update(
                train_accuracy=history[-1]["train_accuracy"],
                val_accuracy=val,
                test_accuracy=test,
                val_loss=history[-1]["val_loss"],
                test_loss=history[-1]["test_loss"],
                train_clean_accuracy=min(1.0, val + 0.02),
                images_per_s=images / train_time,
                weight_norm_sq=norm,
            )

        self.runs[key] = {
            "key": key,
            "config": config,
            "status": "diverged" if diverged else "completed",
            "diverged_epoch": 2 if diverged else None,
            "history": history,
            "final": final,
            "architecture": architecture,
            "weights": _weights(model, finished, 300.0 * l2, self.rng),
            "confusion": [] if diverged else _confusion(self.split["test"]),
            "environment": dict(ENVIRONMENT),
        }
        return key

    def noise(self) -> float:
        return float(self.rng.normal(0.0, 0.0015))


def _feature_layers(architecture: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the feature-map table of the conv rows of ``architecture``, as the study writes it."""
    layers: list[dict[str, Any]] = []
    previous: float | None = None
    conv_rows = [row for row in architecture if row["name"].endswith(".conv")]
    for index, row in enumerate(conv_rows):
        active = round(0.55 - 0.12 * index, 3)
        layers.append(
            {
                "name": row["name"],
                "channels": row["output_shape"][0],
                "spatial": row["output_shape"][1:],
                "active_fraction": active,
                "mean_activation": round(0.4 + 0.2 * index, 3),
                "receptive_field": row["receptive_field"],
                "sparsity_change": None if previous is None else round(active - previous, 3),
            }
        )
        previous = active
    return layers


def _prediction_examples(
    rng: np.random.Generator, count: int, correct: bool, sort: bool = False
) -> list[dict[str, Any]]:
    examples = []
    for index in range(count):
        true = int(rng.integers(0, 10))
        pred = true if correct else (true + 1 + int(rng.integers(0, 9))) % 10
        confidence = float(rng.uniform(0.5, 0.999))
        examples.append(
            {"index": 17 * index + 3, "true": true, "pred": pred, "confidence": confidence}
        )
    if sort:
        examples.sort(key=lambda example: example["confidence"], reverse=True)
    return examples


def make_study(
    dataset: str = "mnist", seeds: int = 1, random_seed: int = 0
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return (results, artifacts) of a synthetic study of ``dataset`` ("mnist" or "cifar10").

    The CIFAR-like study has a preprocessing section and a baseline with
    α = 1e-4, so its loss curves show the L2 part. The MNIST-like one has α = 0.
    """
    rng = np.random.default_rng(random_seed)
    builder = _Builder(dataset, seeds, rng)
    baseline_l2 = 0.0 if dataset == "mnist" else 1e-4
    baseline_model = _model_config(builder.channels, 3, 1)

    baseline_runs = [
        builder.add_run(
            seed=seed,
            model=baseline_model,
            epochs=BASELINE_EPOCHS,
            train_subset=None,
            l2=baseline_l2,
            preprocess={},
            val=ALPHA_VAL_ACCURACY[baseline_l2] + builder.noise(),
            test=ALPHA_VAL_ACCURACY[baseline_l2] - 0.002 + builder.noise(),
        )
        for seed in builder.seeds
    ]

    cells = []
    for stride in STRIDES:
        for kernel in KERNEL_SIZES:
            model = _model_config(builder.channels, kernel, stride)
            sizes = [
                layer["output_shape"][1:]
                for layer in _architecture(model, builder.image_shape)
                if layer["name"].endswith(".conv")
            ]
            if (stride, kernel) == INVALID_CELL:
                cells.append(
                    {
                        "stride": stride,
                        "kernel_size": kernel,
                        "runs": [],
                        "feature_map_sizes": [],
                        "valid": False,
                        "reason": (
                            f"invalid stride {stride}, kernel {kernel}: the feature maps of "
                            f"block {len(sizes)} shrink to 0×0; use a smaller stride or kernel"
                        ),
                    }
                )
                continue
            level = 0.975 - 0.02 * (stride - 1) + 0.001 * (kernel - 3) / 2
            keys = [
                builder.add_run(
                    seed=seed,
                    model=model,
                    epochs=SWEEP_EPOCHS,
                    train_subset=SWEEP_SUBSET,
                    l2=0.0,
                    preprocess={},
                    val=level + builder.noise(),
                    test=level - 0.001 + builder.noise(),
                    diverged=(stride, kernel) == DIVERGED_CELL and seed == 0,
                )
                for seed in builder.seeds
            ]
            cells.append(
                {
                    "stride": stride,
                    "kernel_size": kernel,
                    "runs": keys,
                    "feature_map_sizes": sizes,
                    "valid": True,
                }
            )

    l2_cells = []
    alphas = sorted({*ALPHAS, baseline_l2})
    for alpha in alphas:
        level = ALPHA_VAL_ACCURACY.get(alpha, ALPHA_VAL_ACCURACY[0.0])
        keys = [
            builder.add_run(
                seed=seed,
                model=baseline_model,
                epochs=BASELINE_EPOCHS,
                train_subset=None,
                l2=alpha,
                preprocess={},
                val=level + builder.noise(),
                test=level - 0.002 + builder.noise(),
            )
            for seed in builder.seeds
        ]
        l2_cells.append({"alpha": alpha, "runs": keys})

    classes = MNIST_CLASSES if dataset == "mnist" else CIFAR_CLASSES
    channels = builder.image_shape[0]
    size = builder.image_shape[1]
    confusion = np.array(builder.runs[baseline_runs[0]]["confusion"])
    per_class = (np.diag(confusion) / confusion.sum(axis=1)).round(4).tolist()
    correct = _prediction_examples(rng, 16, correct=True)
    wrong = _prediction_examples(rng, 16, correct=False)
    confident_wrong = _prediction_examples(rng, 8, correct=False, sort=True)
    feature_layers = _feature_layers(builder.runs[baseline_runs[0]]["architecture"])

    sections: dict[str, Any] = {
        "baseline": {
            "runs": baseline_runs,
            "budget": {"epochs": BASELINE_EPOCHS, "train_subset": None},
        },
        "stride_kernel": {
            "strides": STRIDES,
            "kernel_sizes": KERNEL_SIZES,
            "budget": {"epochs": SWEEP_EPOCHS, "train_subset": SWEEP_SUBSET},
            "cells": cells,
        },
        "predictions": {
            "run": baseline_runs[0],
            "correct": correct,
            "wrong": wrong,
            "most_confident_wrong": confident_wrong,
            "per_class_accuracy": per_class,
            "n_wrong": int(confusion.sum() - np.trace(confusion)),
        },
        "feature_maps": {
            "run": baseline_runs[0],
            "sample_indices": [3, 20],
            "layers": feature_layers,
        },
        "l2": {
            "alphas": alphas,
            "budget": {"epochs": BASELINE_EPOCHS, "train_subset": None},
            "cells": l2_cells,
        },
    }

    artifacts: dict[str, np.ndarray] = {
        "correct_images": rng.integers(0, 256, (16, channels, size, size), dtype=np.uint8),
        "wrong_images": rng.integers(0, 256, (16, channels, size, size), dtype=np.uint8),
        "confident_wrong_images": rng.integers(0, 256, (8, channels, size, size), dtype=np.uint8),
        "feature_input": rng.normal(0, 1, (2, channels, size, size)).astype(np.float32),
    }
    for index, layer in enumerate(feature_layers):
        height, width = layer["spatial"]
        # The study keeps the first 16 channels of each block.
        shape = (2, min(16, layer["channels"]), height, width)
        artifacts[f"feature_{index}"] = np.maximum(rng.normal(0, 1, shape), 0).astype(np.float32)

    if dataset == "cifar10":
        steps = []
        for name, flags, gain in PREPROCESS_STEPS:
            keys = [
                builder.add_run(
                    seed=seed,
                    model=baseline_model,
                    epochs=SWEEP_EPOCHS,
                    train_subset=PREPROCESS_SUBSET,
                    l2=0.0,
                    preprocess=flags,
                    val=0.70 + gain + builder.noise(),
                    test=0.69 + gain + builder.noise(),
                )
                for seed in builder.seeds
            ]
            steps.append({"name": name, "preprocess": {**NO_PREPROCESS, **flags}, "runs": keys})
        sections["preprocessing"] = {
            "budget": {"epochs": SWEEP_EPOCHS, "train_subset": PREPROCESS_SUBSET},
            "steps": steps,
        }
        raw = rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
        standardized = ((raw.astype(np.float32) / 255.0) - 0.47) / 0.25
        artifacts["stage_raw"] = raw
        artifacts["stage_standardized"] = standardized
        artifacts["stage_augmented"] = np.flip(standardized, axis=3).copy()

    results = {
        "schema": 1,
        "cnnlab_version": "0.1.0",
        "study": {
            "dataset": dataset,
            "quick": True,
            "seeds": seeds,
            "seed": 0,
            "device": "cpu",
            "config": {"dataset": dataset, "seeds": seeds, "quick": True},
            "started": "2025-01-02T10:00:00Z",
            "finished": "2025-01-02T10:42:30Z",
            "wall_time_s": 2550.0,
        },
        "environment": dict(ENVIRONMENT),
        "dataset": {
            "name": dataset,
            "classes": classes,
            "image_shape": builder.image_shape,
            "split": dict(builder.split),
            "split_rule": "the last 5000 training images, in file order, are the validation split",
            "source": {"train-images.bin": "0" * 64},
        },
        "runs": builder.runs,
        "sections": sections,
    }
    return copy.deepcopy(results), artifacts
