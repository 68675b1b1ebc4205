"""Storage logic without a server: sizes, URIs, shard plans, manifests, tar safety, checkpoint choice,
and the local-path store end to end (the `--local` and demo path). S3 over HTTP: test_storage_s3.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from okvqa_k8s.errors import UserError
from okvqa_k8s.fsutil import sha256_file
from okvqa_k8s.storage import (
    FETCH_MARKER,
    MANIFEST_NAME,
    LocalStore,
    delete_prefix,
    exists,
    fetch_dataset,
    join,
    latest_complete_checkpoint,
    list_complete_checkpoints,
    list_objects,
    mark_complete,
    parse_size,
    read_json,
    stage_dataset,
    sync_down,
    sync_up,
    write_json,
)
from okvqa_k8s.storage.base import ObjectInfo
from okvqa_k8s.storage.checkpoints import complete_checkpoints
from okvqa_k8s.storage.index import valid_entries
from okvqa_k8s.storage.shards import (
    Member,
    ShardPlan,
    build_manifest,
    check_member,
    missing_member,
    parse_manifest,
    part_size_for,
    plan_shards,
    safe_relpath,
    tar_footprint,
)
from okvqa_k8s.storage.sync import plan_upload
from okvqa_k8s.storage.tarparts import ShardParts, Stamp, stamp_of
from okvqa_k8s.storage.uri import parse

SMALL_SHARDS = 24 * 1024  # several shards from a few dozen small JPEGs


def make_dataset(root: Path, images: int = 36, seed: int = 0) -> Path:
    """A prepared-dataset look-alike: noisy JPEGs in two splits (one a hard link) plus the JSON files."""
    rng = random.Random(seed)
    records = []
    for i in range(images):
        split = "train2014" if i % 4 else "val2014"
        rel = f"images/{split}/COCO_{split}_{i:012d}.jpg"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = bytes(rng.randrange(256) for _ in range(48 * 48 * 3))
        Image.frombytes("RGB", (48, 48), pixels).save(path, quality=85)
        records.append(
            {"id": str(i), "image": rel, "conversations": [{"from": "human", "value": "<image>\nq"}]}
        )
    os.link(root / records[1]["image"], root / "images/train2014/COCO_train2014_linked.jpg")
    (root / "train.json").write_text(json.dumps(records[1:]))
    (root / "val.json").write_text(json.dumps(records[:1]))
    for name in ("train_questions", "train_annotations", "val_questions", "val_annotations", "manifest"):
        (root / f"{name}.json").write_text(json.dumps({"name": name, "seed": seed}))
    return root


def tree_digest(root: Path, ignore: tuple[str, ...] = (FETCH_MARKER,)) -> dict[str, str]:
    """Relative path → sha256 of every file, to compare directories byte for byte."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ignore
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("storage") / "dataset")


def _member(path: str, size: int = 100) -> Member:
    return Member(path, size, hashlib.sha256(path.encode()).hexdigest())


def _tar_info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info


# -- sizes and URIs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [("64MB", 64 * 10**6), ("1GiB", 2**30), ("256 MiB", 256 * 2**20), ("512kb", 512_000), ("1000", 1000)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "12XB", "-1MB", "0", "MB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UserError, match="bad size"):
        parse_size(text)


def test_uri_parse_and_join(tmp_path: Path) -> None:
    loc = parse("s3://bucket/data/set")
    assert (loc.scheme, loc.bucket, loc.key) == ("s3", "bucket", "data/set")
    assert parse(f"file://{tmp_path}").path == str(tmp_path)
    assert parse(str(tmp_path)).path == str(tmp_path)
    assert join("s3://bucket", "a", "b/c") == "s3://bucket/a/b/c"
    assert join("s3://bucket/p/", "/x/") == "s3://bucket/p/x"
    assert join("file:///data", "x") == "file:///data/x"
    assert join(str(tmp_path), "x", "y") == str(tmp_path / "x" / "y")
    with pytest.raises(UserError, match=r"\.\."):
        join("s3://bucket/p", "../q")
    for bad in ("gs://bucket/x", "s3:///nobucket", "file://host/path"):
        with pytest.raises(UserError):
            parse(bad)


# -- shard planning and manifests ---------------------------------------------------------------------
def _plans(members: list[Member], shard_size: int) -> list[ShardPlan]:
    hashes = {m.path: m.sha256 for m in members}
    return [
        layout.with_hashes(hashes) for layout in plan_shards([(m.path, m.size) for m in members], shard_size)
    ]


def test_plan_shards_is_sorted_bounded_and_deterministic() -> None:
    members = [_member(f"images/{i:03d}.jpg", 1000 + i) for i in range(50)]
    plans = _plans(list(reversed(members)), shard_size=10 * tar_footprint(1100))
    assert [m.path for p in plans for m in p.members] == sorted(m.path for m in members)
    assert all(sum(tar_footprint(m.size) for m in p.members) <= 10 * tar_footprint(1100) for p in plans)
    assert [p.name for p in plans] == [f"shards/images-{i:05d}.tar" for i in range(len(plans))]
    again = _plans(members, shard_size=10 * tar_footprint(1100))
    assert [p.content_digest for p in again] == [p.content_digest for p in plans]


def test_plan_shards_gives_an_oversized_file_its_own_shard() -> None:
    layouts = plan_shards([("images/a", 10), ("images/b", 10**6), ("images/c", 10)], 4096)
    assert [[path for path, _ in s.files] for s in layouts] == [["images/a"], ["images/b"], ["images/c"]]
    assert plan_shards([], 4096) == []


def test_content_digest_follows_member_bytes() -> None:
    a = _plans([_member("images/a")], 4096)[0]
    b = _plans([Member("images/a", 100, "0" * 64)], 4096)[0]
    assert a.content_digest != b.content_digest


def test_manifest_round_trip_and_validation() -> None:
    plans = _plans([_member("images/a.jpg"), _member("images/b.jpg")], 4096)
    manifest = build_manifest([_member("train.json", 7)], plans, {plans[0].name: (3072, "a" * 64)}, 4096)
    raw = json.dumps(manifest).encode()
    assert parse_manifest(raw, "m.json") == manifest
    assert manifest["total_bytes"] == 7 + 3072

    def broken(**change: object) -> bytes:
        bad = json.loads(raw)
        bad["files"][0].update(change)
        return json.dumps(bad).encode()

    for bad_raw, message in [
        (b"{", "not valid JSON"),
        (b'{"format": "other"}', "expected format"),
        (broken(path="../etc/passwd"), "unsafe or duplicate"),
        (broken(path="/abs"), "unsafe or duplicate"),
        (broken(path="images/a.jpg"), "unsafe or duplicate"),
        (broken(sha256="xyz"), "hex sha256"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_manifest(bad_raw, "m.json")
    # A manifest missing a whole section is refused by name, not a KeyError later in fetch.
    for key in ("files", "shards", "total_bytes"):
        bad = json.loads(raw)
        del bad[key]
        with pytest.raises(UserError, match=f"m.json: field '{key}': expected a"):
            parse_manifest(json.dumps(bad).encode(), "m.json")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("images/a.jpg", "images/a.jpg"),
        ("./images/a.jpg", "images/a.jpg"),
        ("../x", None),
        ("images/../../x", None),
        ("/etc/passwd", None),
        ("C:/x", None),
        ("a\\..\\b", None),
        ("", None),
        (".", None),
    ],
)
def test_safe_relpath(name: str, expected: str | None) -> None:
    assert safe_relpath(name) == expected


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (_tar_info("../x", size=3), "absolute or escaping"),
        (_tar_info("/etc/x", size=3), "absolute or escaping"),
        (_tar_info("images/a.jpg", tarfile.SYMTYPE), "a symlink"),
        (_tar_info("images/a.jpg", tarfile.LNKTYPE), "a hard link"),
        (_tar_info("images/a.jpg", tarfile.CHRTYPE), "a character device"),
        (_tar_info("images/a.jpg", tarfile.BLKTYPE), "a block device"),
        (_tar_info("images/a.jpg", tarfile.FIFOTYPE), "a fifo"),
        (_tar_info("images/a.jpg", tarfile.DIRTYPE), "a directory"),
        (_tar_info("images/other.jpg", size=3), "not listed"),
        (_tar_info("images/a.jpg", size=4), "has size 4"),
    ],
)
def test_check_member_refuses(info: tarfile.TarInfo, reason: str) -> None:
    seen: set[str] = set()
    assert reason in (check_member(info, {"images/a.jpg": 3}, seen) or "")
    assert seen == set()


def test_check_member_accepts_exactly_the_manifest() -> None:
    expected = {"images/a.jpg": 3, "images/b.jpg": 5}
    seen: set[str] = set()
    assert check_member(_tar_info("./images/a.jpg", size=3), expected, seen) is None
    assert "missing" in (missing_member(expected, seen) or "")
    assert "appears twice" in (check_member(_tar_info("images/a.jpg", size=3), expected, seen) or "")
    assert check_member(_tar_info("images/b.jpg", size=5), expected, seen) is None
    assert missing_member(expected, seen) is None


def _tarfile_bytes(root: Path, members: list[Member]) -> bytes:
    """What the standard library writes for the same members and fixed metadata: the reference."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.path)
            info.size, info.mtime, info.mode = member.size, 0, 0o644
            with open(root / member.path, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def _members_of(root: Path, rels: list[str]) -> tuple[list[Member], dict[str, Stamp]]:
    members = [Member(rel, (root / rel).stat().st_size, sha256_file(root / rel)) for rel in rels]
    return members, {rel: stamp_of((root / rel).stat()) for rel in rels}


@pytest.mark.parametrize("part_size", [512, 1536, 4096, 10**7])
def test_shard_parts_are_exactly_tarfiles_bytes(tmp_path: Path, part_size: int) -> None:
    """Long and non-ASCII names (pax headers), an empty file and block-sized files, cut at any part size."""
    rng = random.Random(part_size)
    sizes = {"images/" + "long-" * 30 + "name.jpg": 777, "images/caf\u00e9-\u6771\u4eac.jpg": 300}
    sizes |= {f"images/{size:05d}.jpg": size for size in (0, 1, 511, 512, 513, 5000)}
    for name, size in sizes.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(rng.randbytes(size))
    members, stamps = _members_of(tmp_path, sorted(sizes))
    shard = ShardParts(tmp_path, ShardPlan("shards/x.tar", tuple(members)), stamps, part_size)
    parts = list(shard)
    reference = _tarfile_bytes(tmp_path, members)
    assert b"".join(parts) == reference
    assert all(len(part) == part_size for part in parts[:-1]) and 0 < len(parts[-1]) <= part_size
    assert (shard.size, shard.sha256) == (len(reference), hashlib.sha256(reference).hexdigest())
    layout = plan_shards([(m.path, m.size) for m in members], 10**9)[0]
    assert layout.footprint == len(reference)


def test_shard_parts_refuse_a_file_changed_after_hashing(dataset: Path, tmp_path: Path) -> None:
    rels = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.jpg"))[:3]
    for rel in rels:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((dataset / rel).read_bytes())
    members, stamps = _members_of(tmp_path, rels)
    plan = ShardPlan("shards/x.tar", tuple(members))
    assert b"".join(ShardParts(tmp_path, plan, stamps, 4096)) == _tarfile_bytes(tmp_path, members)
    with open(tmp_path / rels[1], "ab") as fh:  # same mtime tick or not: the size changed too
        fh.write(b"more")
    with pytest.raises(UserError, match=rf"{rels[1]} changed while staging; re-run the command"):
        list(ShardParts(tmp_path, plan, stamps, 4096))


def test_shard_parts_refuse_a_file_rewritten_in_place_while_it_is_packed(tmp_path: Path) -> None:
    """Same size, rewritten after packing began: only the stamp taken after reading can see it."""
    big = tmp_path / "images" / "big.jpg"
    big.parent.mkdir()
    big.write_bytes(random.Random(1).randbytes(40_000))
    members, stamps = _members_of(tmp_path, ["images/big.jpg"])
    time.sleep(0.05)  # a later tick of the kernel's coarse timestamp clock (kernels without multigrain ctime)
    parts = iter(ShardParts(tmp_path, ShardPlan("shards/x.tar", tuple(members)), stamps, 4096))
    next(parts)  # the first part is out: the file is open and half read
    with open(big, "r+b") as fh:
        fh.seek(30_000)
        fh.write(b"x" * 100)
    with pytest.raises(UserError, match=r"big\.jpg changed while staging"):
        list(parts)


def test_layout_footprint_counts_pax_headers_and_part_size_respects_the_part_limit() -> None:
    files = [(f"images/{'n' * 110}-{i}.jpg", 700 + i) for i in range(20)] + [("images/caf\u00e9.jpg", 5)]
    layout = plan_shards(files, 10**9)[0]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, size in layout.files:
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = size, 0, 0o644
            tar.addfile(info, io.BytesIO(bytes(size)))
    assert layout.footprint == len(buf.getvalue())
    assert part_size_for(10**9, 16 * 2**20) == 16 * 2**20
    assert part_size_for(200 * 2**30, 16 * 2**20) == 21 * 2**20  # 10,000 parts of 20.48 MiB, rounded up
    assert -(-200 * 2**30 // part_size_for(200 * 2**30, 16 * 2**20)) <= 10_000


def test_a_failed_attempt_takes_back_its_progress(tmp_path: Path) -> None:
    """A retried upload must not push the bar past its total: the failed attempt's bytes are taken back."""
    from okvqa_k8s.storage.base import TransientStorageError
    from okvqa_k8s.storage.transfer import _upload_verified

    target = tmp_path / "obj"
    seen: list[int] = []
    attempts: list[int] = []

    def upload(report: Callable[[int], None]) -> SimpleNamespace:
        attempts.append(len(attempts))
        report(6)
        if len(attempts) == 1:
            raise TransientStorageError("injected: the connection dropped after 6 bytes")
        target.write_bytes(b"0123456789")
        report(4)
        return SimpleNamespace(size=10)

    _, info = _upload_verified(LocalStore(), str(target), upload, seen.append)  # type: ignore[arg-type]
    assert len(attempts) == 2 and seen == [6, -6, 6, 4] and info.size == 10


# -- index, sync planning, checkpoints ----------------------------------------------------------------
def test_index_entries_are_trusted_only_while_the_object_is_unchanged() -> None:
    raw = {
        "same": {"size": 3, "etag": "e1", "sha256": "s"},
        "rewritten": {"size": 3, "etag": "old", "sha256": "s"},
        "gone": {"size": 3, "etag": "e3", "sha256": "s"},
    }
    listing = {"same": ObjectInfo(3, "e1"), "rewritten": ObjectInfo(3, "new")}
    assert set(valid_entries(raw, listing)) == {"same"}
    assert valid_entries(["garbage"], listing) == {}


def test_plan_upload_only_changed_files() -> None:
    local = {"a": (3, "sha-a"), "b": (4, "sha-b2"), "c": (5, "sha-c")}
    indexed = {"a": {"size": 3, "sha256": "sha-a"}, "b": {"size": 4, "sha256": "sha-b"}, "c": None}
    assert plan_upload(local, indexed) == ["b", "c"]


def test_complete_checkpoints_need_every_marker_and_sort_numerically() -> None:
    keys = [
        "checkpoint-100/_COMPLETE.node-0",
        "checkpoint-100/_COMPLETE.node-1",
        "checkpoint-100/model.bin",
        "checkpoint-20/_COMPLETE.node-0",
        "checkpoint-20/_COMPLETE.node-1",
        "checkpoint-300/_COMPLETE.node-0",  # node-1 never finished uploading
        "checkpoint-400/sub/_COMPLETE.node-0",  # a nested marker does not count
        "checkpoint-400/sub/_COMPLETE.node-1",
        "final/_COMPLETE.node-0",
        "final/_COMPLETE.node-1",
        "_COMPLETE.node-0",
    ]
    markers = ("_COMPLETE.node-0", "_COMPLETE.node-1")
    assert complete_checkpoints(keys, markers) == ["checkpoint-20", "checkpoint-100"]
    assert complete_checkpoints(keys, ("_COMPLETE.node-0",))[-1] == "checkpoint-300"
    with pytest.raises(ValueError):
        complete_checkpoints(keys, ())


# -- the local-path store end to end ------------------------------------------------------------------
def test_local_stage_fetch_round_trip(dataset: Path, tmp_path: Path) -> None:
    target = str(tmp_path / "staged")
    summary = stage_dataset(dataset, target, shard_size=SMALL_SHARDS, workers=3)
    assert summary["shards"] > 4 and summary["images"] == 37 and summary["files"] == 7
    assert not (tmp_path / "staged" / "images").exists()
    again = stage_dataset(dataset, f"file://{target}", shard_size=SMALL_SHARDS, workers=3)
    assert again["uploaded_objects"] == 0 and again["manifest_sha256"] == summary["manifest_sha256"]

    out = fetch_dataset(target, tmp_path / "copy", workers=3)
    assert tree_digest(out) == tree_digest(dataset)
    assert not (out / "images/train2014/COCO_train2014_linked.jpg").is_symlink()
    marker = (out / FETCH_MARKER).stat().st_mtime_ns
    (tmp_path / "staged" / "shards" / "images-00000.tar").unlink()  # a no-op re-run reads no shard
    assert fetch_dataset(target, out) == out
    assert (out / FETCH_MARKER).stat().st_mtime_ns == marker
    with pytest.raises(UserError, match=r"shards/images-00000\.tar is listed in the manifest but missing"):
        fetch_dataset(target, tmp_path / "second")


def test_a_nested_prepared_dataset_is_staged_as_a_dataset_of_its_own(tmp_path: Path) -> None:
    """`data prepare` writes the evaluation set to eval/ with its own manifest.json: staging puts it at
    <uri>/eval as a staged dataset, and fetching the dataset never downloads it."""
    src = make_dataset(tmp_path / "ds", images=8)
    make_dataset(src / "eval", images=6, seed=2)
    (src / "notes").mkdir()
    (src / "notes" / "readme.txt").write_text("a folder without a manifest.json is just files")
    target = str(tmp_path / "staged")
    summary = stage_dataset(src, target, shard_size=SMALL_SHARDS, workers=2)
    assert summary["images"] == 9 and set(summary["nested"]) == {"eval"}
    assert summary["nested"]["eval"]["images"] == 7 and summary["nested"]["eval"]["nested"] == {}
    out = fetch_dataset(target, tmp_path / "copy", workers=2)
    assert tree_digest(out) == {k: v for k, v in tree_digest(src).items() if not k.startswith("eval/")}
    assert "notes/readme.txt" in tree_digest(out)
    ev = fetch_dataset(join(target, "eval"), tmp_path / "copy-eval", workers=2)
    assert tree_digest(ev) == tree_digest(src / "eval")
    again = stage_dataset(src, target, shard_size=SMALL_SHARDS, workers=2)
    assert again["uploaded_objects"] == 0 and again["nested"]["eval"]["uploaded_objects"] == 0


def test_stage_skips_a_dangling_link_and_stages_a_linked_image(dataset: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.json").write_text("[]")
    (src / "images").mkdir()
    image = next(dataset.rglob("*.jpg"))
    (src / "images" / "linked.jpg").symlink_to(image)
    (src / "images" / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    summary = stage_dataset(src, str(tmp_path / "staged"))
    assert summary["images"] == 1
    copy = fetch_dataset(str(tmp_path / "staged"), tmp_path / "copy")
    assert (copy / "images" / "linked.jpg").read_bytes() == image.read_bytes()
    assert not (copy / "images" / "dangling.jpg").exists()


def test_stage_refuses_a_json_file_rewritten_while_it_uploads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.json").write_text("[1]")
    real = LocalStore.upload_file

    def upload_then_rewrite(self: LocalStore, path: Path, uri: str, **kwargs: Any) -> None:
        real(self, path, uri, **kwargs)
        path.write_text("[1, 2]")  # another process writes the file meanwhile

    monkeypatch.setattr(LocalStore, "upload_file", upload_then_rewrite)
    with pytest.raises(UserError, match=r"train\.json changed while staging; re-run the command"):
        stage_dataset(src, str(tmp_path / "staged"))
    assert not (tmp_path / "staged" / MANIFEST_NAME).exists()


def test_local_fetch_refuses_to_replace_a_foreign_directory(dataset: Path, tmp_path: Path) -> None:
    stage_dataset(dataset, str(tmp_path / "staged"), shard_size=SMALL_SHARDS)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(UserError, match="not a fetched dataset"):
        fetch_dataset(str(tmp_path / "staged"), tmp_path / "mine")
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"
    with pytest.raises(UserError, match=f"{MANIFEST_NAME} is missing"):
        fetch_dataset(str(tmp_path / "nothing"), tmp_path / "copy")


def test_local_json_listing_and_checkpoints(tmp_path: Path) -> None:
    root = str(tmp_path / "run")
    write_json(join(root, "progress.json"), {"step": 3})
    assert read_json(join(root, "progress.json")) == {"step": 3}
    assert exists(join(root, "progress.json")) and not exists(join(root, "nope.json"))
    with pytest.raises(FileNotFoundError):
        read_json(join(root, "nope.json"))
    for step in (5, 10):
        write_json(join(root, "ckpt", f"checkpoint-{step}", "state.json"), {"step": step})
        mark_complete(join(root, "ckpt", f"checkpoint-{step}"), "_COMPLETE.node-0", {"node": 0})
    mark_complete(join(root, "ckpt", "checkpoint-5"), "_COMPLETE.node-1")
    markers = ("_COMPLETE.node-0", "_COMPLETE.node-1")
    assert list_complete_checkpoints(join(root, "ckpt"), markers) == ["checkpoint-5"]
    assert latest_complete_checkpoint(join(root, "ckpt"), ("_COMPLETE.node-0",)) == "checkpoint-10"
    assert latest_complete_checkpoint(join(root, "empty")) is None
    assert set(list_objects(join(root, "ckpt"))) == {
        "checkpoint-5/state.json",
        "checkpoint-5/_COMPLETE.node-0",
        "checkpoint-5/_COMPLETE.node-1",
        "checkpoint-10/state.json",
        "checkpoint-10/_COMPLETE.node-0",
    }
    assert delete_prefix(join(root, "ckpt")) == 5
    assert list_objects(join(root, "ckpt")) == {}


def test_local_sync_up_and_down(tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"a" * 1000)
    (src / "sub" / "b.bin").write_bytes(b"b" * 2000)
    target = str(tmp_path / "remote")
    assert sync_up(src, target) == 3000
    assert sync_up(src, target) == 0
    (src / "a.bin").write_bytes(b"A" * 1000)  # same size, new content
    assert sync_up(src, target) == 1000
    assert sync_down(target, tmp_path / "down") == 3000
    assert tree_digest(tmp_path / "down") == tree_digest(src)
    assert sync_down(target, tmp_path / "down") == 0


def test_tar_with_mixed_members_round_trips_through_check(tmp_path: Path) -> None:
    """The reader side of `check_member` sees what a real archive with a link looks like."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(_tar_info("images/a.jpg", size=3), io.BytesIO(b"abc"))
        link = _tar_info("images/b.jpg", tarfile.SYMTYPE)
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        seen: set[str] = set()
        reasons = [check_member(info, {"images/a.jpg": 3}, seen) for info in tar]
    assert reasons == [None, "member 'images/b.jpg' is a symlink, only regular files are allowed"]
