"""Storage against real MinIO (the `minio` binary from `make testenv`), without Kubernetes.

Why besides the moto tests: moto is a Python re-implementation of S3; MinIO is a real, compiled
S3-compatible server with its own multipart, listing and ETag behaviour, and the one the chart ships.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from okvqa_k8s.storage import (
    MANIFEST_NAME,
    fetch_dataset,
    join,
    latest_complete_checkpoint,
    list_objects,
    mark_complete,
    read_json,
    stage_dataset,
    store_for,
    sync_down,
    sync_up,
)
from okvqa_testenv import S3_BINARY, MinioS3, S3Endpoint, testenv_dir
from tests.conftest import require
from tests.s3server import _AWS_VARS_TO_CLEAR, s3_env
from tests.test_storage import SMALL_SHARDS, tree_digest

pytestmark = pytest.mark.cluster


def _missing_reason() -> str:
    binary = testenv_dir() / S3_BINARY
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").is_file():
        return f"{binary} is not built and Go, needed to build it with `make testenv`, is not installed"
    return f"{binary} is not built: run `make testenv`"


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """One MinIO for this module; skipped, or failed in CI, where the binary is missing."""
    require((testenv_dir() / S3_BINARY).is_file(), _missing_reason())
    with MinioS3(tmp_path_factory.mktemp("minio")) as server:
        assert server.endpoint is not None
        yield server.endpoint


@pytest.fixture
def bucket(minio: S3Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh bucket, with this process's AWS environment pointed at MinIO and nothing else."""
    for name in _AWS_VARS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    env = {**s3_env(minio.url, tmp_path), **minio.env(), "AWS_REGION": minio.region}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    name = f"test-{uuid.uuid4().hex[:12]}"
    store_for(f"s3://{name}").client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


def test_stage_fetch_round_trip_is_byte_identical(
    bucket: str, prepared_dataset: Path, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/datasets/okvqa"
    stage_dataset(prepared_dataset, uri, shard_size=SMALL_SHARDS * 8, workers=4)
    keys = list_objects(uri)
    assert MANIFEST_NAME in keys and not any(k.startswith("images/") for k in keys)
    assert sum(k.endswith(".tar") for k in keys) > 1  # several shards, so the parallel path ran

    copy = fetch_dataset(uri, tmp_path / "copy", workers=4)
    everything = tree_digest(prepared_dataset)
    assert tree_digest(copy) == {k: v for k, v in everything.items() if not k.startswith("eval/")}
    # the evaluation set inside the prepared dataset is a staged dataset of its own
    evaluation = fetch_dataset(f"{uri}/eval", tmp_path / "copy-eval", workers=4)
    assert tree_digest(evaluation) == tree_digest(prepared_dataset / "eval")
    # Staging again finds everything in place and uploads nothing new.
    before = {k: v.etag for k, v in list_objects(uri).items()}
    stage_dataset(prepared_dataset, uri, shard_size=SMALL_SHARDS * 8, workers=4)
    assert {k: v.etag for k, v in list_objects(uri).items()} == before


def test_checkpoint_sync_and_latest_complete(bucket: str, tmp_path: Path) -> None:
    prefix = f"s3://{bucket}/runs/r1/checkpoints"
    ckpt = tmp_path / "checkpoint"
    (ckpt / "global_step").mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(os.urandom(300_000))
    # Larger than the multipart chunk, so MinIO's multipart upload is part of the check.
    (ckpt / "global_step" / "optim_states.pt").write_bytes(os.urandom(20 * 2**20))
    (ckpt / "trainer_state.json").write_text('{"step": 0}')
    markers = ("_COMPLETE.node-0", "_COMPLETE.node-1")
    for step, nodes in ((10, 2), (20, 2), (30, 1)):  # step 30: node 1 never finished its upload
        (ckpt / "trainer_state.json").write_text(f'{{"step": {step}}}')
        assert sync_up(ckpt, join(prefix, f"checkpoint-{step}"), workers=4) > 0
        for node in range(nodes):
            mark_complete(join(prefix, f"checkpoint-{step}"), f"_COMPLETE.node-{node}", {"step": step})

    assert latest_complete_checkpoint(prefix, markers) == "checkpoint-20"
    assert latest_complete_checkpoint(prefix, markers[:1]) == "checkpoint-30"
    assert read_json(join(prefix, "checkpoint-20", "_COMPLETE.node-1")) == {"step": 20}
    assert sync_up(ckpt, join(prefix, "checkpoint-30"), workers=4) == 0  # unchanged: nothing re-sent

    down = tmp_path / "resumed"
    assert sync_down(join(prefix, "checkpoint-20"), down, workers=4) > 0
    assert (down / "trainer_state.json").read_text() == '{"step": 20}'
    assert tree_digest(down, ignore=markers) == {
        **tree_digest(ckpt),
        "trainer_state.json": tree_digest(down)["trainer_state.json"],
    }
