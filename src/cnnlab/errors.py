"""Exceptions that the command line turns into a one-line message and an exit code."""

from __future__ import annotations


class CnnlabError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""

    exit_code = 1


class ConfigError(CnnlabError):
    """An invalid command-line option or configuration value."""

    exit_code = 2


class DataError(CnnlabError):
    """A dataset file that is missing, unreadable, corrupt or of the wrong format."""

    exit_code = 3


class OutputError(CnnlabError):
    """An output folder or file that cannot be written."""

    exit_code = 4
