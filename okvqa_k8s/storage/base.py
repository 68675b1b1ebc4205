"""What every store shares: the `Store` protocol, object metadata, its errors and the whole-object retry.

Staging, fetch and checkpoint sync are written once against `Store`, so `--local` runs and the demo take
the same code paths as S3 runs; only the byte movement differs. The implementations (`local`, `s3`)
depend on this module alone, and only `registry` knows them both.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from okvqa_k8s.errors import TemporaryError, UserError

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


def with_retries(action: Callable[[], T], attempts: int = WHOLE_OBJECT_ATTEMPTS) -> T:
    """Repeat a whole-object transfer (+ checksum check) that failed temporarily, with jittered backoff.

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
