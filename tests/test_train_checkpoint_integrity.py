"""Checkpoints are verified before DeepSpeed unpickles them, and a tag saved again cannot look complete
while it uploads: against a real S3 server (moto over HTTP), the bucket tampered with through boto3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from okvqa_k8s.errors import UserError
from okvqa_k8s.layout import node_markers
from okvqa_k8s.storage import join, list_complete_checkpoints, read_json
from okvqa_k8s.train.checkpoints import clear_markers, download_node_checkpoint, upload_node_checkpoint
from tests.s3server import S3Bucket

TAG = "checkpoint-20"


def saved(root: Path, node: int) -> Path:
    """What one node of a 2-node, 1-process-per-node ZeRO run holds of a checkpoint."""
    local = root / f"node-{node}" / TAG
    (local / "global_step20").mkdir(parents=True)
    (local / "global_step20" / f"zero_pp_rank_{node}_mp_rank_00_optim_states.pt").write_bytes(
        os.urandom(5000)
    )
    if node == 0:
        (local / "global_step20" / "mp_rank_00_model_states.pt").write_bytes(os.urandom(3000))
        (local / "trainer_state.json").write_text('{"global_step": 20}')
    return local


def upload_both(s3_bucket: S3Bucket, tmp_path: Path) -> str:
    uri = s3_bucket.uri(f"runs/r/checkpoints/{TAG}")
    for node in (0, 1):
        upload_node_checkpoint(saved(tmp_path, node), uri, node)
    return uri


def test_a_verified_checkpoint_round_trips(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    uri = upload_both(s3_bucket, tmp_path)
    marker = read_json(join(uri, "_COMPLETE.node-1"))
    assert marker["node"] == 1 and list(marker["sha256"]) == [
        "global_step20/zero_pp_rank_1_mp_rank_00_optim_states.pt"
    ]
    names = download_node_checkpoint(uri, tmp_path / "resume-1" / TAG, range(1, 2))
    assert names == [
        "global_step20/mp_rank_00_model_states.pt",
        "global_step20/zero_pp_rank_1_mp_rank_00_optim_states.pt",
        "trainer_state.json",
    ]
    for name in names:
        got = (tmp_path / "resume-1" / TAG / name).read_bytes()
        owner = 1 if "rank_1" in name else 0
        assert got == (tmp_path / f"node-{owner}" / TAG / name).read_bytes()


@pytest.mark.parametrize("tamper", ["flip a byte", "add a file"])
def test_a_checkpoint_changed_in_the_bucket_is_refused_and_nothing_is_left_to_load(
    s3_bucket: S3Bucket, tmp_path: Path, tamper: str
) -> None:
    uri = upload_both(s3_bucket, tmp_path)
    client = s3_bucket.client()
    key = "runs/r/checkpoints/checkpoint-20/global_step20/mp_rank_00_model_states.pt"
    if tamper == "flip a byte":
        body = bytearray(client.get_object(Bucket=s3_bucket.bucket, Key=key)["Body"].read())
        body[100] ^= 0x01
        client.put_object(Bucket=s3_bucket.bucket, Key=key, Body=bytes(body))
        expected = "its sha256 differs from the one recorded when it was uploaded"
    else:
        key = "runs/r/checkpoints/checkpoint-20/global_step20/extra.pt"
        client.put_object(Bucket=s3_bucket.bucket, Key=key, Body=b"\x80\x04payload")
        expected = "no node marker records its sha256"
    local = tmp_path / "resume-0" / TAG
    with pytest.raises(UserError) as err:
        download_node_checkpoint(uri, local, range(0, 1))
    assert (
        str(err.value)
        == f"checkpoint file s3://{s3_bucket.bucket}/{key}: {expected}; refusing to load the checkpoint"
    )
    assert not local.exists(), "nothing downloaded is left for DeepSpeed to load"


def test_saving_a_tag_again_clears_its_old_markers_first(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    """Resumed from an older checkpoint, a run saves the same tag again: once its markers are cleared the
    tag is incomplete until every node has uploaded and marked it anew."""
    uri = upload_both(s3_bucket, tmp_path)
    prefix = s3_bucket.uri("runs/r/checkpoints")
    markers = node_markers(2)
    assert list_complete_checkpoints(prefix, markers) == [TAG]
    clear_markers(uri, 2)
    assert list_complete_checkpoints(prefix, markers) == []
    upload_node_checkpoint(saved(tmp_path / "again", 1), uri, 1)
    assert list_complete_checkpoints(prefix, markers) == [], "one node done: not complete yet"
    upload_node_checkpoint(saved(tmp_path / "again", 0), uri, 0)
    assert list_complete_checkpoints(prefix, markers) == [TAG]
