"""Type and range checks of the numbers in results.json that the report prints or compares.

``check_values`` raises DataError on the first invalid value, in one line that
names the file, the value's path in the JSON (``runs.<key>.final.test_accuracy``,
``runs.<key>.history[2].val_loss`` with 0-based list indices), the value and the
fix. It expects results that passed ``cnnlab.report.check_structure``.

A diverged run may store null for any of these numbers, because the study
writes NaN and infinity as null. A completed run may not. A field that is
absent is not checked here: the report shows it as missing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cnnlab.errors import DataError

FIX = "rerun the study to rewrite it, or restore the original file"


@dataclass(frozen=True)
class Kind:
    """The values a field accepts: a finite number in [minimum, maximum], optionally an integer."""

    description: str
    minimum: float
    maximum: float = math.inf
    integer: bool = False

    def accepts(self, value: Any) -> bool:
        # type() rather than isinstance: true is a bool, and True == 1 in Python.
        if type(value) not in (int, float):
            return False
        if self.integer and type(value) is not int:
            return False
        return math.isfinite(value) and self.minimum <= value <= self.maximum


ACCURACY = Kind("an accuracy, a fraction in [0, 1]", 0.0, 1.0)
FRACTION = Kind("a fraction in [0, 1]", 0.0, 1.0)
LOSS = Kind("a loss, a finite number of 0 or more", 0.0)
SECONDS = Kind("a time in seconds, a finite number of 0 or more", 0.0)
NON_NEGATIVE = Kind("a finite number of 0 or more", 0.0)
COUNT = Kind("an integer of 0 or more", 0.0, integer=True)
EPOCH = Kind("an epoch number, an integer of 1 or more", 1.0, integer=True)

HISTORY_FIELDS = {
    "epoch": EPOCH,
    "train_loss": LOSS,
    "train_ce": LOSS,
    "l2_penalty": LOSS,
    "train_accuracy": ACCURACY,
    "val_loss": LOSS,
    "val_accuracy": ACCURACY,
    "test_loss": LOSS,
    "test_accuracy": ACCURACY,
    "epoch_time_s": SECONDS,
    "eval_time_s": SECONDS,
    "weight_norm_sq": NON_NEGATIVE,
}
FINAL_FIELDS = {
    "train_accuracy": ACCURACY,
    "val_accuracy": ACCURACY,
    "test_accuracy": ACCURACY,
    "train_clean_accuracy": ACCURACY,
    "val_accuracy_single_view": ACCURACY,
    "test_accuracy_single_view": ACCURACY,
    "val_loss": LOSS,
    "test_loss": LOSS,
    "train_time_s": SECONDS,
    "tta_time_s": SECONDS,
    "images_per_s": NON_NEGATIVE,
    "weight_norm_sq": NON_NEGATIVE,
    "params": COUNT,
    "flops": COUNT,
}
RUN_STATUSES = ("completed", "diverged")
EXAMPLE_LISTS = ("correct", "wrong", "most_confident_wrong")


def check_values(results: Mapping[str, Any], source: str) -> None:
    """Raise DataError naming ``source`` and the field's path for the first invalid number.

    Checks every run's status, history rows and final metrics, the study's
    wall time, and the fractions of the prediction and feature-map sections.
    """
    study = results.get("study")
    if isinstance(study, Mapping) and "wall_time_s" in study:
        _check_number(study["wall_time_s"], SECONDS, "study.wall_time_s", source)
    classes = results["dataset"].get("classes")
    for key, run in results["runs"].items():
        _check_run(run, f"runs.{key}", source)
        _check_confusion(run, classes, f"runs.{key}", source)
    sections = results["sections"]
    if "predictions" in sections:
        _check_predictions(sections["predictions"], "sections.predictions", source)
    layers = sections.get("feature_maps", {}).get("layers")
    if isinstance(layers, list):
        for index, layer in enumerate(layers):
            path = f"sections.feature_maps.layers[{index}]"
            _check_object(layer, path, source)
            if "active_fraction" in layer:
                _check_number(layer["active_fraction"], FRACTION, f"{path}.active_fraction", source)


def _check_run(run: Mapping[str, Any], path: str, source: str) -> None:
    status = run["status"]
    if status not in RUN_STATUSES:
        raise DataError(
            f'{source}: {path}.status is {_shown(status)}, but it must be "completed" or '
            f'"diverged"; {FIX}'
        )
    null_allowed = status == "diverged"
    if status == "completed" and not run["history"]:
        raise DataError(
            f"{source}: {path}.history is empty, but a completed run has one row per epoch; {FIX}"
        )
    for index, row in enumerate(run["history"]):
        row_path = f"{path}.history[{index}]"
        _check_object(row, row_path, source)
        _check_fields(row, HISTORY_FIELDS, row_path, source, null_allowed)
    _check_fields(run["final"], FINAL_FIELDS, f"{path}.final", source, null_allowed)


def _check_confusion(run: Mapping[str, Any], classes: Any, path: str, source: str) -> None:
    """Check that the confusion matrix, when stored, has one row per class name."""
    confusion = run.get("confusion")
    if not isinstance(confusion, list) or not confusion or not isinstance(classes, list):
        return
    if len(confusion) != len(classes):
        raise DataError(
            f"{source}: {path}.confusion has {len(confusion)} rows, but dataset.classes names "
            f"{len(classes)} classes; {FIX}"
        )


def _check_predictions(predictions: Mapping[str, Any], path: str, source: str) -> None:
    per_class = predictions.get("per_class_accuracy")
    # The study stores null for a class with no test image, in a list or a mapping by name.
    if isinstance(per_class, list):
        for index, value in enumerate(per_class):
            item_path = f"{path}.per_class_accuracy[{index}]"
            _check_number(value, ACCURACY, item_path, source, null_allowed=True)
    elif isinstance(per_class, Mapping):
        for name, value in per_class.items():
            item_path = f"{path}.per_class_accuracy.{name}"
            _check_number(value, ACCURACY, item_path, source, null_allowed=True)
    elif per_class is not None:
        raise DataError(
            f"{source}: {path}.per_class_accuracy is {_shown(per_class)}, but it must be a JSON "
            f"array or object of accuracies; {FIX}"
        )
    for name in EXAMPLE_LISTS:
        examples = predictions.get(name)
        if examples is None:
            continue
        if not isinstance(examples, list):
            raise DataError(
                f"{source}: {path}.{name} is {_shown(examples)}, but it must be a JSON array; {FIX}"
            )
        for index, example in enumerate(examples):
            example_path = f"{path}.{name}[{index}]"
            _check_object(example, example_path, source)
            if "confidence" in example:
                _check_number(example["confidence"], FRACTION, f"{example_path}.confidence", source)


def _check_fields(
    record: Mapping[str, Any],
    fields: Mapping[str, Kind],
    path: str,
    source: str,
    null_allowed: bool,
) -> None:
    for name, kind in fields.items():
        if name in record:
            _check_number(record[name], kind, f"{path}.{name}", source, null_allowed)


def _check_number(
    value: Any, kind: Kind, path: str, source: str, null_allowed: bool = False
) -> None:
    if value is None:
        if null_allowed:
            return
        raise DataError(
            f"{source}: {path} is null, but it must be {kind.description} "
            f"(only a diverged run may store null); {FIX}"
        )
    if not kind.accepts(value):
        raise DataError(
            f"{source}: {path} is {_shown(value)}, but it must be {kind.description}; {FIX}"
        )


def _check_object(value: Any, path: str, source: str) -> None:
    if not isinstance(value, Mapping):
        raise DataError(f"{source}: {path} is {_shown(value)}, but it must be a JSON object; {FIX}")


def _shown(value: Any) -> str:
    """Return ``value`` as JSON text, or its JSON type for an array or object, in 60 characters."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
