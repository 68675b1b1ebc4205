"""A small remote index of sha256 per object, so unchanged objects are never re-read to be compared.

S3 listings give size and ETag, not sha256 (multipart ETags are not content hashes). The index stores
the sha256 we computed before uploading next to the ETag the store reported afterwards; an entry is
trusted only while the listing still shows that same ETag and size, i.e. nobody rewrote the object.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from okvqa_k8s.storage.base import ObjectInfo, Store
from okvqa_k8s.storage.uri import join

INDEX_NAME = ".okvqa-index.json"
FLUSH_INTERVAL_S = 1.0


def valid_entries(raw: Any, listing: dict[str, ObjectInfo]) -> dict[str, dict[str, Any]]:
    """Entries whose object still exists with the recorded size and change token."""
    if not isinstance(raw, dict):
        return {}
    valid: dict[str, dict[str, Any]] = {}
    for key, entry in raw.items():
        info = listing.get(key)
        if (
            isinstance(entry, dict)
            and info is not None
            and (entry.get("size"), entry.get("etag")) == (info.size, info.etag)
            and isinstance(entry.get("sha256"), str)
        ):
            valid[key] = entry
    return valid


class RemoteIndex:
    """Thread-safe; written back at most once a second while busy, and on `flush(force=True)`."""

    def __init__(self, store: Store, uri: str, listing: dict[str, ObjectInfo]) -> None:
        self._store = store
        self._uri = join(uri, INDEX_NAME)
        raw: Any = {}
        if INDEX_NAME in listing:
            try:
                raw = json.loads(store.read_bytes(self._uri))
            except (FileNotFoundError, ValueError):
                raw = {}  # a lost or garbled index only costs re-uploads
        self._entries = valid_entries(raw, listing)
        self._lock = threading.Lock()
        self._dirty = False
        self._last_flush = 0.0

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._entries.get(key)

    def record(self, key: str, sha256: str, info: ObjectInfo, **extra: Any) -> None:
        with self._lock:
            self._entries[key] = {"size": info.size, "etag": info.etag, "sha256": sha256, **extra}
            self._dirty = True
        self.flush()

    def forget(self, key: str) -> None:
        with self._lock:
            self._dirty = self._entries.pop(key, None) is not None or self._dirty

    def flush(self, force: bool = False) -> None:
        with self._lock:
            if not self._dirty or (not force and time.monotonic() - self._last_flush < FLUSH_INTERVAL_S):
                return
            data = json.dumps(self._entries, indent=1, sort_keys=True).encode()
            self._store.write_bytes(self._uri, data)
            self._dirty = False
            self._last_flush = time.monotonic()
