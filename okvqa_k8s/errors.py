"""The one exception type a user is meant to read.

Anything raised as `UserError` is printed by the CLI as a single line (`okvqa-k8s: error: ...`) with a
non-zero exit and no traceback; every other exception is a bug and keeps its traceback. Messages name
the file or field at fault and what was expected, and must never contain credentials.
"""


class UserError(Exception):
    """Bad input or an unusable environment, explained in one line."""

    exit_code = 2
