"""Storage for datasets, checkpoints and outputs: `s3://bucket/prefix` or a local path, one API.

S3 settings come only from the standard AWS environment variables (or a profile); see `s3.py`.
boto3 is imported on first S3 use, so importing this package stays cheap for the CLI. Layers: `base`
(the `Store` protocol, errors, retries) ← `local`, `s3` (the implementations) ← `registry` (`store_for`)
← `objects`, `checkpoints`, `sync`, `transfer` (what callers use).
"""

from okvqa_k8s.storage.base import ChecksumMismatch, ObjectInfo, Store, TransientStorageError
from okvqa_k8s.storage.checkpoints import (
    latest_complete_checkpoint,
    list_complete_checkpoints,
    mark_complete,
)
from okvqa_k8s.storage.local import LocalStore
from okvqa_k8s.storage.objects import (
    delete_prefix,
    download_file,
    exists,
    list_objects,
    read_bytes,
    read_json,
    upload_file,
    write_bytes,
    write_json,
)
from okvqa_k8s.storage.registry import store_for
from okvqa_k8s.storage.shards import MANIFEST_NAME, parse_size
from okvqa_k8s.storage.sync import sync_down, sync_up, sync_up_hashed
from okvqa_k8s.storage.transfer import DEFAULT_SHARD_SIZE, FETCH_MARKER, fetch_dataset, stage_dataset
from okvqa_k8s.storage.uri import join

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "FETCH_MARKER",
    "MANIFEST_NAME",
    "ChecksumMismatch",
    "LocalStore",
    "ObjectInfo",
    "Store",
    "TransientStorageError",
    "delete_prefix",
    "download_file",
    "exists",
    "fetch_dataset",
    "join",
    "latest_complete_checkpoint",
    "list_complete_checkpoints",
    "list_objects",
    "mark_complete",
    "parse_size",
    "read_bytes",
    "read_json",
    "stage_dataset",
    "store_for",
    "sync_down",
    "sync_up",
    "sync_up_hashed",
    "upload_file",
    "write_bytes",
    "write_json",
]
