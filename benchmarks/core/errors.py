"""The one exception type for bad input: the CLI prints its message on one line and exits with code 2."""
from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input (a file, an array, an option). The message names the problem, the file and the fix."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
