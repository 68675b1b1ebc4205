"""`data stage` and `data fetch`: a prepared dataset ⇄ tar shards + JSON files + a manifest in a store.

Thousands of small JPEGs are slow to move one request at a time, so images travel in large tar shards
with parallel multipart transfers. Shards are built deterministically (sorted members, fixed tar
metadata), which makes a re-run produce identical bytes and lets it skip everything already uploaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from okvqa_k8s.errors import UserError
from okvqa_k8s.fsutil import CHUNK, atomic_directory, atomic_path, atomic_write_json, sha256_file
from okvqa_k8s.progress import bar
from okvqa_k8s.storage.base import (
    MULTIPART_CHUNK,
    ChecksumMismatch,
    ObjectInfo,
    Progress,
    Store,
    with_retries,
)
from okvqa_k8s.storage.index import RemoteIndex
from okvqa_k8s.storage.parallel import part_concurrency, run_parallel
from okvqa_k8s.storage.registry import store_for
from okvqa_k8s.storage.shards import (
    IMAGES_DIR,
    MANIFEST_NAME,
    PREPARED_MANIFEST,
    SHARDS_DIR,
    Member,
    ShardLayout,
    ShardPlan,
    build_manifest,
    check_member,
    missing_member,
    parse_manifest,
    part_size_for,
    plan_shards,
    safe_relpath,
)
from okvqa_k8s.storage.tarparts import ShardParts, Stamp, changed_while_staging, stamp_of
from okvqa_k8s.storage.uri import join

FETCH_MARKER = ".okvqa-fetched.json"
DEFAULT_SHARD_SIZE = 256 * 2**20
# tarfile's stream mode re-joins its whole read buffer on every member read: with 1 MiB reads that is
# quadratic copying (2.5x slower extraction, measured); 16 KiB keeps it linear.
TAR_READ_BLOCK = 16 * 2**10


class _HashingReader:
    """File-like source that hashes, counts and reports everything read through it.

    It pulls CHUNK-sized pieces from the source and serves smaller reads from the current piece:
    tarfile asks for 512-byte headers and 16 KiB blocks, and every read of an HTTP body costs a
    Python-level round trip through urllib3, so one hash update, one progress tick and one socket
    read per MiB is what keeps `fetch` from being CPU-bound on small reads.
    """

    def __init__(self, raw: BinaryIO, progress: Progress | None = None) -> None:
        self._raw = raw
        self._progress = progress
        self.digest = hashlib.sha256()
        self.size = 0
        self._piece = b""
        self._offset = 0

    def read(self, size: int) -> bytes:
        """Up to `size` bytes (fewer at a piece boundary, like a raw stream); b"" only at the end."""
        if size < 0:
            raise ValueError("_HashingReader.read needs a size: it serves at most one piece per call")
        if self._offset == len(self._piece):
            self._piece = self._raw.read(CHUNK)
            self._offset = 0
            self.digest.update(self._piece)
            self.size += len(self._piece)
            if self._progress is not None and self._piece:
                self._progress(len(self._piece))
        end = min(len(self._piece), self._offset + size)
        data = self._piece[self._offset : end]
        self._offset = end
        return data


def nested_datasets(src: Path) -> list[str]:
    """Top-level folders of `src` that are prepared datasets of their own (they hold a manifest.json)."""
    return sorted(
        p.name
        for p in src.iterdir()
        if p.name != IMAGES_DIR and p.is_dir() and (p / PREPARED_MANIFEST).is_file()
    )


def _scan(
    src: Path, skip: tuple[str, ...] = ()
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], dict[str, Stamp]]:
    """(small files, images, stamps): files outside images/ are uploaded as is, images go into shards;
    the top-level folders in `skip` are left out.

    The stamps let packing notice a file rewritten after it was hashed without hashing it twice.
    """
    small: list[tuple[str, int]] = []
    images: list[tuple[str, int]] = []
    stamps: dict[str, Stamp] = {}
    for dirpath, dirnames, names in os.walk(src):
        if Path(dirpath) == src:
            dirnames[:] = [d for d in dirnames if d not in skip]
        dirnames.sort()
        for name in sorted(names):
            path = Path(dirpath) / name
            rel = path.relative_to(src).as_posix()
            try:
                st = path.stat()  # follows links: a link to an image stages the image
            except FileNotFoundError:  # a dangling link, or a file removed since the walk
                continue
            if rel == FETCH_MARKER or not stat.S_ISREG(st.st_mode):
                continue
            stamps[rel] = stamp_of(st)
            (images if rel.startswith(f"{IMAGES_DIR}/") else small).append((rel, st.st_size))
    return small, images, stamps


def _once(action: Callable[[], object]) -> Callable[[], None]:
    """`action` run by the first of many threads to call the result; later calls wait for it."""
    lock = threading.Lock()
    done = False

    def run() -> None:
        nonlocal done
        with lock:
            if not done:
                action()
                done = True

    return run


class _Sized(Protocol):
    @property
    def size(self) -> int: ...


S = TypeVar("S", bound=_Sized)


def _upload_verified(
    store: Store, uri: str, upload: Callable[[Progress], S], progress: Progress
) -> tuple[S, ObjectInfo]:
    """Run `upload` and confirm the store holds as many bytes as the result's `size`.

    Retried whole on transient failures. A failed attempt takes back the bytes it reported, so the bar
    never runs past its total. The returned info's ETag goes into the index.
    """

    def attempt() -> tuple[S, ObjectInfo]:
        lock, sent = threading.Lock(), [0]

        def report(count: int) -> None:
            with lock:
                sent[0] += count
            progress(count)

        try:
            result = upload(report)
            info = store.info(uri)
            if info is None or info.size != result.size:
                held = "nothing" if info is None else f"{info.size} bytes"
                raise ChecksumMismatch(f"{uri}: uploaded {result.size} bytes but the store holds {held}")
        except BaseException:
            progress(-sent[0])
            raise
        return result, info

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

    Each worker hashes one shard's files, skips the shard if the store already holds those bytes, and
    otherwise packs and uploads it part by part, so hashing, packing and uploading of different shards
    overlap. The manifest is written last (and removed before the first object is replaced), so a
    reader never sees a manifest that points at shards still being replaced.

    A top-level folder that is a prepared dataset itself (`eval/`, the evaluation set) is staged first,
    as its own dataset at `<uri>/<folder>`: fetching the dataset never downloads it, fetching
    `<uri>/<folder>` gets only it. Its summary is under "nested".
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise UserError(f"{src}: not a directory (expected a dataset made by `okvqa-k8s data prepare`)")
    nested = {
        name: stage_dataset(
            src / name, join(uri, name), shard_size=shard_size, workers=workers, verify=verify
        )
        for name in nested_datasets(src)
    }
    small, images, stamps = _scan(src, skip=tuple(nested))
    if not small and not images:
        raise UserError(f"{src}: the dataset directory is empty")
    store = store_for(uri)
    listing = store.list(uri)  # first: a wrong bucket or endpoint fails before hours of hashing
    index = RemoteIndex(store, uri, listing)
    layouts = plan_shards(images, shard_size)
    big = sum(1 for _, size in small if size > MULTIPART_CHUNK) + sum(
        1 for layout in layouts if layout.footprint > MULTIPART_CHUNK
    )
    concurrency = part_concurrency(big, workers)
    withdraw_manifest = _once(
        lambda: store.delete(join(uri, MANIFEST_NAME)) if MANIFEST_NAME in listing else None
    )
    total = sum(size for _, size in small) + sum(layout.footprint for layout in layouts)

    with bar(total=total, desc="upload", unit="B", unit_scale=True) as progress:

        def stage_file(rel: str, size: int) -> tuple[Member, bool]:
            member = Member(rel, size, sha256_file(src / rel))
            if (index.get(rel) or {}).get("sha256") == member.sha256:
                progress.update(size)
                return member, False
            withdraw_manifest()
            target = join(uri, rel)

            def send(report: Progress) -> Member:
                store.upload_file(src / rel, target, concurrency=concurrency, progress=report)
                if stamp_of((src / rel).stat()) != stamps[rel]:  # the bytes sent may not be the ones hashed
                    raise changed_while_staging(src / rel)
                return member

            _, info = _upload_verified(store, target, send, progress.update)
            index.record(rel, member.sha256, info)
            return member, True

        def stage_shard(layout: ShardLayout) -> tuple[ShardPlan, bool]:
            plan = layout.with_hashes({rel: sha256_file(src / rel) for rel, _ in layout.files})
            if (index.get(plan.name) or {}).get("content") == plan.content_digest:
                progress.update(layout.footprint)
                return plan, False
            withdraw_manifest()
            target = join(uri, plan.name)

            def send(report: Progress) -> ShardParts:
                parts = ShardParts(src, plan, stamps, part_size_for(layout.footprint, MULTIPART_CHUNK))
                store.upload_parts(parts, target, concurrency=concurrency, progress=report)
                return parts

            shard, info = _upload_verified(store, target, send, progress.update)
            index.record(plan.name, shard.sha256, info, content=plan.content_digest)
            return plan, True

        jobs: list[Callable[[], tuple[Any, bool]]] = [lambda f=f: stage_file(*f) for f in small]
        jobs += [lambda s=s: stage_shard(s) for s in layouts]
        try:
            results = run_parallel(jobs, workers)
        finally:
            index.flush(force=True)

    files: list[Member] = [member for member, _ in results[: len(small)]]
    plans: list[ShardPlan] = [plan for plan, _ in results[len(small) :]]
    sent_files = [member for member, uploaded in results[: len(small)] if uploaded]
    sent_shards = [plan for plan, uploaded in results[len(small) :] if uploaded]
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
        "uploaded_objects": len(sent_files) + len(sent_shards),
        "uploaded_bytes": sum(f.size for f in sent_files) + sum(digests[p.name][0] for p in sent_shards),
        "skipped_objects": len(files) + len(plans) - len(sent_files) - len(sent_shards),
        "verified": verify,
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "nested": nested,
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
    covers every member's bytes (staging packed each member only if its stamp was unchanged since it
    was hashed, so hashing members again here would only double the CPU cost). On any failure this
    shard's files are removed again (and the caller's atomic directory discards everything): nothing of
    a refused shard survives.
    """
    reader = _HashingReader(stream, progress)
    expected = {m["path"]: m["size"] for m in shard["members"]}
    refuse = f"refusing shard {shard['name']} from {source}"
    seen: set[str] = set()
    written: list[Path] = []
    try:
        try:
            with tarfile.open(fileobj=reader, mode="r|", bufsize=TAR_READ_BLOCK) as tar:  # type: ignore[call-overload]
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
    """Write one plain file through a temp sibling, renamed into place only once its sha256 matched."""
    reader = _HashingReader(stream, progress)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as dst:
            while chunk := reader.read(CHUNK):
                dst.write(chunk)
        _expect_digest(reader, entry, source)


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
