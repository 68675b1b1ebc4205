"""Whole objects by URI, local or S3 alike: the API most callers use, one store lookup per call."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from okvqa_k8s.storage.base import ObjectInfo
from okvqa_k8s.storage.registry import store_for


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
