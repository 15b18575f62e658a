"""Download dataset files with pooch, trying each mirror in turn."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pooch

logger = logging.getLogger(__name__)


class DownloadError(Exception):
    """All mirrors failed for one file; the dataset reader turns this into a DataError."""


def download_file(urls: Sequence[str], target: Path, *, known_hash: str | None) -> Path:
    """Download one file to target from the first of urls that works and return its path.

    pooch (1.9) writes to a temporary file and moves it into place only when the download
    finished and matched known_hash, so a failed attempt leaves no partial file.
    known_hash=None skips pooch's check. Use it for files whose compressed bytes differ
    between mirrors, and verify their content after the download.
    """
    failures = []
    for url in urls:
        logger.info("downloading %s to %s", url, target)
        try:
            # Look up pooch.retrieve at call time so that tests can replace it.
            downloaded = pooch.retrieve(
                url,
                known_hash=known_hash,
                fname=target.name,
                path=target.parent,
                progressbar=False,
            )
        # requests' exceptions subclass OSError. pooch raises ValueError on a hash mismatch.
        except (OSError, ValueError) as error:
            logger.warning("download of %s failed: %s", url, error)
            failures.append(_short_reason(error))
            continue
        return Path(downloaded)

    # The warnings above contain each mirror's full error. The final message names
    # only the first failure, briefly, so that it stays one readable line.
    if len(failures) == 1:
        raise DownloadError(failures[0])
    raise DownloadError(f"all {len(urls)} mirrors failed, first with: {failures[0]}")


def _short_reason(error: Exception, limit: int = 120) -> str:
    reason = " ".join(str(error).split()) or type(error).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
