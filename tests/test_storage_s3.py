"""Storage against a real HTTP S3 server (moto on 127.0.0.1): round trips, resume, corruption, hostile
tars, injected 503/SlowDown/dropped connections, clean one-line errors that never show a secret."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from okvqa_k8s.errors import UserError
from okvqa_k8s.storage import (
    MANIFEST_NAME,
    delete_prefix,
    exists,
    fetch_dataset,
    join,
    latest_complete_checkpoint,
    list_complete_checkpoints,
    list_objects,
    mark_complete,
    read_json,
    stage_dataset,
    sync_down,
    sync_up,
    write_json,
)
from okvqa_k8s.storage.s3 import S3Store
from okvqa_k8s.storage.shards import MANIFEST_FORMAT
from tests.s3server import FaultProxy, S3Bucket
from tests.test_storage import SMALL_SHARDS, make_dataset, tree_digest

SECRET = "sEcReT-Do-Not-Print-7f3a9c"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("storage-s3") / "dataset", seed=1)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed CLI in a child process, so exit codes and stderr are exactly what a user sees."""
    return subprocess.run(
        [sys.executable, "-m", "okvqa_k8s.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cli_stage_fetch_round_trip_is_byte_identical(
    s3_bucket: S3Bucket, dataset: Path, tmp_path: Path
) -> None:
    uri = s3_bucket.uri("datasets/okvqa")
    env = {"OKVQA_PROGRESS": "1"}  # bars on: they must not leak anything either
    staged = run_cli("data", "stage", str(dataset), uri, "--shard-size", "24KiB", "--workers", "4", env=env)
    assert staged.returncode == 0, staged.stderr
    assert "uploaded" in staged.stdout and "upload" in staged.stderr  # the summary, and the bytes bar
    keys = list_objects(uri)
    assert MANIFEST_NAME in keys and "train.json" in keys and not any(k.startswith("images/") for k in keys)

    fetched = run_cli("data", "fetch", uri, str(tmp_path / "copy"), "--workers", "4", env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert tree_digest(tmp_path / "copy") == tree_digest(dataset)

    again = run_cli("data", "stage", str(dataset), uri, "--shard-size", "24KiB", "--verify")
    assert again.returncode == 0, again.stderr
    assert "uploaded 0 objects" in again.stdout and "verified" in again.stdout
    assert run_cli("data", "fetch", uri, str(tmp_path / "copy")).returncode == 0


def test_interrupted_stage_resumes_with_only_the_rest(
    s3_bucket: S3Bucket, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = s3_bucket.uri("resume")
    real_upload = S3Store.upload_parts
    shards_done: list[str] = []

    def failing_upload(self: S3Store, parts: Iterable[bytes], target: str, **kwargs: Any) -> None:
        if len(shards_done) == 3:
            raise ConnectionResetError("injected: the network went away")
        real_upload(self, parts, target, **kwargs)
        shards_done.append(target)

    monkeypatch.setattr(S3Store, "upload_parts", failing_upload)
    with pytest.raises(ConnectionResetError):
        stage_dataset(dataset, uri, shard_size=SMALL_SHARDS, workers=1)
    assert not exists(join(uri, MANIFEST_NAME))  # nobody may fetch a half-staged dataset

    monkeypatch.setattr(S3Store, "upload_parts", real_upload)
    summary = stage_dataset(dataset, uri, shard_size=SMALL_SHARDS, workers=1)
    assert summary["shards"] > 4
    assert summary["uploaded_objects"] == summary["shards"] - 3
    assert summary["skipped_objects"] == 3 + summary["files"]


PART = 5 * 2**20  # S3's smallest allowed part


def _parts(count: int, fail_after: int | None = None) -> Iterator[bytes]:
    for i in range(count):
        if i == fail_after:
            raise UserError("injected: a file changed while packing")
        yield bytes([i]) * (PART if i < count - 1 else 1234)


def test_upload_parts_streams_a_multipart_object(s3_bucket: S3Bucket) -> None:
    store, seen = S3Store(), []
    store.upload_parts(_parts(4), s3_bucket.uri("mp/obj"), concurrency=2, progress=seen.append)
    body = s3_bucket.client().get_object(Bucket=s3_bucket.bucket, Key="mp/obj")["Body"].read()
    assert body == b"".join(_parts(4))
    assert sorted(seen) == [1234, PART, PART, PART]
    store.upload_parts(iter([b"tiny"]), s3_bucket.uri("mp/one"))  # one part: a plain PUT
    assert s3_bucket.client().head_object(Bucket=s3_bucket.bucket, Key="mp/one")["ETag"].count("-") == 0


def test_upload_parts_survive_503s_and_dropped_connections(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FaultProxy(s3_bucket.endpoint, every=2, faults=("503", "drop")) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        S3Store().upload_parts(_parts(4), s3_bucket.uri("mp/flaky"), concurrency=2)
    body = s3_bucket.client().get_object(Bucket=s3_bucket.bucket, Key="mp/flaky")["Body"].read()
    assert body == b"".join(_parts(4))
    assert proxy.injected["503"] >= 1 and proxy.injected["drop"] >= 1


def test_upload_parts_failure_aborts_and_leaves_nothing(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, client = S3Store(), s3_bucket.client()
    with pytest.raises(UserError, match="injected: a file changed"):
        store.upload_parts(_parts(5, fail_after=3), s3_bucket.uri("mp/producer"), concurrency=2)

    real = store.client.upload_part
    calls: list[int] = []

    def flaky_part(**kwargs: Any) -> Any:
        calls.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == 2:
            raise ConnectionResetError("injected: the network went away")
        return real(**kwargs)

    def producer() -> Iterator[bytes]:
        try:
            yield from _parts(8)
        finally:
            closed.append(True)  # a real producer closes the image file it is reading here

    closed: list[bool] = []
    monkeypatch.setattr(store.client, "upload_part", flaky_part)
    with pytest.raises(ConnectionResetError):
        store.upload_parts(producer(), s3_bucket.uri("mp/part"), concurrency=1)
    assert max(calls) < 8  # it stopped pulling parts once one failed
    assert closed == [True]  # ...and closed the producer at once, not at the next garbage collection
    listing = client.list_objects_v2(Bucket=s3_bucket.bucket, Prefix="mp/")
    assert "Contents" not in listing
    assert client.list_multipart_uploads(Bucket=s3_bucket.bucket).get("Uploads", []) == []


def test_corrupted_shard_is_named_and_repaired_by_restaging(
    s3_bucket: S3Bucket, dataset: Path, tmp_path: Path
) -> None:
    uri = s3_bucket.uri("corrupt")
    stage_dataset(dataset, uri, shard_size=SMALL_SHARDS, workers=2)
    s3_bucket.client().put_object(
        Bucket=s3_bucket.bucket, Key="corrupt/shards/images-00001.tar", Body=b"x" * 999
    )

    result = run_cli("data", "fetch", uri, str(tmp_path / "copy"), env={"OKVQA_PROGRESS": "0"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "shards/images-00001.tar is corrupt" in result.stderr
    assert not (tmp_path / "copy").exists()  # nothing half-extracted is left behind

    summary = stage_dataset(dataset, uri, shard_size=SMALL_SHARDS, workers=2)
    assert summary["uploaded_objects"] == 1  # the rewritten object's ETag no longer matches the index
    assert tree_digest(fetch_dataset(uri, tmp_path / "copy")) == tree_digest(dataset)


def _hostile_tar(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        good = tarfile.TarInfo("images/a.jpg")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"abc"))
        bad = tarfile.TarInfo(
            {"traversal": "../escaped.txt", "absolute": "/tmp/escaped.txt"}.get(kind, "images/b")
        )
        if kind in ("traversal", "absolute"):
            bad.size = 3
            tar.addfile(bad, io.BytesIO(b"bad"))
        else:
            bad.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE}[
                kind
            ]
            bad.linkname = "/etc/passwd" if kind != "device" else ""
            tar.addfile(bad)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "hardlink", "device"])
def test_hostile_shard_is_refused_whole(s3_bucket: S3Bucket, tmp_path: Path, kind: str) -> None:
    import hashlib

    data = _hostile_tar(kind)
    manifest = {
        "format": MANIFEST_FORMAT,
        "shard_size": 1,
        "files": [],
        "shards": [
            {
                "name": "shards/images-00000.tar",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "members": [
                    {"path": "images/a.jpg", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}
                ],
            }
        ],
        "total_bytes": len(data),
    }
    client = s3_bucket.client()
    client.put_object(Bucket=s3_bucket.bucket, Key="evil/shards/images-00000.tar", Body=data)
    client.put_object(
        Bucket=s3_bucket.bucket, Key=f"evil/{MANIFEST_NAME}", Body=json.dumps(manifest).encode()
    )

    dest = tmp_path / "nested" / "copy"
    with pytest.raises(
        UserError, match=r"refusing shard shards/images-00000\.tar from s3://.*: member"
    ) as err:
        fetch_dataset(s3_bucket.uri("evil"), dest)
    assert {"symlink": "a symlink", "hardlink": "a hard link", "device": "character device"}.get(
        kind, "absolute or escaping"
    ) in str(err.value)
    assert not dest.exists()
    assert not (tmp_path / "nested" / "escaped.txt").exists()
    assert [p.name for p in (tmp_path / "nested").iterdir()] == []  # the temp directory is gone too


def test_transient_faults_are_survived(
    s3_bucket: S3Bucket, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SlowDown is answered with ~1 s backoffs (botocore's throttling scale), so it is the rarer fault.
    faults = ("503", "drop", "503", "drop", "slowdown")
    with FaultProxy(s3_bucket.endpoint, every=3, faults=faults) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        uri = s3_bucket.uri("flaky")
        stage_dataset(dataset, uri, shard_size=SMALL_SHARDS, workers=3)
        copy = fetch_dataset(uri, tmp_path / "copy", workers=3)
        assert sync_up(copy / "images" / "val2014", s3_bucket.uri("flaky-sync"), workers=3) > 0
        assert sync_down(s3_bucket.uri("flaky-sync"), tmp_path / "down", workers=3) > 0
    assert tree_digest(copy) == tree_digest(dataset)
    assert tree_digest(tmp_path / "down") == tree_digest(copy / "images" / "val2014")
    assert proxy.injected["503"] >= 5 and proxy.injected["drop"] >= 5 and proxy.injected["slowdown"] >= 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", ["unreachable", "missing-bucket", "bad-credentials"])
def test_errors_are_one_line_and_never_show_the_secret(
    s3_bucket: S3Bucket, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    env = {"AWS_SECRET_ACCESS_KEY": SECRET, "OKVQA_PROGRESS": "0"}
    uri = s3_bucket.uri("data")
    expected = {
        "unreachable": "cannot reach the S3 endpoint",
        "missing-bucket": "S3 bucket 'no-such-bucket' does not exist",
        "bad-credentials": "rejected the credentials (InvalidAccessKeyId)",
    }[case]
    if case == "unreachable":
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{_closed_port()}"
    elif case == "missing-bucket":
        uri = "s3://no-such-bucket/data"
    else:
        from moto import settings

        # moto accepts any key unless IAM auth is on; with it on, our test key is unknown to IAM.
        monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    for args in (("stage", str(dataset), uri), ("fetch", uri, str(tmp_path / "copy"))):
        result = run_cli("data", *args, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("okvqa-k8s: error: ") and result.stderr.count("\n") == 1
        assert expected in result.stderr
        assert SECRET not in result.stdout + result.stderr


def test_sync_up_uploads_only_changed_files(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    src = tmp_path / "checkpoint-10"
    (src / "global_step10").mkdir(parents=True)
    (src / "adapter_model.bin").write_bytes(os.urandom(20_000))
    (src / "global_step10" / "optim_states.pt").write_bytes(os.urandom(40_000))
    (src / "trainer_state.json").write_text('{"step": 10}')
    uri = s3_bucket.uri("runs/r1/checkpoints/checkpoint-10")
    assert sync_up(src, uri, workers=2) == 60_000 + len('{"step": 10}')
    etags = {k: v.etag for k, v in list_objects(uri).items()}
    assert sync_up(src, uri, workers=2) == 0

    (src / "trainer_state.json").write_text('{"step": 11}')  # same size, new bytes
    (src / "new.txt").write_text("hello")
    assert sync_up(src, uri, workers=2) == len('{"step": 11}') + 5
    after = {k: v.etag for k, v in list_objects(uri).items()}
    assert after["adapter_model.bin"] == etags["adapter_model.bin"]
    assert after["trainer_state.json"] != etags["trainer_state.json"]

    down = tmp_path / "down"
    assert sync_down(uri, down, workers=2) > 0
    assert tree_digest(down) == tree_digest(src)
    assert sync_down(uri, down, workers=2) == 0


def test_latest_complete_checkpoint_ignores_a_missing_node_marker(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    prefix = s3_bucket.uri("runs/r2/checkpoints")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "weights.bin").write_bytes(b"w" * 100)
    markers = ("_COMPLETE.node-0", "_COMPLETE.node-1")
    for step, nodes in ((20, 2), (40, 2), (60, 1)):
        sync_up(tmp_path / "ckpt", join(prefix, f"checkpoint-{step}"))
        for node in range(nodes):
            mark_complete(join(prefix, f"checkpoint-{step}"), f"_COMPLETE.node-{node}", {"step": step})
    assert list_complete_checkpoints(prefix, markers) == ["checkpoint-20", "checkpoint-40"]
    assert latest_complete_checkpoint(prefix, markers) == "checkpoint-40"
    assert latest_complete_checkpoint(prefix, markers[:1]) == "checkpoint-60"
    assert read_json(join(prefix, "checkpoint-40", "_COMPLETE.node-1")) == {"step": 40}


def test_json_helpers_and_delete_prefix_on_s3(s3_bucket: S3Bucket) -> None:
    uri = s3_bucket.uri("runs/r3/progress.json")
    write_json(uri, {"phase": "training", "step": 7})
    assert read_json(uri) == {"phase": "training", "step": 7} and exists(uri)
    with pytest.raises(FileNotFoundError):
        read_json(s3_bucket.uri("runs/r3/missing.json"))
    assert delete_prefix(s3_bucket.uri("runs/r3")) == 1
    assert not exists(uri)


def test_a_request_botocore_refuses_is_one_clear_line(s3_bucket: S3Bucket) -> None:
    """Any BotoCoreError (here botocore's ParamValidationError for the empty key of `s3://bucket`,
    read as a file) becomes one line naming the URI, never a multi-line botocore traceback."""
    with pytest.raises(UserError) as err:
        read_json(s3_bucket.uri())
    message = str(err.value)
    assert message.startswith(f"S3 request for {s3_bucket.uri()} failed at {s3_bucket.endpoint}: ")
    assert "ParamValidationError" in message and "Key" in message and "\n" not in message


def test_an_invalid_bucket_name_is_refused_before_any_request() -> None:
    with pytest.raises(UserError, match=r"bad S3 URI 's3://bad!bucket/x': bucket name 'bad!bucket' may hold"):
        read_json("s3://bad!bucket/x")
