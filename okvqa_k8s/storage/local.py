"""`Store` on plain directories: the default for `--local` runs, the demo and tests without a server."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, TypeVar

from okvqa_k8s.fsutil import atomic_path, atomic_write_bytes
from okvqa_k8s.storage.base import Buffer, ObjectInfo, Progress, producing
from okvqa_k8s.storage.uri import parse

T = TypeVar("T")


def _copy_atomic(src: Path, dest: Path, progress: Progress | None) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    if progress is not None:
        progress(dest.stat().st_size)


def _local_info(st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(size=st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}")


class LocalStore:
    """Objects are files under their path; every write lands through a temp sibling and a rename."""

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
