"""URI → the store that serves it: the one module that knows every `Store` implementation.

S3 is imported on first use (boto3 is slow to import), so the CLI and local runs never pay for it.
"""

from __future__ import annotations

from okvqa_k8s.storage.base import Store
from okvqa_k8s.storage.local import LocalStore
from okvqa_k8s.storage.uri import parse

_LOCAL = LocalStore()


def store_for(uri: str) -> Store:
    """The store serving `uri`; S3 clients are cached per credential/endpoint environment."""
    if parse(uri).scheme == "s3":
        from okvqa_k8s.storage.s3 import s3_store

        return s3_store()
    return _LOCAL
