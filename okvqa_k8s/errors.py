"""The failures okvqa-k8s raises on purpose, under one root, classified by what a caller should do.

The class answers the caller's question, so nobody parses status codes or messages to decide (the split
kopf makes for its handlers, `kopf.PermanentError` / `kopf.TemporaryError(delay=...)`):

- `UserError`: bad input or an unusable environment. The CLI prints it as one line
  (`okvqa-k8s: error: ...`) with exit code 2 and no traceback. Messages name the file or field at fault
  and what was expected, and never contain credentials.
- `PermanentError`: retrying cannot help (the API refused the object itself); a run fails with it.
- `TemporaryError`: it may go through later; try again after `delay` seconds.

Any exception outside `OkvqaError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class OkvqaError(Exception):
    """Root of every deliberate failure: one `except` tells them from bugs."""

    exit_code = 1


class UserError(OkvqaError):
    """Bad input or an unusable environment, explained in one line."""

    exit_code = 2


class PermanentError(OkvqaError):
    """Retrying cannot help: the request itself is unacceptable or not allowed."""


class TemporaryError(OkvqaError):
    """Retrying may help: try again after `delay` seconds."""

    def __init__(self, message: str = "", delay: float = 60.0) -> None:
        super().__init__(message)
        self.delay = delay
