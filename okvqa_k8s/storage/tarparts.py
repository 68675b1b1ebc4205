"""A shard's tar archive produced directly in upload-sized parts, with no temporary tar on disk.

Staging used to write each shard to a temp file and upload that file: every byte was written to disk
and read back, a worker held up to a whole shard (256 MiB) of scratch space, and no byte left before
the whole shard existed. Producing the archive as a stream of fixed-size parts lets the first part
upload while later members are still being read, and file contents are read straight into the part
buffer (`readinto`), so each byte is copied once on the client.

The bytes are exactly what `tarfile` writes for the same members (PAX format, mtime 0, mode 0644,
root-owned, padded to a full record), so shards stay deterministic and re-runs can skip them; a test
compares the two byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from okvqa_k8s.errors import UserError
from okvqa_k8s.storage.shards import ShardPlan, member_header

# What a file looked like when it was listed, before it was hashed: (inode, size, mtime, ctime in ns).
# Any write changes ctime, and a tool that restores mtime cannot restore ctime, so a stamp that is the same
# before and after packing means the packed bytes are the bytes that were hashed (git's index relies on
# the same fields). The shard therefore always holds what the manifest's sha256 describes.
Stamp = tuple[int, int, int, int]


def stamp_of(st: os.stat_result) -> Stamp:
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def changed_while_staging(path: Path) -> UserError:
    return UserError(f"{path} changed while staging; re-run the command")


class ShardParts:
    """Iterate to get the shard's bytes as parts of `part_size` (the last one shorter); afterwards
    `size` and `sha256` describe the whole archive.

    Each yielded part is a fresh bytearray that is never touched again, so it can be handed to another
    thread for upload while the next one fills.
    """

    def __init__(self, src: Path, plan: ShardPlan, stamps: Mapping[str, Stamp], part_size: int) -> None:
        if part_size < tarfile.BLOCKSIZE:
            raise ValueError(f"part size {part_size} is smaller than a tar block")
        self._src = src
        self._plan = plan
        self._stamps = stamps
        self._part_size = part_size
        self._digest = hashlib.sha256()
        self.size = 0
        self._part = bytearray()
        self._view = memoryview(self._part)
        self._filled = 0

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def __iter__(self) -> Iterator[bytearray]:
        self._new_part()
        for member in self._plan.members:
            yield from self._write(member_header(member.path, member.size))
            yield from self._copy_file(member.path, member.size)
            yield from self._write(bytes(-member.size % tarfile.BLOCKSIZE))
        yield from self._write(bytes(2 * tarfile.BLOCKSIZE))
        yield from self._write(bytes(-(self.size + self._filled) % tarfile.RECORDSIZE))
        yield self._finish()

    def _new_part(self) -> None:
        self._part = bytearray(self._part_size)
        self._view = memoryview(self._part)
        self._filled = 0

    def _full(self) -> bytearray:
        part = self._part
        self._view.release()
        self._digest.update(part)
        self.size += len(part)
        self._new_part()
        return part

    def _finish(self) -> bytearray:
        part = self._part
        self._view.release()
        del part[self._filled :]
        self._digest.update(part)
        self.size += len(part)
        return part

    def _write(self, data: bytes) -> Iterator[bytearray]:
        offset = 0
        while offset < len(data):
            if self._filled == self._part_size:
                yield self._full()
            take = min(len(data) - offset, self._part_size - self._filled)
            self._view[self._filled : self._filled + take] = data[offset : offset + take]
            self._filled += take
            offset += take

    def _copy_file(self, rel: str, size: int) -> Iterator[bytearray]:
        """The file's bytes, read straight into the part buffer; its stamp must hold before and after."""
        path = self._src / rel
        changed = changed_while_staging(path)
        with open(path, "rb") as fh:
            if stamp_of(os.fstat(fh.fileno())) != self._stamps[rel]:
                raise changed
            remaining = size
            while remaining:
                if self._filled == self._part_size:
                    yield self._full()
                take = min(remaining, self._part_size - self._filled)
                got = fh.readinto(self._view[self._filled : self._filled + take])
                if not got:
                    raise changed
                self._filled += got
                remaining -= got
            if fh.read(1) or stamp_of(os.fstat(fh.fileno())) != self._stamps[rel]:
                raise changed
