"""Write a run folder's report (report.md, report.html, figures/*.png) from its stored results.

The report is built from ``results.json`` and ``artifacts.npz`` alone, so
``cnnlab report RUN_DIR`` rebuilds it without training. The sections come from
``cnnlab.report_sections`` as a neutral document that two renderers turn into
Markdown (figures referenced as ``figures/NAME.png``) and self-contained HTML
(figures embedded as base64 data URIs, inline CSS, no script, no external link).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import DataError, OutputError
from cnnlab.report_checks import check_values
from cnnlab.report_document import Block, Code, FigureSpec, Paragraph, Section, Table
from cnnlab.report_results import Study
from cnnlab.report_sections import build_sections
from cnnlab.store import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

RESULTS_SCHEMA = 1
RERUN = "rerun the study to rewrite it"

# Top-level keys of results.json and the keys each run record must have.
REQUIRED_KEYS = ("schema", "study", "dataset", "runs", "sections")
DATASET_KEYS = ("name", "classes", "image_shape", "split")
RUN_KEYS = ("config", "status", "history", "final")
DATASET_TYPES = {"name": str, "classes": list, "image_shape": list, "split": dict}
RUN_TYPES = {"config": dict, "history": list, "final": dict}


def load_results(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir/results.json`` and raise DataError if it is missing or not valid JSON."""
    path = Path(run_dir) / "results.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{path} not found; pass the run folder of a finished study (the --out folder)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"failed to read {path}: {exc}; {RERUN}") from exc
    try:
        results = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}); {RERUN}"
        ) from exc
    except (ValueError, RecursionError) as exc:
        # Non-finite numbers, integers too long to convert, or nesting too deep to parse.
        raise DataError(f"{path} is not valid results JSON ({exc}); {RERUN}") from exc
    if not isinstance(results, dict):
        raise DataError(f"{path} must contain a JSON object, not {type(results).__name__}; {RERUN}")
    return results


def _reject_constant(name: str) -> Any:
    # cnnlab writes NaN and infinity as null, so these constants mean an edited file.
    raise ValueError(f"{name} is not a valid JSON number")


def load_artifacts(run_dir: Path) -> dict[str, np.ndarray]:
    """Read every array of ``run_dir/artifacts.npz`` without pickle, or raise DataError if corrupt.

    A missing file reads as no arrays, which is valid for a study whose
    sections draw none.
    """
    path = Path(run_dir) / "artifacts.npz"
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    # zlib.error: a damaged byte inside a compressed array.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path} is corrupt or not an .npz archive ({exc}); {RERUN}") from exc


def _required_arrays(sections: Mapping[str, Any]) -> list[str]:
    names = []
    if "predictions" in sections:
        predictions = sections["predictions"]
        for key, array in (
            ("correct", "correct_images"),
            ("wrong", "wrong_images"),
            ("most_confident_wrong", "confident_wrong_images"),
        ):
            if predictions.get(key):
                names.append(array)
    if "feature_maps" in sections:
        names.append("feature_input")
        layers = sections["feature_maps"].get("layers")
        if isinstance(layers, list):
            names += [f"feature_{index}" for index in range(len(layers))]
    return names


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "true or false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def check_structure(results: Mapping[str, Any], source: str) -> None:
    """Raise DataError naming ``source`` unless the results have the keys and types it reads.

    Checks the top-level, dataset and run-record keys, the schema version,
    that each value the report indexes is an object or array as expected, and
    the types and ranges of the numbers it prints (``cnnlab.report_checks``).
    """
    for key in REQUIRED_KEYS:
        if key not in results:
            raise DataError(f"{source} has no '{key}' key; {RERUN}")
    # type() rather than isinstance: true is a bool, and True == 1 in Python.
    if type(results["schema"]) is not int or results["schema"] != RESULTS_SCHEMA:
        raise DataError(
            f"{source} has schema {results['schema']!r}, but this cnnlab reads schema "
            f"{RESULTS_SCHEMA}; rebuild the report with the cnnlab version that wrote it"
        )
    for key in ("dataset", "runs", "sections"):
        _check_type(results[key], dict, f"'{key}'", source)
    dataset = results["dataset"]
    for key in DATASET_KEYS:
        if key not in dataset:
            raise DataError(f"{source} has no 'dataset.{key}' key; {RERUN}")
    for key, kind in DATASET_TYPES.items():
        _check_type(dataset[key], kind, f"'dataset.{key}'", source)
    for name, section in results["sections"].items():
        _check_type(section, dict, f"section '{name}'", source)
    for run_key, run in results["runs"].items():
        _check_type(run, dict, f"run {run_key}", source)
        for key in RUN_KEYS:
            if key not in run:
                raise DataError(f"{source}: run {run_key} has no '{key}' key; {RERUN}")
        for key, kind in RUN_TYPES.items():
            _check_type(run[key], kind, f"run {run_key} '{key}'", source)
    check_values(results, source)


def _check_type(value: Any, kind: type, field: str, source: str) -> None:
    if not isinstance(value, kind):
        names: dict[type, str] = {dict: "a JSON object", list: "a JSON array", str: "a string"}
        expected = names[kind]
        raise DataError(f"{source}: {field} must be {expected}, not {_json_type(value)}; {RERUN}")


def check_references(
    results: Mapping[str, Any], artifacts: Mapping[str, np.ndarray], source: str
) -> None:
    """Raise DataError naming ``source`` unless every run and array the sections name exists.

    Expects results that passed check_structure. Checks that every run key a
    section names is in "runs" and that the arrays the prediction and
    feature-map sections draw are present.
    """
    study = Study(results, artifacts)
    for name in results["sections"]:
        for run_key in study.section_keys(name):
            if run_key not in results["runs"]:
                raise DataError(
                    f"{source}: section '{name}' names run {run_key}, which is not in 'runs'; "
                    f"{RERUN}"
                )
    for name in _required_arrays(results["sections"]):
        if name not in artifacts:
            raise DataError(f"artifacts.npz beside {source} has no array '{name}'; {RERUN}")


# ---------------------------------------------------------------------------
# Markdown


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_table(table: Table) -> list[str]:
    lines = []
    if table.caption:
        lines += [f"*{table.caption}*", ""]
    lines.append("| " + " | ".join(_markdown_cell(column) for column in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    for row in table.rows:
        lines.append("| " + " | ".join(_markdown_cell(cell) for cell in row) + " |")
    return [*lines, ""]


def _markdown_block(block: Block) -> list[str]:
    if isinstance(block, Paragraph):
        return [block.text, ""]
    if isinstance(block, Code):
        return ["```", block.text, "```", ""]
    if isinstance(block, Table):
        return _markdown_table(block)
    return [f"![{block.caption}](figures/{block.name}.png)", "", f"*{block.caption}*", ""]


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """Render sections as Markdown, numbered from 0, with figures as relative image links."""
    lines = [f"# {title}", ""]
    for number, section in enumerate(sections):
        lines += [f"## {number}. {section.title}", ""]
        for block in section.blocks:
            lines += _markdown_block(block)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .15em; margin-top: 2em; }
nav ol { columns: 2; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; }
pre { background: #f5f5f5; padding: .6em; overflow-x: auto; font-size: 1em; }
""".strip()


def _html_table(table: Table) -> str:
    parts = ["<table>"]
    if table.caption:
        parts.append(f"<caption>{html.escape(table.caption)}</caption>")
    parts.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr>")
    for row in table.rows:
        parts.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _html_block(block: Block, images: Mapping[str, bytes]) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text)}</pre>"
    if isinstance(block, Table):
        return _html_table(block)
    encoded = base64.b64encode(images[block.name]).decode("ascii")
    caption = html.escape(block.caption)
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def render_html(title: str, sections: Sequence[Section], images: Mapping[str, bytes]) -> str:
    """Render sections as one self-contained HTML page.

    ``images`` maps each figure name to its PNG bytes, embedded as a data URI.
    """
    toc = "".join(
        f'<li><a href="#{section.anchor}">{html.escape(section.title)}</a></li>'
        for section in sections
    )
    body = []
    for number, section in enumerate(sections):
        body.append(f'<section id="{section.anchor}">')
        body.append(f"<h2>{number}. {html.escape(section.title)}</h2>")
        body += [_html_block(block, images) for block in section.blocks]
        body.append("</section>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<nav><ol start="0">{toc}</ol></nav>\n'
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------
# Entry point

# Every figure name the section builders use. A rebuild deletes a stale file
# in figures/ only when its name is one of these, so a user's own files stay.
# NOTE: a new figure name in a section builder must be added here as well, or
# a rebuild leaves its file behind after the section disappears.
FIGURE_FILE = re.compile(
    r"(loss_curves|accuracy_curves|weight_histograms|weight_evolution"
    r"|stride_kernel_accuracy|stride_kernel_cost"
    r"|predictions_correct|predictions_wrong|predictions_confident_wrong|confusion_matrix"
    r"|feature_maps_(0|[1-9][0-9]*)"
    r"|l2_accuracy|l2_weight_norm|l2_histograms|preprocessing_stages)\.png"
)


def write_report(
    run_dir: Path,
    results: dict[str, Any] | None = None,
    artifacts: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write ``figures/*.png``, ``report.md`` and ``report.html`` into ``run_dir``.

    ``results`` and ``artifacts`` are read from ``run_dir/results.json`` and
    ``run_dir/artifacts.npz`` when not given. Every figure is drawn and both
    reports are rendered before the first file is written, so invalid input
    leaves the previous report and its figures untouched. After both reports
    are written, figures/*.png files with a cnnlab figure name that the new
    report does not use are deleted. Returns every written path: the reports
    under "md" and "html", each figure under its path relative to ``run_dir``
    ("figures/NAME.png"). Raises DataError for missing or corrupt inputs and
    OutputError when a file cannot be written.
    """
    run_dir = Path(run_dir)
    source = str(run_dir / "results.json")
    from_disk = results is None
    if results is None:
        results = load_results(run_dir)
    check_structure(results, source)
    if artifacts is None:
        artifacts_path = run_dir / "artifacts.npz"
        needed = _required_arrays(results["sections"])
        if needed and not artifacts_path.exists():
            raise DataError(
                f"{artifacts_path} not found, but the report draws its arrays ({needed[0]}, ...); "
                f"{RERUN}"
            )
        artifacts = load_artifacts(run_dir)
    try:
        check_references(results, artifacts, source)
        study = Study(results, artifacts)
        title = f"cnnlab report: {study.dataset_name}"
        sections = build_sections(study, run_dir)
        images = _draw_figures(sections)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError) as exc:
        if not from_disk:
            raise  # the study's own results: a bug, not bad input
        # An edited file is the likely cause, but a bug in cnnlab reads the same here.
        raise DataError(
            f"failed to build the report from {source} ({type(exc).__name__}: {exc}); "
            f"if the file was edited, {RERUN}; otherwise rerun with --debug and report the "
            "traceback"
        ) from exc
    markdown = render_markdown(title, sections)
    page = render_html(title, sections, images).encode("utf-8")

    # NOTE: a write that fails here (a full disk, say) can leave new figures
    # beside the previous report.md, because several files cannot be replaced
    # in one atomic step. Each file on its own is replaced atomically.
    written: dict[str, Path] = {}
    for name, data in images.items():
        path = run_dir / "figures" / f"{name}.png"
        atomic_write_bytes(path, data)
        written[f"figures/{name}.png"] = path
    log.info("wrote %d figures to %s", len(images), run_dir / "figures")
    markdown_path = run_dir / "report.md"
    atomic_write_text(markdown_path, markdown)
    written["md"] = markdown_path
    html_path = run_dir / "report.html"
    atomic_write_bytes(html_path, page)
    written["html"] = html_path
    log.info("wrote %s and %s", markdown_path, html_path)

    remove_stale_figures(run_dir / "figures", set(images))
    return written


def _draw_figures(sections: Sequence[Section]) -> dict[str, bytes]:
    """Draw every figure of ``sections`` in a temporary folder and return its PNG bytes by name."""
    images: dict[str, bytes] = {}
    try:
        staging = tempfile.TemporaryDirectory(prefix="cnnlab-figures-")
    except OSError as exc:
        raise OutputError(
            f"cannot create a temporary folder for the figures: {exc.strerror or exc}; "
            "set TMPDIR to a writable folder"
        ) from exc
    with staging as folder:
        for section in sections:
            for block in section.blocks:
                if isinstance(block, FigureSpec):
                    path = Path(folder) / f"{block.name}.png"
                    block.draw(path)
                    images[block.name] = path.read_bytes()
    return images


def remove_stale_figures(folder: Path, used: set[str]) -> list[Path]:
    """Delete the files in ``folder`` with a cnnlab figure name whose figure is not in ``used``.

    ``used`` contains figure names without the ".png" suffix. Files with other
    names, symbolic links and folders are kept. A file that cannot be deleted
    is logged and kept, because the report that no longer uses it is already
    written. Returns the deleted paths.
    """
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot list %s to remove unused figures: %s", folder, exc.strerror)
        return []
    removed = []
    for path in entries:
        if not FIGURE_FILE.fullmatch(path.name) or path.stem in used:
            continue
        if path.is_symlink() or not path.is_file():
            continue
        try:
            path.unlink()
        except OSError as exc:
            log.warning("cannot remove the unused figure %s: %s", path, exc.strerror)
            continue
        removed.append(path)
    if removed:
        names = ", ".join(path.name for path in removed)
        log.info("removed %d figures that the report no longer uses: %s", len(removed), names)
    return removed
