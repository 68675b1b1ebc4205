"""The `Store` protocol and its local-filesystem implementation, plus the URI → store dispatch.

Every caller (staging, fetch, checkpoint sync) is written once against `Store`, so `--local` runs and
the demo exercise the same code paths as S3 runs; only the byte movement differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from okvqa_k8s.errors import TemporaryError, UserError
from okvqa_k8s.fsutil import atomic_path, atomic_write_bytes
from okvqa_k8s.storage.uri import parse

T = TypeVar("T")
Buffer = bytes | bytearray
Progress = Callable[[int], None]

WHOLE_OBJECT_ATTEMPTS = 4
# Part size of multipart transfers; objects above it count as "big" when splitting connections.
MULTIPART_CHUNK = 16 * 2**20


class TransientStorageError(UserError, TemporaryError):
    """A request still failing after the client's own retries; a whole-object retry may get through.

    A `UserError` too: when the whole-object retries run out it is what the user reads.
    """


class ChecksumMismatch(UserError, TemporaryError):
    """Bytes read back differ from the recorded sha256: a torn transfer (retried) or a corrupt object."""


@dataclass(frozen=True)
class ObjectInfo:
    """Size plus an opaque change token: the S3 ETag, or mtime+size for local files.

    The token is what lets an index of sha256 values be trusted without re-reading the object: if the
    token recorded at upload time still matches the listing, the object has not been rewritten since.
    """

    size: int
    etag: str


class Store(Protocol):
    """Byte storage addressed by full URIs of one scheme; `list` keys are relative to the prefix."""

    def read_bytes(self, uri: str) -> bytes:
        """Raise FileNotFoundError when the object does not exist."""
        ...

    def write_bytes(self, uri: str, data: bytes) -> None: ...

    def read_stream(self, uri: str, consume: Callable[[BinaryIO], T]) -> T:
        """Hand the object's byte stream to `consume`; read errors surface as storage errors."""
        ...

    def info(self, uri: str) -> ObjectInfo | None: ...

    def list(self, prefix_uri: str) -> dict[str, ObjectInfo]:
        """Every object under the directory-like prefix, keyed by its posix path relative to it."""
        ...

    def upload_file(
        self, path: Path, uri: str, *, concurrency: int = 4, progress: Progress | None = None
    ) -> None: ...

    def upload_parts(
        self, parts: Iterable[Buffer], uri: str, *, concurrency: int = 4, progress: Progress | None = None
    ) -> None:
        """Store the concatenation of `parts`, uploading each while later ones are still produced.

        Every part but the last must be MULTIPART_CHUNK bytes (S3 multipart rules); a part may be
        handed to another thread, so the producer must not reuse its buffer.
        """
        ...

    def download_file(
        self, uri: str, path: Path, *, concurrency: int = 4, progress: Progress | None = None
    ) -> None:
        """Write to `path` atomically (temp file + rename); FileNotFoundError when missing."""
        ...

    def delete(self, uri: str) -> None: ...

    def delete_prefix(self, prefix_uri: str) -> int: ...


@contextlib.contextmanager
def producing(parts: Iterable[Buffer]) -> Iterator[Iterator[Buffer]]:
    """An iterator over `parts` that is closed on the way out, failure included.

    A failed upload stops pulling parts; closing the producer (a generator packing a shard) releases its
    open file and part buffer now instead of whenever the garbage collector breaks the exception's cycle.
    """
    iterator = iter(parts)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _copy_atomic(src: Path, dest: Path, progress: Progress | None) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    if progress is not None:
        progress(dest.stat().st_size)


class LocalStore:
    """Plain directories: the default for `--local` runs, the demo and tests without a server."""

    @staticmethod
    def _path(uri: str) -> Path:
        return Path(parse(uri).path)

    def read_bytes(self, uri: str) -> bytes:
        return self._path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        atomic_write_bytes(self._path(uri), data)

    def read_stream(self, uri: str, consume: Callable[[BinaryIO], T]) -> T:
        with open(self._path(uri), "rb") as fh:
            return consume(fh)

    def info(self, uri: str) -> ObjectInfo | None:
        path = self._path(uri)
        if not path.is_file():
            return None
        return _local_info(path.stat())

    def list(self, prefix_uri: str) -> dict[str, ObjectInfo]:
        root = self._path(prefix_uri)
        found: dict[str, ObjectInfo] = {}
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                if path.is_file():
                    found[path.relative_to(root).as_posix()] = _local_info(path.stat())
        return found

    def upload_file(
        self, path: Path, uri: str, *, concurrency: int = 4, progress: Progress | None = None
    ) -> None:
        _copy_atomic(Path(path), self._path(uri), progress)

    def upload_parts(
        self, parts: Iterable[Buffer], uri: str, *, concurrency: int = 4, progress: Progress | None = None
    ) -> None:
        with producing(parts) as chunks, atomic_path(self._path(uri)) as tmp, open(tmp, "wb") as fh:
            for part in chunks:
                fh.write(part)
                if progress is not None:
                    progress(len(part))

    def download_file(
        self, uri: str, path: Path, *, concurrency: int = 4, progress: Progress | None = None
    ) -> None:
        _copy_atomic(self._path(uri), Path(path), progress)

    def delete(self, uri: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(uri).unlink()

    def delete_prefix(self, prefix_uri: str) -> int:
        root = self._path(prefix_uri)
        count = len(self.list(prefix_uri))
        shutil.rmtree(root, ignore_errors=True)
        return count


def _local_info(st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(size=st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}")


_LOCAL = LocalStore()


def store_for(uri: str) -> Store:
    """The store serving `uri`; S3 clients are cached per credential/endpoint environment."""
    if parse(uri).scheme == "s3":
        from okvqa_k8s.storage.s3 import s3_store

        return s3_store()
    return _LOCAL


def with_retries(action: Callable[[], T], attempts: int = WHOLE_OBJECT_ATTEMPTS) -> T:
    """Repeat a whole-object transfer (+ checksum check) that failed transiently, with jittered backoff.

    The S3 client already retries single requests; this outer loop covers what it cannot see: a body
    that arrived complete but with the wrong bytes, or a multipart transfer that gave up half-way.
    """
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except TemporaryError:
            if attempt == attempts:
                raise
            time.sleep(random.uniform(0, min(0.1 * 2**attempt, 5.0)))
    raise AssertionError("unreachable")


# -- URI-level conveniences: the API most callers use, one store lookup per call ----------------------
def read_bytes(uri: str) -> bytes:
    """Raise FileNotFoundError when `uri` does not exist (local or S3 alike)."""
    return store_for(uri).read_bytes(uri)


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic for local paths (temp + rename); an S3 PUT is atomic by nature."""
    store_for(uri).write_bytes(uri, data)


def exists(uri: str) -> bool:
    return store_for(uri).info(uri) is not None


def list_objects(prefix_uri: str) -> dict[str, ObjectInfo]:
    return store_for(prefix_uri).list(prefix_uri)


def upload_file(path: str | os.PathLike[str], uri: str, *, concurrency: int = 4) -> None:
    store_for(uri).upload_file(Path(path), uri, concurrency=concurrency)


def download_file(uri: str, path: str | os.PathLike[str], *, concurrency: int = 4) -> None:
    store_for(uri).download_file(uri, Path(path), concurrency=concurrency)


def delete_prefix(prefix_uri: str) -> int:
    """Delete everything under the directory-like prefix; returns how many objects went."""
    return store_for(prefix_uri).delete_prefix(prefix_uri)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2) + "\n").encode())
