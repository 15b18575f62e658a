"""Read-only view of a run folder's results.json and artifacts.npz for the section builders.

``Study`` wraps the parsed results and the loaded artifacts and provides the
look-ups that several sections share: the runs of a cell, a section's run keys
and training budget, class names and seeds. ``Cell`` contains the runs of one
study cell, split into completed and diverged runs. Its summaries of final
metrics cover the completed runs only, while ``Cell.cost`` also counts diverged
runs, because their cost was spent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab import stats
from cnnlab.report_document import DATASET_NAMES
from cnnlab.stats import Summary


@dataclass(frozen=True)
class Cell:
    """The runs of one study cell, split by status, with summaries over completed runs."""

    keys: list[str]
    completed: list[dict[str, Any]]
    diverged: list[dict[str, Any]]
    chance: float = 0.0  # accuracy of guessing the class at random

    @property
    def near_chance(self) -> bool:
        """True when the mean test accuracy is below 1.5 times chance: the runs learned little."""
        mean = self.mean("test_accuracy")
        return mean is not None and self.chance > 0 and mean < 1.5 * self.chance

    def values(self, metric: str) -> list[float]:
        return [
            run["final"][metric] for run in self.completed if run["final"].get(metric) is not None
        ]

    def summary(self, metric: str) -> Summary | None:
        values = self.values(metric)
        return stats.summarize(values) if values else None

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return stats.mean(values) if values else None

    def cost(self, metric: str) -> float | None:
        """Return the mean of a cost field (``params``, ``flops``, ``train_time_s``) over all runs.

        Diverged runs count too, because their cost was spent.
        """
        values = [
            run["final"][metric]
            for run in self.completed + self.diverged
            if run["final"].get(metric) is not None
        ]
        return stats.mean(values) if values else None

    def status_text(self) -> str:
        if self.near_chance:
            return (
                f"completed but learned little: {100 * (self.mean('test_accuracy') or 0):.1f}% "
                f"test accuracy is close to the {100 * self.chance:.0f}% of random guessing, "
                "so its differences are not meaningful"
            )
        if not self.diverged:
            return "completed"
        epochs = sorted({str(run.get("diverged_epoch")) for run in self.diverged})
        where = f"in epoch {', '.join(epochs)}"
        if not self.completed:
            return f"diverged ({len(self.diverged)} of {len(self.keys)} runs, {where})"
        share = f"{len(self.diverged)} of {len(self.keys)} runs"
        return f"{share} diverged ({where}), excluded from the means"


def overfitting_gap(final: Mapping[str, Any]) -> float | None:
    """Clean training accuracy minus validation accuracy, both single-view.

    The training images are scored without test-time augmentation, so the
    validation accuracy they are compared with is the single-view one too.
    """
    train = final.get("train_clean_accuracy")
    val = final.get("val_accuracy_single_view", final.get("val_accuracy"))
    if train is None or val is None:
        return None
    return float(train) - float(val)


@dataclass(frozen=True)
class Budget:
    epochs: int | None
    images: int
    tta: str = "none"

    def text(self) -> str:
        unit = "epoch" if self.epochs == 1 else "epochs"
        text = f"{self.epochs} {unit} on {self.images:,} training images"
        if self.tta == "multicrop":
            text += ", scored with multi-crop test-time augmentation"
        elif self.tta == "flip":
            text += ", scored with flip test-time augmentation"
        elif self.tta == "shift":
            text += ", scored with shifted-view test-time augmentation"
        return text


class Study:
    """Read-only view of results.json and artifacts.npz with the look-ups the sections share."""

    def __init__(self, results: Mapping[str, Any], artifacts: Mapping[str, np.ndarray]) -> None:
        self.results = results
        self.artifacts = artifacts
        self.runs: Mapping[str, dict[str, Any]] = results["runs"]
        self.sections: Mapping[str, Any] = results["sections"]
        dataset = results["dataset"]
        self.classes = [str(name) for name in dataset["classes"]]
        self.image_shape = list(dataset["image_shape"])
        self.n_train = int(dataset["split"]["train"])
        self.n_test = int(dataset["split"]["test"])
        self.dataset_name = DATASET_NAMES.get(dataset["name"], str(dataset["name"]))

    def cell(self, keys: Sequence[str]) -> Cell:
        records = [self.runs[key] for key in keys]
        completed = [run for run in records if run["status"] == "completed"]
        diverged = [run for run in records if run["status"] != "completed"]
        return Cell(list(keys), completed, diverged, 1 / len(self.classes) if self.classes else 0.0)

    def class_name(self, label: int | str) -> str:
        if isinstance(label, int) and 0 <= label < len(self.classes):
            return self.classes[label]
        return str(label)

    def budget(self, section_name: str) -> Budget:
        """Return the training budget a section records, falling back to its first run's config."""
        section = self.sections[section_name]
        budget = dict(section.get("budget") or {})
        for name in ("epochs", "train_subset"):
            if name not in budget and name in section:
                budget[name] = section[name]
        if "epochs" not in budget:
            keys = self.section_keys(section_name)
            if keys:
                train = self.runs[keys[0]]["config"]["train"]
                budget = {"epochs": train["epochs"], "train_subset": train.get("train_subset")}
        subset = budget.get("train_subset")
        images = min(int(subset), self.n_train) if subset else self.n_train
        keys = self.section_keys(section_name)
        tta = self.runs[keys[0]]["config"]["train"].get("tta", "none") if keys else "none"
        return Budget(budget.get("epochs"), images, tta)

    def section_keys(self, section_name: str) -> list[str]:
        """Return every run key a section names, in order, without repeats."""
        section = self.sections[section_name]
        groups: list[Sequence[str]] = [section.get("runs", [])]
        groups += [item.get("runs", []) for item in section.get("cells", [])]
        groups += [item.get("runs", []) for item in section.get("steps", [])]
        if "run" in section:
            groups.append([section["run"]])
        return list(dict.fromkeys(key for group in groups for key in group))

    def seeds(self) -> list[int]:
        seeds = {int(run["config"]["seed"]) for run in self.runs.values()}
        return sorted(seeds)
