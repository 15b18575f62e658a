"""Download dataset files with pooch, trying each mirror in turn."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pooch
import requests  # a dependency of pooch, whose HTTP downloader raises requests' exceptions

logger = logging.getLogger(__name__)


class DownloadError(Exception):
    """All mirrors failed for one file; the dataset reader turns this into a DataError.

    The message is only the reason, in a few standard words such as "could not connect",
    so that the reader's one-line error stays short. The last mirror's exception is the
    __cause__, for --debug.
    """


def download_file(urls: Sequence[str], target: Path, *, known_hash: str | None) -> Path:
    """Download one file to target from the first of urls that works and return its path.

    pooch (1.9) writes to a temporary file and moves it into place only when the download
    finished and matched known_hash, so a failed attempt leaves no partial file.
    known_hash=None skips pooch's check. Use it for files whose compressed bytes differ
    between mirrors, and verify their content after the download.
    """
    logger.info("downloading %s to %s", target.name, target.parent)
    reasons: list[str] = []
    last_error: Exception | None = None
    for url in urls:
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
            # The full text, with urllib3's connection details, is for debugging only.
            logger.debug("download of %s failed: %s", url, error)
            reasons.append(describe_download_error(error))
            last_error = error
            continue
        return Path(downloaded)

    # The message lists each distinct reason once, in mirror order, so two offline mirrors
    # give "could not connect".
    raise DownloadError(", ".join(dict.fromkeys(reasons))) from last_error


def describe_download_error(error: Exception) -> str:
    """Return a few standard words for why one download attempt failed.

    Timeout is tested before ConnectionError because requests' ConnectTimeout is both.
    """
    if isinstance(error, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(error, requests.exceptions.HTTPError):
        response = error.response
        if response is None:
            return "HTTP error"
        return f"HTTP {response.status_code} {response.reason or ''}".rstrip()
    if isinstance(error, requests.exceptions.ConnectionError):
        return "could not connect"
    if isinstance(error, requests.exceptions.RequestException):
        return type(error).__name__  # for example ChunkedEncodingError, a cut-off transfer
    if isinstance(error, ValueError) and "hash" in str(error):
        return "checksum mismatch"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # a local failure, such as "Permission denied" on the folder
    return _short_reason(error)


def _short_reason(error: Exception, limit: int = 120) -> str:
    reason = " ".join(str(error).split()) or type(error).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
