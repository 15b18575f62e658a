"""A study: the training runs behind every report section, their analyses, and results.json.

Runs are planned first as plain RunConfigs. Each is trained only if the run
store has no result under its key, so a rerun reuses finished runs and an
interrupted study resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cnnlab
from cnnlab.config import (
    ConvBlock,
    Preprocess,
    RunConfig,
    StudyConfig,
    TrainConfig,
    to_dict,
    validate_model,
    validate_study,
    whiten_bias_freezes,
)
from cnnlab.data import DatasetSplits, load_dataset
from cnnlab.errors import ConfigError, OutputError
from cnnlab.models import build_model, feature_map_sizes, layer_table
from cnnlab.store import RunStore, atomic_write_bytes, atomic_write_json, run_key
from cnnlab.train import (
    PreparedData,
    environment,
    evaluate,
    resolve_device,
    resolve_precision,
    train_run,
)

log = logging.getLogger(__name__)

INPUT_SHAPES: dict[str, tuple[int, int, int]] = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
RESULTS_SCHEMA = 1


@dataclasses.dataclass
class Plan:
    """The runs of a study, by section, before any is trained."""

    runs: dict[str, RunConfig]  # key -> config, in training order
    sections: dict[str, dict[str, Any]]


def _budget(epochs: int, train_subset: int | None) -> dict[str, Any]:
    return {"epochs": epochs, "train_subset": train_subset}


def plan_study(study: StudyConfig, device: str) -> Plan:
    """Validate the study and list every run each section needs."""
    input_shape = INPUT_SHAPES[study.dataset]
    validate_study(study, input_shape)
    # "auto" precision becomes bf16 or fp32 here, so the run key records which one ran.
    study = dataclasses.replace(
        study,
        train=dataclasses.replace(study.train, precision=resolve_precision(study.train, device)),
    )
    runs: dict[str, RunConfig] = {}
    seeds = [study.seed + i for i in range(study.seeds)]

    def add(model: Any, train: Any, pre: Preprocess) -> list[str]:
        if train.whiten_bias_epochs and not whiten_bias_freezes(model, train):
            # No stem, or no epoch after the last bias epoch: the freeze never happens,
            # so the run is the same as with 0 and must share its key.
            train = dataclasses.replace(train, whiten_bias_epochs=0)
        if train.optimizer != "muon":
            # The Muon settings do nothing then; a run must not retrain because they differ.
            plain = TrainConfig()
            train = dataclasses.replace(
                train, muon_lr=plain.muon_lr, muon_momentum=plain.muon_momentum
            )
        keys = []
        for seed in seeds:
            config = RunConfig(study.dataset, model, train, pre, seed, device)
            key = run_key(to_dict(config))
            runs.setdefault(key, config)
            keys.append(key)
        return keys

    sections: dict[str, dict[str, Any]] = {}
    baseline = add(study.model, study.train, study.preprocess)
    sections["baseline"] = {
        "runs": baseline,
        "budget": _budget(study.train.epochs, study.train.train_subset),
    }

    sweep = study.stride_kernel
    if sweep.enabled:
        cells = []
        train = dataclasses.replace(
            study.train, epochs=sweep.epochs, train_subset=sweep.train_subset, tta="none"
        )
        changed = set(sweep.blocks) if sweep.blocks else set(range(len(study.model.blocks)))
        for stride in sweep.strides:
            for kernel in sweep.kernel_sizes:
                drop_pool = stride > 1 and sweep.replace_pooling
                blocks = tuple(
                    dataclasses.replace(
                        b,
                        stride=stride,
                        kernel_size=kernel,
                        padding=None,
                        pool=1 if drop_pool else b.pool,
                    )
                    if i in changed
                    else b
                    for i, b in enumerate(study.model.blocks)
                )
                model = dataclasses.replace(study.model, blocks=blocks)
                cell: dict[str, Any] = {"stride": stride, "kernel_size": kernel}
                try:
                    validate_model(model, input_shape)
                except ConfigError as exc:
                    cell.update(valid=False, reason=str(exc), runs=[], feature_map_sizes=[])
                else:
                    cell.update(
                        valid=True,
                        runs=add(model, train, study.preprocess),
                        feature_map_sizes=feature_map_sizes(model, input_shape),
                    )
                cells.append(cell)
        if not any(cell["valid"] for cell in cells):
            raise ConfigError(
                "invalid stride_kernel: every stride and kernel combination shrinks the feature "
                "maps to zero size; use smaller strides or fewer pooling blocks"
            )
        sections["stride_kernel"] = {
            "strides": list(sweep.strides),
            "kernel_sizes": list(sweep.kernel_sizes),
            "blocks": sorted(changed),
            "replace_pooling": sweep.replace_pooling,
            "budget": _budget(sweep.epochs, sweep.train_subset),
            "cells": cells,
        }

    if study.l2.enabled:
        train_base = dataclasses.replace(
            study.train, epochs=study.l2.epochs, train_subset=study.l2.train_subset, tta="none"
        )
        cells = [
            {
                "alpha": alpha,
                "runs": add(
                    study.model, dataclasses.replace(train_base, l2=alpha), study.preprocess
                ),
            }
            for alpha in study.l2.alphas
        ]
        sections["l2"] = {
            "alphas": list(study.l2.alphas),
            "budget": _budget(study.l2.epochs, study.l2.train_subset),
            "cells": cells,
        }

    if study.dataset == "cifar10" and study.preprocessing.enabled:
        train = dataclasses.replace(
            study.train,
            epochs=study.preprocessing.epochs,
            train_subset=study.preprocessing.train_subset,
            tta="none",
        )
        # Each step adds one thing to the one before it, ending past the default recipe.
        full = study.preprocess
        std = Preprocess(standardize=True)
        crop = dataclasses.replace(std, crop_padding=full.crop_padding or 2)
        flip = dataclasses.replace(crop, flip=True)
        alternate = dataclasses.replace(flip, alternate_flip=True)
        cutout = dataclasses.replace(alternate, cutout=full.cutout or 8)
        steps = [
            ("none", Preprocess(standardize=False)),
            ("standardization", std),
            ("+ random crop", crop),
            ("+ random flip", flip),
            ("+ alternating flip", alternate),
            ("+ cutout", cutout),
            ("+ ZCA whitening", dataclasses.replace(cutout, whiten=True)),
        ]
        sections["preprocessing"] = {
            "budget": _budget(study.preprocessing.epochs, study.preprocessing.train_subset),
            "steps": [
                {"name": name, "preprocess": to_dict(pre), "runs": add(study.model, train, pre)}
                for name, pre in steps
            ],
        }
    return Plan(runs, sections)


def _stored(store: RunStore, key: str) -> dict[str, Any] | None:
    """Return the stored record, or None if the run must be trained (again)."""
    stored = store.get(key)
    if stored is not None and stored["status"] == "completed":
        # The analyses need the weights, so a missing or damaged file means retraining.
        try:
            state = torch.load(store.weights_path(key), weights_only=True)
        except Exception as exc:  # a damaged file only costs the retraining
            # The type only: torch's own text runs to several lines of loading advice.
            log.warning(
                "run %s: unreadable weights file %s (%s); training it again",
                key,
                store.weights_path(key),
                type(exc).__name__,
            )
            return None
        if not isinstance(state, dict):
            log.warning("run %s: weights file contains no state dict; training it again", key)
            return None
    return stored


def execute_runs(
    plan: Plan, data: DatasetSplits, store: RunStore, *, progress: bool
) -> dict[str, dict[str, Any]]:
    """Train every planned run the store lacks; return all run records by key."""
    records: dict[str, dict[str, Any]] = {}
    found = {key: _stored(store, key) for key in plan.runs}  # checks each stored run once
    todo = [key for key in plan.runs if found[key] is None]
    log.info(
        "runs planned: %d, stored already: %d, to train: %d",
        len(plan.runs),
        len(plan.runs) - len(todo),
        len(todo),
    )
    done = 0
    for key, config in plan.runs.items():
        stored = found[key]
        if stored is None:
            done += 1
            label = f"run {done}/{len(todo)} {key[:8]}"
            record = train_run(
                config,
                data,
                checkpoint=store.checkpoint_path(key),
                weights_out=store.weights_path(key),
                progress=progress,
                label=label,
            )
            record["key"] = key
            store.put(key, record)
            store.checkpoint_path(key).unlink(missing_ok=True)
            stored = record
        records[key] = stored
    return records


@dataclasses.dataclass
class AnalysedModel:
    """The baseline model with its scaled data and test predictions, shared by the analyses."""

    config: RunConfig
    key: str
    model: torch.nn.Module
    prepared: PreparedData
    pred: torch.Tensor
    conf: torch.Tensor


def load_analysed_model(
    config: RunConfig, data: DatasetSplits, store: RunStore, key: str
) -> AnalysedModel:
    """Load the stored weights of run ``key`` and predict the test split once.

    Predictions use the run's test-time augmentation, so they match its reported accuracy.
    """
    model = build_model(config.model, INPUT_SHAPES[config.dataset], len(data.classes))
    state = torch.load(store.weights_path(key), weights_only=True)
    model.load_state_dict(state)
    model = model.to(config.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.eval()
    prepared = PreparedData(data, config)
    precision = resolve_precision(config.train, config.device)
    _, _, pred, conf = evaluate(
        model, prepared.test_x, prepared.test_y, config.device, precision, config.train.tta
    )
    return AnalysedModel(config, key, model, prepared, pred, conf)


def _examples(
    indices: torch.Tensor, data: DatasetSplits, pred: torch.Tensor, conf: torch.Tensor
) -> list[dict[str, Any]]:
    return [
        {
            "index": int(i),
            "true": int(data.test_labels[i]),
            "pred": int(pred[i]),
            "confidence": round(float(conf[i]), 5),
        }
        for i in indices
    ]


def analyse_predictions(
    study: StudyConfig, analysed: AnalysedModel, data: DatasetSplits
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Pick correct, wrong and confidently wrong test images of the analysed model."""
    pred, conf = analysed.pred, analysed.conf
    right = pred == data.test_labels
    generator = torch.Generator().manual_seed(analysed.config.seed)
    n = study.analysis.grid_images
    correct_idx = torch.nonzero(right).flatten()
    wrong_idx = torch.nonzero(~right).flatten()
    correct_pick = (
        correct_idx[torch.randperm(len(correct_idx), generator=generator)[:n]].sort().values
    )
    wrong_pick = wrong_idx[torch.randperm(len(wrong_idx), generator=generator)[:n]].sort().values
    confident = wrong_idx[conf[wrong_idx].argsort(descending=True)[:n]]
    per_class = [
        float(right[data.test_labels == c].float().mean())
        if (data.test_labels == c).any()
        else None
        for c in range(len(data.classes))
    ]
    section = {
        "run": analysed.key,
        "tta": analysed.config.train.tta,
        "correct": _examples(correct_pick, data, pred, conf),
        "wrong": _examples(wrong_pick, data, pred, conf),
        "most_confident_wrong": _examples(confident, data, pred, conf),
        "per_class_accuracy": per_class,
        "n_wrong": int((~right).sum()),
        "n_test": len(data.test_labels),
    }
    arrays = {
        "correct_images": data.test_images[correct_pick].numpy(),
        "wrong_images": data.test_images[wrong_pick].numpy(),
        "confident_wrong_images": data.test_images[confident].numpy(),
    }
    return section, arrays


@torch.no_grad()
def analyse_feature_maps(
    study: StudyConfig, analysed: AnalysedModel, data: DatasetSplits
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Measure each conv block's maps over the test split and keep a few to draw."""
    config, model, prepared = analysed.config, analysed.model, analysed.prepared
    blocks = config.model.blocks
    active = [0.0] * len(blocks)
    mean = [0.0] * len(blocks)
    count = [0] * len(blocks)
    for i in range(0, len(prepared.test_x), 500):
        x = (
            prepared.test_x[i : i + 500]
            .to(config.device)
            .contiguous(memory_format=torch.channels_last)
        )
        for b, fmap in enumerate(model.feature_maps(x)):  # type: ignore[operator]
            fmap = fmap.float()
            active[b] += (fmap > 0).float().sum().item()
            mean[b] += fmap.sum().item()
            count[b] += fmap.numel()
    table = layer_table(config.model, INPUT_SHAPES[config.dataset], len(data.classes))
    # The row that describes each block's map: its conv, or its pool when pooling comes first.
    conv_rows = []
    for row in table:
        if row.name.startswith("block") and row.name.endswith(".conv"):
            conv_rows.append(row)
        elif row.name.endswith(".pool") and config.model.pool_before_norm:
            conv_rows[-1] = dataclasses.replace(row, name=conv_rows[-1].name)
    sizes = feature_map_sizes(config.model, INPUT_SHAPES[config.dataset])
    layers = []
    previous = None
    for b, row in enumerate(conv_rows):
        fraction = active[b] / count[b]
        layers.append(
            {
                "name": row.name,
                "channels": row.output_shape[0],
                "spatial": sizes[b],
                "active_fraction": fraction,
                "mean_activation": mean[b] / count[b],
                "receptive_field": row.receptive_field,
                "sparsity_change": None if previous is None else fraction - previous,
            }
        )
        previous = fraction

    # One correctly classified image from each of the first few classes.
    pred = analysed.pred
    samples: list[int] = []
    for c in range(len(data.classes)):
        hits = torch.nonzero((data.test_labels == c) & (pred == c)).flatten()
        if len(hits):
            samples.append(int(hits[0]))
        if len(samples) == study.analysis.feature_images:
            break
    x = prepared.test_x[samples].to(config.device).contiguous(memory_format=torch.channels_last)
    arrays = {"feature_input": prepared.test_x[samples].numpy().astype(np.float32)}
    for b, fmap in enumerate(model.feature_maps(x)):  # type: ignore[operator]
        arrays[f"feature_{b}"] = (
            fmap[:, : study.analysis.feature_channels].float().cpu().contiguous().numpy()
        )
    return {"run": analysed.key, "sample_indices": samples, "layers": layers}, arrays


def preprocessing_stages(
    config: RunConfig, data: DatasetSplits, n: int = 8
) -> dict[str, np.ndarray]:
    """Return sample images raw, standardized, and augmented, for the preprocessing figure."""
    prepared = PreparedData(data, config)
    generator = torch.Generator().manual_seed(config.seed)
    from cnnlab.preprocess import augment

    standardized = prepared.train_x[:n]
    augmented = augment(standardized, config.preprocess, generator, background=prepared.background)
    return {
        "stage_raw": data.train_images[:n].numpy(),
        "stage_standardized": standardized.numpy(),
        "stage_augmented": augmented.numpy(),
    }


# The files that RunStore writes in runs/, and its temporary files (hidden names).
RUN_FILE = re.compile(r"[0-9a-f]{16}\.(json|weights\.pt|checkpoint\.pt)|\..*")


def is_run_folder(out: Path) -> bool:
    """Return True for a folder that a study wrote: it has results.json, or a runs/
    folder that contains only stored runs (a study interrupted before its report).
    """
    if (out / "results.json").is_file():
        return True
    runs = out / "runs"
    if not runs.is_dir():
        return False
    try:
        return all(RUN_FILE.fullmatch(entry.name) for entry in runs.iterdir())
    except OSError:
        return False


def check_output_path(out: Path) -> None:
    """Reject an output path that cannot become a folder, without creating anything.

    An existing folder is accepted only when it is empty or already a cnnlab run
    folder (see is_run_folder), so a report never overwrites other files.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"output folder {out} is an existing file; choose another --out")
    if out.is_dir() and not is_run_folder(out):
        try:
            other = next(out.iterdir(), None)
        except OSError as exc:
            raise OutputError(
                f"cannot read output folder {out}: {exc.strerror}; choose another --out"
            ) from exc
        if other is not None:
            raise OutputError(
                f"output folder {out} already contains files that cnnlab did not write "
                f"(such as {other.name}); choose a new or empty --out folder"
            )
    parent = out.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(
            f"cannot create output folder {out}: {parent} is a file; choose another --out"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot create output folder {out}: {parent} is not writable; choose another --out"
        )


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".cnnlab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"cannot write to output folder {out}: {exc.strerror}; choose another --out"
        ) from exc


def run_study(
    study: StudyConfig,
    *,
    out: Path,
    data_dir: str | Path | None = None,
    quick: bool = False,
    progress: bool = True,
    write_report: bool = True,
) -> Path:
    """Validate, load data, train what is missing, analyse and write results and report.

    Returns the path of results.json. Nothing is written when validation or data
    loading fails.
    """
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    device = resolve_device(study.device)
    plan = plan_study(study, device)
    check_output_path(out)
    data = load_dataset(study.dataset, data_dir)
    check_writable(out)
    store = RunStore(out / "runs")
    records = execute_runs(plan, data, store, progress=progress)

    sections = dict(plan.sections)
    baseline_key = sections["baseline"]["runs"][0]
    artifacts: dict[str, np.ndarray] = {}
    baseline_config = plan.runs[baseline_key]
    if records[baseline_key]["status"] == "completed":
        analysed = load_analysed_model(baseline_config, data, store, baseline_key)
        sections["predictions"], arrays = analyse_predictions(study, analysed, data)
        artifacts.update(arrays)
        sections["feature_maps"], arrays = analyse_feature_maps(study, analysed, data)
        artifacts.update(arrays)
    else:
        log.warning(
            "the baseline run diverged, so the prediction and feature-map sections are skipped"
        )
    if "preprocessing" in sections:
        artifacts.update(preprocessing_stages(baseline_config, data))

    precision = resolve_precision(study.train, device)
    results = {
        "schema": RESULTS_SCHEMA,
        "cnnlab_version": cnnlab.__version__,
        "study": {
            "dataset": study.dataset,
            "quick": quick,
            "seeds": study.seeds,
            "seed": study.seed,
            "device": device,
            "config": to_dict(study),
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "wall_time_s": time.perf_counter() - t0,
        },
        "environment": environment(device, precision),
        "dataset": {
            "name": data.name,
            "classes": list(data.classes),
            "image_shape": list(data.train_images.shape[1:]),
            "split": {
                "train": len(data.train_labels),
                "validation": len(data.val_labels),
                "test": len(data.test_labels),
            },
            "split_rule": data.split_rule,
            "source": data.source,
        },
        "runs": records,
        "sections": sections,
    }
    npz = _npz_bytes(artifacts)
    atomic_write_bytes(out / "artifacts.npz", npz)
    results_path = out / "results.json"
    atomic_write_json(results_path, results)
    if write_report:
        from cnnlab.report import write_report as build_report

        build_report(out, results, artifacts)
    return results_path


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def single_run(
    study: StudyConfig, *, out: Path, data_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train the study's baseline alone (``cnnlab train``) and store it in ``out/runs``."""
    device = resolve_device(study.device)
    # The comparisons are switched off below, but an invalid setting in them is
    # still rejected, as `cnnlab study` would reject it.
    validate_study(study, INPUT_SHAPES[study.dataset])
    plan = plan_study(
        dataclasses.replace(
            study,
            stride_kernel=dataclasses.replace(study.stride_kernel, enabled=False),
            l2=dataclasses.replace(study.l2, enabled=False),
            preprocessing=dataclasses.replace(study.preprocessing, enabled=False),
        ),
        device,
    )
    check_output_path(out)
    data = load_dataset(study.dataset, data_dir)
    check_writable(out)
    store = RunStore(out / "runs")
    records = execute_runs(plan, data, store, progress=progress)
    return records[plan.sections["baseline"]["runs"][0]]


__all__ = ["INPUT_SHAPES", "ConvBlock", "Plan", "plan_study", "run_study", "single_run"]
