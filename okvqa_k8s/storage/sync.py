"""Directory-tree sync for checkpoints and outputs: move only files whose size or sha256 changed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from okvqa_k8s.errors import UserError
from okvqa_k8s.fsutil import sha256_file
from okvqa_k8s.progress import bar
from okvqa_k8s.storage.base import ChecksumMismatch, with_retries
from okvqa_k8s.storage.index import INDEX_NAME, RemoteIndex
from okvqa_k8s.storage.parallel import hash_files, part_concurrency, run_parallel
from okvqa_k8s.storage.registry import store_for
from okvqa_k8s.storage.shards import safe_relpath
from okvqa_k8s.storage.uri import join


def plan_upload(local: dict[str, tuple[int, str]], indexed: dict[str, dict[str, Any] | None]) -> list[str]:
    """Paths whose (size, sha256) differ from the still-valid index entry for the remote object."""
    todo = []
    for rel, (size, sha) in sorted(local.items()):
        entry = indexed.get(rel)
        if entry is None or entry.get("size") != size or entry.get("sha256") != sha:
            todo.append(rel)
    return todo


def _walk(root: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file():
                found[path.relative_to(root).as_posix()] = path.stat().st_size
    return found


def sync_up(local_dir: str | os.PathLike[str], uri: str, *, workers: int = 8) -> int:
    """Upload the tree under `local_dir` to `uri`; returns bytes uploaded. Remote extras are kept."""
    return sync_up_hashed(local_dir, uri, workers=workers)[0]


def sync_up_hashed(
    local_dir: str | os.PathLike[str], uri: str, *, workers: int = 8
) -> tuple[int, dict[str, str]]:
    """`sync_up`, also returning the sha256 of every local file (relative path → hex digest).

    Local files are hashed every time (cheap next to a transfer); remote objects never are: the index
    written next to them says what they hold as long as their ETag has not changed. Checkpoints keep
    the digests in their node markers, to verify every file before it is loaded again.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory, nothing to upload to {uri}")
    sizes = _walk(root)
    hashes = hash_files(root, list(sizes), list(sizes.values()), workers)
    store = store_for(uri)
    index = RemoteIndex(store, uri, store.list(uri))
    todo = plan_upload(
        {rel: (sizes[rel], hashes[rel]) for rel in sizes}, {rel: index.get(rel) for rel in sizes}
    )
    concurrency = part_concurrency(len(todo), workers)

    with bar(total=sum(sizes[rel] for rel in todo), desc="sync up", unit="B", unit_scale=True) as progress:

        def upload(rel: str) -> int:
            target = join(uri, rel)

            def attempt() -> Any:
                store.upload_file(root / rel, target, concurrency=concurrency, progress=progress.update)
                info = store.info(target)
                if info is None or info.size != sizes[rel]:
                    raise ChecksumMismatch(
                        f"{target}: uploaded {sizes[rel]} bytes, the store holds a different size"
                    )
                return info

            index.record(rel, hashes[rel], with_retries(attempt))
            return sizes[rel]

        try:
            return sum(run_parallel([lambda r=rel: upload(r) for rel in todo], workers)), hashes
        finally:
            index.flush(force=True)


def sync_down(uri: str, local_dir: str | os.PathLike[str], *, workers: int = 8) -> int:
    """Download every object under `uri` into `local_dir`; returns bytes downloaded.

    A local file is kept when its size and sha256 match the index; objects without an index entry
    (e.g. markers) are always downloaded, since nothing proves the local copy equal.
    """
    store = store_for(uri)
    listing = store.list(uri)
    index = RemoteIndex(store, uri, listing)
    remote = {rel: info for rel, info in listing.items() if rel != INDEX_NAME}
    for rel in remote:
        if safe_relpath(rel) != rel:
            raise UserError(f"refusing to sync {join(uri, rel)}: its key escapes {local_dir}")
    root = Path(local_dir)
    concurrency = part_concurrency(len(remote), workers)

    with bar(
        total=sum(i.size for i in remote.values()), desc="sync down", unit="B", unit_scale=True
    ) as progress:

        def ensure(rel: str) -> int:
            path = root / rel
            entry = index.get(rel)
            size = remote[rel].size
            if (
                entry
                and path.is_file()
                and path.stat().st_size == size
                and sha256_file(path) == entry["sha256"]
            ):
                progress.update(size)
                return 0

            def attempt() -> None:
                store.download_file(join(uri, rel), path, concurrency=concurrency, progress=progress.update)
                if entry and sha256_file(path) != entry["sha256"]:
                    raise ChecksumMismatch(
                        f"{join(uri, rel)} does not match the sha256 recorded when it was uploaded"
                    )

            with_retries(attempt)
            return size

        jobs: list[Callable[[], int]] = [lambda r=rel: ensure(r) for rel in sorted(remote)]
        return sum(run_parallel(jobs, workers))
