"""Pure decisions of staging: sizes, shard plans, the manifest, and which tar members are safe.

Nothing here touches the network or the disk, so the rules that make staging deterministic and
fetching safe are unit-tested directly, without a server.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from okvqa_k8s.errors import UserError

MANIFEST_NAME = "stage-manifest.json"
# `data prepare`'s record of a prepared dataset. A top-level folder of a dataset holding one (the evaluation
# set `data prepare` writes to eval/) is a dataset of its own: staged beside, never as files of this one.
PREPARED_MANIFEST = "manifest.json"
MANIFEST_FORMAT = "okvqa-k8s/staged-dataset/v1"
IMAGES_DIR = "images"
SHARDS_DIR = "shards"
TAR_BLOCK = 512

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Bytes from "64MB" (SI), "1GiB" (binary) or a plain integer, so flags read like people write sizes."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE_RE.match(text)
        unit = match.group(2).upper() if match else ""
        if not match or unit not in _UNITS:
            raise UserError(f"bad size {text!r}: expected a number with B, KB, MB, GB, KiB, MiB or GiB")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UserError(f"bad size {text!r}: must be positive")
    return value


@dataclass(frozen=True)
class Member:
    """One file inside a shard: its path in the dataset (e.g. images/x.jpg), size and sha256."""

    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class ShardPlan:
    """A shard whose members are hashed: enough to decide whether the store already holds it."""

    name: str
    members: tuple[Member, ...]

    @property
    def content_digest(self) -> str:
        """Identifies the shard's bytes before they exist: tars are built deterministically from members."""
        canonical = json.dumps([m.to_json() for m in self.members], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def tar_footprint(size: int) -> int:
    """Bytes a regular file of `size` occupies in a ustar archive: header + data padded to a block.

    Names over 100 bytes or outside ASCII add a pax header; planning ignores that (a shard may end a
    little past its target), `ShardLayout.footprint` counts it exactly.
    """
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


def member_header(path: str, size: int) -> bytes:
    """The header block(s) tarfile writes for a regular file with the project's fixed metadata
    (mtime 0, mode 0644, root-owned), pax header included when the name needs one."""
    info = tarfile.TarInfo(path)
    info.size, info.mtime, info.mode = size, 0, 0o644
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def part_size_for(total: int, minimum: int, max_parts: int = 10_000) -> int:
    """`minimum`, or a larger MiB multiple when `total` would otherwise need more than S3's 10,000 parts."""
    needed = -(-total // max_parts)
    return max(minimum, -(-needed // 2**20) * 2**20)


def shard_name(index: int) -> str:
    return f"{SHARDS_DIR}/{IMAGES_DIR}-{index:05d}.tar"


@dataclass(frozen=True)
class ShardLayout:
    """Which files (path, size) go into a shard, decided before anything is hashed.

    Sizes alone fix the layout, so each shard's members can be hashed by the worker that packs and
    uploads it: hashing overlaps other shards' uploads instead of being a pass of its own first.
    """

    name: str
    files: tuple[tuple[str, int], ...]

    @property
    def footprint(self) -> int:
        """The tar's exact size, known before it is built (pax headers and end padding included)."""
        data = 2 * TAR_BLOCK + sum(
            len(member_header(path, size)) + -(-size // TAR_BLOCK) * TAR_BLOCK for path, size in self.files
        )
        return -(-data // tarfile.RECORDSIZE) * tarfile.RECORDSIZE

    def with_hashes(self, hashes: Mapping[str, str]) -> ShardPlan:
        return ShardPlan(self.name, tuple(Member(path, size, hashes[path]) for path, size in self.files))


def plan_shards(files: Iterable[tuple[str, int]], shard_size: int) -> list[ShardLayout]:
    """Greedy fill in sorted path order: the same files always give the same shards, byte for byte.

    A shard closes before the file that would push it past `shard_size`; a single file larger than
    the target gets a shard of its own rather than failing.
    """
    shards: list[ShardLayout] = []
    current: list[tuple[str, int]] = []
    used = 0
    for path, size in sorted(files):
        footprint = tar_footprint(size)
        if current and used + footprint > shard_size:
            shards.append(ShardLayout(shard_name(len(shards)), tuple(current)))
            current, used = [], 0
        current.append((path, size))
        used += footprint
    if current:
        shards.append(ShardLayout(shard_name(len(shards)), tuple(current)))
    return shards


def build_manifest(
    files: Sequence[Member],
    shards: Sequence[ShardPlan],
    shard_digests: Mapping[str, tuple[int, str]],
    shard_size: int,
) -> dict[str, Any]:
    """The staged dataset's table of contents; no timestamps, so identical data gives identical bytes."""
    return {
        "format": MANIFEST_FORMAT,
        "shard_size": shard_size,
        "files": [f.to_json() for f in sorted(files, key=lambda f: f.path)],
        "shards": [
            {
                "name": plan.name,
                "size": shard_digests[plan.name][0],
                "sha256": shard_digests[plan.name][1],
                "members": [m.to_json() for m in plan.members],
            }
            for plan in shards
        ],
        "total_bytes": sum(f.size for f in files) + sum(shard_digests[p.name][0] for p in shards),
    }


def safe_relpath(name: str) -> str | None:
    """The normalised relative posix path, or None if it is absolute, escapes upward, or is empty."""
    if not name or "\x00" in name or "\\" in name:
        return None
    path = PurePosixPath(name)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in path.parts if p != "."]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _entry(obj: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        raise UserError(f"{where}: expected an object with {', '.join(keys)}")
    if not isinstance(obj.get("size"), int) or not re.fullmatch(r"[0-9a-f]{64}", str(obj.get("sha256"))):
        raise UserError(f"{where}: expected an integer size and a hex sha256")
    return obj


def parse_manifest(raw: bytes, source: str) -> dict[str, Any]:
    """Validate a downloaded manifest before trusting any path in it (it names files we will write)."""
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise UserError(f"{source}: expected format {MANIFEST_FORMAT!r}")
    for key, kind in (("files", list), ("shards", list), ("total_bytes", int)):
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise UserError(f"{source}: field {key!r}: expected a {'list' if kind is list else 'byte count'}")
    seen: set[str] = set()
    entries = [(f, "path") for f in manifest["files"]]
    for shard in manifest["shards"]:
        _entry(shard, f"{source}: shard entry", ("name", "size", "sha256", "members"))
        entries.append((shard, "name"))
        entries.extend((m, "path") for m in shard["members"])
    for obj, key in entries:
        _entry(obj, f"{source}: entry", (key, "size", "sha256"))
        path = safe_relpath(str(obj[key]))
        if path is None or path != obj[key] or path in seen:
            raise UserError(f"{source}: unsafe or duplicate path {obj[key]!r}")
        seen.add(path)
    return manifest


def check_member(info: tarfile.TarInfo, expected: dict[str, int], seen: set[str]) -> str | None:
    """Why this tar member must be refused, or None; `expected` maps manifest paths to sizes.

    Stricter than tarfile's `data` filter: only plain files, only the paths the manifest promises, each
    once and with the promised size; links, devices, directories and anything outside are refused.
    Called member by member while a shard streams in; accepted paths are added to `seen`.
    """
    path = safe_relpath(info.name)
    if path is None:
        return f"member {info.name!r} has an absolute or escaping path"
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        kind = {
            tarfile.SYMTYPE: "a symlink",
            tarfile.LNKTYPE: "a hard link",
            tarfile.CHRTYPE: "a character device",
            tarfile.BLKTYPE: "a block device",
            tarfile.FIFOTYPE: "a fifo",
            tarfile.DIRTYPE: "a directory",
        }.get(info.type, f"of tar type {info.type!r}")
        return f"member {info.name!r} is {kind}, only regular files are allowed"
    if path not in expected:
        return f"member {info.name!r} is not listed in the manifest"
    if path in seen:
        return f"member {info.name!r} appears twice"
    if info.size != expected[path]:
        return f"member {info.name!r} has size {info.size}, the manifest says {expected[path]}"
    seen.add(path)
    return None


def missing_member(expected: dict[str, int], seen: set[str]) -> str | None:
    """Why a fully read shard is incomplete, or None."""
    missing = sorted(set(expected) - seen)
    return f"member {missing[0]!r} listed in the manifest is missing" if missing else None
