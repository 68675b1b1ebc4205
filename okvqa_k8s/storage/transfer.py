"""`data stage` and `data fetch`: a prepared dataset ⇄ tar shards + JSON files + a manifest in a store.

Thousands of small JPEGs are slow to move one request at a time, so images travel in large tar shards
with parallel multipart transfers. Shards are built deterministically (sorted members, fixed tar
metadata), which makes a re-run produce identical bytes and lets it skip everything already uploaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from okvqa_k8s.errors import UserError
from okvqa_k8s.fsutil import CHUNK, atomic_directory, atomic_write_json
from okvqa_k8s.progress import bar
from okvqa_k8s.storage.index import RemoteIndex
from okvqa_k8s.storage.parallel import hash_files, part_concurrency, run_parallel
from okvqa_k8s.storage.shards import (
    IMAGES_DIR,
    MANIFEST_NAME,
    SHARDS_DIR,
    Member,
    ShardPlan,
    build_manifest,
    check_member,
    missing_member,
    parse_manifest,
    plan_shards,
    safe_relpath,
    tar_footprint,
)
from okvqa_k8s.storage.store import (
    MULTIPART_CHUNK,
    ChecksumMismatch,
    Progress,
    Store,
    store_for,
    with_retries,
)
from okvqa_k8s.storage.uri import join

FETCH_MARKER = ".okvqa-fetched.json"
DEFAULT_SHARD_SIZE = 256 * 2**20


class _HashingWriter:
    """File-like sink for tarfile that hashes and counts the shard while it is written."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._raw.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


class _HashingReader:
    """File-like source that hashes, counts and reports everything read through it."""

    def __init__(self, raw: BinaryIO, progress: Progress | None = None) -> None:
        self._raw = raw
        self._progress = progress
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        self.size += len(data)
        if self._progress is not None:
            self._progress(len(data))
        return data


def write_shard(src: Path, plan: ShardPlan, out: Path) -> tuple[int, str]:
    """Write the shard tar with fixed metadata (mtime 0, root, 0644) so equal inputs give equal bytes."""
    with open(out, "wb") as raw:
        sink = _HashingWriter(raw)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for member in plan.members:
                info = tarfile.TarInfo(member.path)
                info.size, info.mtime, info.mode = member.size, 0, 0o644
                with open(src / member.path, "rb") as fh:
                    reader = _HashingReader(fh)
                    tar.addfile(info, reader)  # type: ignore[arg-type]
                if reader.digest.hexdigest() != member.sha256:
                    raise UserError(f"{src / member.path} changed while staging; re-run the command")
    return sink.size, sink.digest.hexdigest()


def _scan(src: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(small files, images): everything outside images/ is uploaded as is, images go into shards."""
    small: list[tuple[str, int]] = []
    images: list[tuple[str, int]] = []
    for dirpath, dirnames, names in os.walk(src):
        dirnames.sort()
        for name in sorted(names):
            path = Path(dirpath) / name
            rel = path.relative_to(src).as_posix()
            if rel == FETCH_MARKER or not path.is_file():
                continue
            (images if rel.startswith(f"{IMAGES_DIR}/") else small).append((rel, path.stat().st_size))
    return small, images


def _upload_verified(
    store: Store, path: Path, uri: str, size: int, concurrency: int, progress: Progress
) -> Any:
    """Upload and confirm the store holds `size` bytes; the returned info's ETag goes into the index."""

    def attempt() -> Any:
        store.upload_file(path, uri, concurrency=concurrency, progress=progress)
        info = store.info(uri)
        if info is None or info.size != size:
            held = "nothing" if info is None else f"{info.size} bytes"
            raise ChecksumMismatch(f"{uri}: uploaded {size} bytes but the store holds {held}")
        return info

    return with_retries(attempt)


def stage_dataset(
    src_dir: str | os.PathLike[str],
    uri: str,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int = 8,
    verify: bool = False,
) -> dict[str, Any]:
    """Upload a prepared dataset as shards + JSON files + manifest; what is already there is skipped.

    The manifest is written last (and removed first when anything changes), so a reader never sees a
    manifest that points at shards still being replaced.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise UserError(f"{src}: not a directory (expected a dataset made by `okvqa-k8s data prepare`)")
    small, images = _scan(src)
    if not small and not images:
        raise UserError(f"{src}: the dataset directory is empty")
    store = store_for(uri)
    listing = store.list(uri)  # first: a wrong bucket or endpoint fails before hours of hashing
    index = RemoteIndex(store, uri, listing)
    everything = small + images
    hashes = hash_files(src, [rel for rel, _ in everything], [size for _, size in everything], workers)
    files = [Member(rel, size, hashes[rel]) for rel, size in small]
    plans = plan_shards([Member(rel, size, hashes[rel]) for rel, size in images], shard_size)
    todo_files = [f for f in files if (index.get(f.path) or {}).get("sha256") != f.sha256]
    todo_shards = [p for p in plans if (index.get(p.name) or {}).get("content") != p.content_digest]
    if (todo_files or todo_shards) and MANIFEST_NAME in listing:
        store.delete(join(uri, MANIFEST_NAME))

    estimate = sum(f.size for f in todo_files) + sum(
        sum(tar_footprint(m.size) for m in p.members) + 2 * tarfile.RECORDSIZE for p in todo_shards
    )
    big = sum(1 for f in todo_files if f.size > MULTIPART_CHUNK) + sum(
        1 for p in todo_shards if sum(m.size for m in p.members) > MULTIPART_CHUNK
    )
    concurrency = part_concurrency(big, workers)
    with (
        bar(total=estimate, desc="upload", unit="B", unit_scale=True) as progress,
        tempfile.TemporaryDirectory(prefix="okvqa-stage-") as tmp,
    ):

        def upload_file(member: Member) -> int:
            info = _upload_verified(
                store, src / member.path, join(uri, member.path), member.size, concurrency, progress.update
            )
            index.record(member.path, member.sha256, info)
            return member.size

        def upload_shard(plan: ShardPlan) -> int:
            local = Path(tmp) / plan.name.replace("/", "_")
            size, sha = write_shard(src, plan, local)
            info = _upload_verified(store, local, join(uri, plan.name), size, concurrency, progress.update)
            index.record(plan.name, sha, info, content=plan.content_digest)
            local.unlink()
            return size

        jobs: list[Callable[[], int]] = [lambda f=f: upload_file(f) for f in todo_files]
        jobs += [lambda p=p: upload_shard(p) for p in todo_shards]
        try:
            uploaded = sum(run_parallel(jobs, workers))
        finally:
            index.flush(force=True)

    digests = {p.name: (index.get(p.name)["size"], index.get(p.name)["sha256"]) for p in plans}  # type: ignore[index]
    manifest = build_manifest(files, plans, digests, shard_size)
    raw = json.dumps(manifest, indent=1).encode()
    store.write_bytes(join(uri, MANIFEST_NAME), raw)

    planned = {p.name for p in plans}
    for key in sorted(listing):
        if key.startswith(f"{SHARDS_DIR}/") and key not in planned:
            store.delete(join(uri, key))
            index.forget(key)
    index.flush(force=True)
    if verify:
        _verify(store, uri, manifest, index, workers)
    return {
        "uri": uri,
        "files": len(files),
        "images": len(images),
        "shards": len(plans),
        "total_bytes": manifest["total_bytes"],
        "uploaded_objects": len(jobs),
        "uploaded_bytes": uploaded,
        "skipped_objects": len(files) + len(plans) - len(jobs),
        "verified": verify,
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
    }


def _verify(store: Store, uri: str, manifest: dict[str, Any], index: RemoteIndex, workers: int) -> None:
    """Read every object back; a bad one is dropped from the index so the next `stage` re-uploads it."""
    entries = [(f["path"], f) for f in manifest["files"]] + [(s["name"], s) for s in manifest["shards"]]
    with bar(total=manifest["total_bytes"], desc="verify", unit="B", unit_scale=True) as progress:

        def check(key: str, entry: dict[str, Any]) -> None:
            source = join(uri, key)

            def consume(stream: BinaryIO) -> None:
                reader = _HashingReader(stream, progress.update)
                _drain(reader)
                _expect_digest(reader, entry, source)

            try:
                _read_listed(store, source, consume)
            except ChecksumMismatch:
                index.forget(key)
                index.flush(force=True)
                raise

        run_parallel([lambda k=k, e=e: check(k, e) for k, e in entries], workers)


def _read_listed(store: Store, source: str, consume: Callable[[BinaryIO], None]) -> None:
    """Stream an object the manifest lists, retrying whole reads; a missing one is a clear error."""
    try:
        with_retries(lambda: store.read_stream(source, consume))
    except FileNotFoundError:
        raise UserError(f"{source} is listed in the manifest but missing from the store") from None


def _drain(reader: _HashingReader) -> None:
    while reader.read(CHUNK):
        pass


def _expect_digest(reader: _HashingReader, entry: dict[str, Any], source: str) -> None:
    """Raise ChecksumMismatch (retried, then shown) unless the bytes read match the manifest entry."""
    got = reader.digest.hexdigest()
    if (reader.size, got) != (entry["size"], entry["sha256"]):
        raise ChecksumMismatch(
            f"{source} is corrupt: sha256 {got[:16]}… ({reader.size} bytes), the manifest says "
            f"{entry['sha256'][:16]}… ({entry['size']} bytes); re-run `okvqa-k8s data stage` to repair it"
        )


def _copy_member(src: BinaryIO, out: Path) -> None:
    with open(out, "xb") as dst:  # "x": never follow or overwrite anything already there
        while chunk := src.read(CHUNK):
            dst.write(chunk)


def _extract_stream(
    stream: BinaryIO, shard: dict[str, Any], root: Path, source: str, progress: Progress
) -> None:
    """Verify and extract a shard as it streams in, with no temp copy of the tar.

    Every member is checked before a byte of it is written; the shard's sha256, checked at the end,
    covers every member's bytes (staging verified each member's sha256 while building the tar, so
    hashing members again here would only double the CPU cost). On any failure this shard's files are
    removed again (and the caller's atomic directory discards everything): nothing of a refused shard
    survives.
    """
    reader = _HashingReader(stream, progress)
    expected = {m["path"]: m["size"] for m in shard["members"]}
    refuse = f"refusing shard {shard['name']} from {source}"
    seen: set[str] = set()
    written: list[Path] = []
    try:
        try:
            with tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK) as tar:  # type: ignore[call-overload]
                for info in tar:
                    problem = check_member(info, expected, seen)
                    if problem:
                        _drain(reader)
                        _expect_digest(reader, shard, source)  # a damaged header is corruption, retried
                        raise UserError(f"{refuse}: {problem}")
                    rel = safe_relpath(info.name)
                    assert rel is not None  # check_member refused anything else
                    out = root / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    written.append(out)
                    _copy_member(tar.extractfile(info), out)  # type: ignore[arg-type]
        except tarfile.TarError as exc:
            _drain(reader)
            _expect_digest(reader, shard, source)  # garbage bytes are corruption, not a hostile tar
            raise UserError(f"{refuse}: not a readable tar ({exc})") from None
        _drain(reader)  # the archive's end padding is part of the checksum
        _expect_digest(reader, shard, source)
        problem = missing_member(expected, seen)
        if problem:
            raise UserError(f"{refuse}: {problem}")
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def _stream_file(stream: BinaryIO, entry: dict[str, Any], out: Path, source: str, progress: Progress) -> None:
    """Write one plain file through a temp name, renamed only once its sha256 matched."""
    reader = _HashingReader(stream, progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with open(tmp, "wb") as dst:
            while chunk := reader.read(CHUNK):
                dst.write(chunk)
        _expect_digest(reader, entry, source)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _fetched_digest(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("manifest_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def fetch_dataset(uri: str, dest_dir: str | os.PathLike[str], *, workers: int = 8) -> Path:
    """Download, verify and extract a staged dataset into `dest_dir`, atomically.

    Shards stream straight into extraction (one GET each, `workers` at a time). A marker holding the
    manifest's sha256 makes a re-run on a complete copy a no-op (pods restart); a different manifest
    replaces the copy. A non-empty directory without the marker is never replaced.
    """
    store = store_for(uri)
    manifest_uri = join(uri, MANIFEST_NAME)
    try:
        raw = store.read_bytes(manifest_uri)
    except FileNotFoundError:
        raise UserError(
            f"no staged dataset at {uri}: {MANIFEST_NAME} is missing (run `okvqa-k8s data stage` first)"
        ) from None
    manifest = parse_manifest(raw, manifest_uri)
    digest = hashlib.sha256(raw).hexdigest()
    dest = Path(dest_dir)
    marker = dest / FETCH_MARKER
    if _fetched_digest(marker) == digest:
        return dest
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not marker.exists())):
        raise UserError(f"{dest} exists and is not a fetched dataset; refusing to replace it")

    with (
        bar(total=manifest["total_bytes"], desc="fetch", unit="B", unit_scale=True) as progress,
        atomic_directory(dest, replace=True) as tmp,
    ):

        def fetch_file(entry: dict[str, Any]) -> None:
            source = join(uri, entry["path"])
            _read_listed(
                store, source, lambda s: _stream_file(s, entry, tmp / entry["path"], source, progress.update)
            )

        def fetch_shard(shard: dict[str, Any]) -> None:
            source = join(uri, shard["name"])
            _read_listed(store, source, lambda s: _extract_stream(s, shard, tmp, source, progress.update))

        jobs: list[Callable[[], None]] = [lambda e=e: fetch_file(e) for e in manifest["files"]]
        jobs += [lambda s=s: fetch_shard(s) for s in manifest["shards"]]
        run_parallel(jobs, workers)
        atomic_write_json(tmp / FETCH_MARKER, {"manifest_sha256": digest})
    return dest
