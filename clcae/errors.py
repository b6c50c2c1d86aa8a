"""The errors the project detects in the user's inputs (params, files, devices, signals).

``clcae.pipeline.stage_main`` and the CLI print them as one line and exit with their ``exit_code``;
any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class ClcaeError(Exception):
    """An error of the user's inputs that the project detects (params, files, devices, signals).

    :func:`stage_main` prints it as one line (``error: ...``) and exits 1 (a subclass may set
    ``exit_code`` and ``label``); anything else is a bug and keeps its traceback.
    """
    exit_code = 1
    label = "error"


class ConfigError(ClcaeError, ValueError):
    """A params value that is unknown, of the wrong type or impossible; names its key path."""


class InputError(ClcaeError, FileNotFoundError):
    """A file or folder a stage reads is missing or incomplete; says which stage makes it."""
