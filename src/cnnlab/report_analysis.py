"""Report sections on what the trained baseline does with test images.

The predictions section shows correct, wrong and confidently wrong test images,
the confusion matrix and per-class accuracy. The feature-maps section draws
each conv block's activations for a few test images and tabulates their
size, receptive field and active fraction. Both analyse the first baseline
run, and each builder returns None when the study lacks its entry, as when
that run diverged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cnnlab import figures
from cnnlab.report_document import (
    MISSING,
    Paragraph,
    Section,
    Table,
    _figure,
    _number,
    percent,
    shape_text,
)
from cnnlab.report_results import Study

# ---------------------------------------------------------------------------
# 5. Predictions


def predictions_section(study: Study) -> Section | None:
    if "predictions" not in study.sections:
        return None
    predictions = study.sections["predictions"]
    run = study.runs[predictions["run"]]

    section = Section("Predictions", "predictions")
    section.blocks.append(
        Paragraph(f"The model analysed here is the baseline run of seed {run['config']['seed']}.")
    )

    grids = (
        ("predictions_correct", "correct", "correct_images", "Correctly classified test images"),
        ("predictions_wrong", "wrong", "wrong_images", "Misclassified test images"),
        (
            "predictions_confident_wrong",
            "most_confident_wrong",
            "confident_wrong_images",
            "The most confident mistakes, most confident first",
        ),
    )

    for name, key, array, caption in grids:
        examples = predictions.get(key) or []
        if examples:
            titles = [_example_title(study, example) for example in examples]
            images = study.artifacts[array]
            section.blocks.append(
                _figure(
                    name,
                    caption + " (true, predicted, confidence)",
                    figures.plot_image_grid,
                    images,
                    titles,
                )
            )

    confusion = run.get("confusion") or []
    if confusion:
        section.blocks.append(
            _figure(
                "confusion_matrix",
                "Confusion matrix of the test set (rows true class, columns predicted)",
                figures.plot_confusion_matrix,
                confusion,
                study.classes,
            )
        )
    section.blocks.append(_per_class_table(study, predictions, confusion))
    section.blocks.append(Paragraph(" ".join(_prediction_sentences(study, predictions, confusion))))

    return section


def _example_title(study: Study, example: Mapping[str, Any]) -> str:
    return (
        f"true {study.class_name(example['true'])}\n"
        f"pred {study.class_name(example['pred'])} {100.0 * example['confidence']:.1f}%"
    )


def _per_class_accuracy(study: Study, predictions: Mapping[str, Any]) -> list[float | None]:
    values = predictions.get("per_class_accuracy") or []
    if isinstance(values, Mapping):
        return [values.get(name) for name in study.classes]
    return list(values)


def _per_class_table(
    study: Study, predictions: Mapping[str, Any], confusion: Sequence[Sequence[int]]
) -> Table:
    accuracies = _per_class_accuracy(study, predictions)

    rows = []

    for index, name in enumerate(study.classes):
        accuracy = accuracies[index] if index < len(accuracies) else None
        images, confused = MISSING, MISSING
        if confusion:
            row = list(confusion[index])
            images = f"{sum(row):,}"
            others = [(value, column) for column, value in enumerate(row) if column != index]
            value, column = max(others) if others else (0, index)
            if value > 0:
                confused = f"{study.class_name(column)} ({value:,})"
        rows.append([name, percent(accuracy), images, confused])
    return Table(["class", "accuracy", "test images", "most frequent wrong prediction"], rows)


def _prediction_sentences(
    study: Study, predictions: Mapping[str, Any], confusion: Sequence[Sequence[int]]
) -> list[str]:
    sentences = []
    total = (
        int(sum(sum(row) for row in confusion))
        if confusion
        else int(predictions.get("n_test", study.n_test))
    )
    wrong = int(predictions.get("n_wrong", 0))
    if total:
        sentences.append(
            f"The model misclassified {wrong:,} of {total:,} test images "
            f"({percent(wrong / total)})."
        )
    pairs = sorted(
        (
            (value, true, predicted)
            for true, row in enumerate(confusion)
            for predicted, value in enumerate(row)
            if true != predicted and value > 0
        ),
        reverse=True,
    )[:3]
    if pairs:
        listed = "; ".join(
            f"{study.class_name(true)} predicted as {study.class_name(predicted)} ({value:,} times)"
            for value, true, predicted in pairs
        )
        sentences.append(f"The most confused pairs were: {listed}.")
    accuracies = [
        (value, index)
        for index, value in enumerate(_per_class_accuracy(study, predictions))
        if value is not None
    ]
    if accuracies:
        weakest, strongest = min(accuracies), max(accuracies)
        sentences.append(
            f"The weakest class is {study.class_name(weakest[1])} at {percent(weakest[0])}, "
            f"the strongest {study.class_name(strongest[1])} at {percent(strongest[0])}."
        )
    confident = predictions.get("most_confident_wrong") or []
    if confident:
        top = max(confident, key=lambda example: example["confidence"])
        sentences.append(
            f"The most confident mistake was a test image of class {study.class_name(top['true'])} "
            f"predicted as {study.class_name(top['pred'])} "
            f"with confidence {percent(top['confidence'])}."
        )
    return sentences


# ---------------------------------------------------------------------------
# 6. Feature maps


def feature_maps_section(study: Study) -> Section | None:
    if "feature_maps" not in study.sections:
        return None
    feature_maps = study.sections["feature_maps"]
    layers = feature_maps.get("layers") or []

    section = Section("Feature maps", "feature-maps")
    inputs = study.artifacts["feature_input"]
    maps = [study.artifacts[f"feature_{index}"] for index in range(len(layers))]
    names = [str(layer["name"]) for layer in layers]
    indices = feature_maps.get("sample_indices") or list(range(len(inputs)))

    for sample in range(len(inputs)):
        label = indices[sample] if sample < len(indices) else sample
        section.blocks.append(
            _figure(
                f"feature_maps_{sample}",
                f"Test image {label} and up to 16 channels of each conv block's maps after the "
                "activation, each channel on its own colour scale",
                figures.plot_feature_maps,
                inputs[sample],
                [block[sample] for block in maps],
                names,
                channel_counts=[int(layer["channels"]) for layer in layers],
            )
        )

    side = max(study.image_shape[1:])

    rows = [
        [
            str(layer["name"]),
            str(layer["channels"]),
            shape_text(layer["spatial"]),
            MISSING if layer.get("receptive_field") is None else f"{layer['receptive_field']} px",
            MISSING
            if layer.get("receptive_field") is None
            else f"{100.0 * layer['receptive_field'] / side:.0f}%",
            percent(layer.get("active_fraction")),
            _number(layer.get("mean_activation")),
        ]
        for layer in layers
    ]

    columns = [
        "layer",
        "channels",
        "spatial size",
        "receptive field",
        "of image side",
        "active fraction",
        "mean activation",
    ]
    section.blocks.append(
        Table(
            columns,
            rows,
            "Measured over the whole test split; active = above zero after the activation",
        )
    )
    if layers:
        section.blocks.append(Paragraph(" ".join(_feature_sentences(study, layers))))

    return section


def _feature_sentences(study: Study, layers: Sequence[Mapping[str, Any]]) -> list[str]:
    first, last = layers[0], layers[-1]
    input_size = shape_text(study.image_shape[1:])
    if list(first["spatial"]) == list(study.image_shape[1:]):
        size_clause = f"The maps keep the input's {input_size} size at {first['name']}"
    else:
        size_clause = (
            f"The maps shrink from the {input_size} input to {shape_text(first['spatial'])} "
            f"at {first['name']}"
        )
    sentences = [
        f"{size_clause} and measure {shape_text(last['spatial'])} at {last['name']}, while the "
        f"channels go from {study.image_shape[0]} to {first['channels']} and then "
        f"{last['channels']}."
    ]
    if first.get("receptive_field") is not None and last.get("receptive_field") is not None:
        side = max(study.image_shape[1:])
        sentences.append(
            f"The receptive field grows from {first['receptive_field']} to "
            f"{last['receptive_field']} pixels, covering "
            f"{100.0 * last['receptive_field'] / side:.0f}% of the {side}-pixel image side."
        )
    start, end = first.get("active_fraction"), last.get("active_fraction")
    if start is not None and end is not None:
        if end == start:
            sentences.append(
                f"The active fraction is {percent(start)} at both {first['name']} "
                f"and {last['name']}."
            )
        else:
            trend, density = ("falls", "sparser") if end < start else ("rises", "denser")
            sentences.append(
                f"The active fraction {trend} from {percent(start)} at {first['name']} to "
                f"{percent(end)} at {last['name']}, so deeper maps are {density}."
            )
    return sentences
