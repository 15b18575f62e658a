"""Run store: finished training runs kept under keys derived from their configs.

Every file is written atomically (a temporary file in the same folder, then
``os.replace``), so a crash never leaves a half-written file that a later run
would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import OutputError

# Bumped when the training code changes what a config produces, so that old
# stored runs are not reused for a config whose meaning has changed.
RUN_FORMAT = 1


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner alone; reports are meant to be shared.
FILE_MODE = 0o666 & ~_current_umask()


def run_key(config: dict[str, Any]) -> str:
    """Return 16 hex digits of the SHA-256 of the config's canonical JSON."""
    text = json.dumps({"format": RUN_FORMAT, "config": config}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_writable(path: Path) -> None:
    """Raise OutputError unless a file can be created beside ``path``; an existing file is kept."""
    path = Path(path)
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(
                    f"cannot write {path}: {folder} is a file, not a folder; choose another path"
                )
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}; choose another path") from exc
    os.close(fd)
    os.unlink(probe)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(
            f"cannot write {path}: {exc.strerror}; make its folder writable or write elsewhere"
        ) from exc
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(
            f"cannot write {path}: {exc.strerror}; free disk space, make its folder writable or "
            "write elsewhere"
        ) from exc


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False, allow_nan=False) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class RunStore:
    """Finished runs as ``<root>/<key>.json``, with weights and checkpoints beside them."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def result_path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def weights_path(self, key: str) -> Path:
        return self.root / f"{key}.weights.pt"

    def checkpoint_path(self, key: str) -> Path:
        return self.root / f"{key}.checkpoint.pt"

    def get(self, key: str) -> dict[str, Any] | None:
        """Return the stored result for ``key``, or None if absent or unreadable."""
        path = self.result_path(key)
        try:
            result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(result, dict) or result.get("key") != key or "status" not in result:
            return None
        return result

    def put(self, key: str, result: dict[str, Any]) -> None:
        atomic_write_json(self.result_path(key), result)
