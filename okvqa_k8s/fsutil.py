"""Atomic file-system writes and checksums.

A failed or interrupted command must leave nothing half-written, so every output goes to a temporary
sibling first and is renamed into place only when complete (rename is atomic within a file system).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def _publishable(path: str | os.PathLike[str], directory: bool) -> None:
    """Give a temp file (0600) or directory (0700) the mode a plain open()/mkdir() would have had.

    Why: outputs are read by others too (a pod's non-root uid reading a model baked into an image, a
    teammate reading a prepared dataset); only the temp-then-rename step should be private.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large shards never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temp file beside `path` to fill; it replaces `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    _publishable(tmp, directory=False)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same directory, then rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike[str], replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `dest` to fill; it becomes `dest` only if the block succeeds.

    With `replace=False` an existing `dest` is an error raised by the caller beforehand; with
    `replace=True` the old directory is swapped out after the new one is complete.
    """
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    _publishable(tmp, directory=True)
    try:
        yield tmp
        if target.exists() and replace:
            # A name no other writer can hold (a pid is not: every pod's first process is pid 1).
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
