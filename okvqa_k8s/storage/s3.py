"""S3 (and S3-compatible: MinIO, SeaweedFS, moto) implementation of `Store`.

Configuration comes only from the standard AWS environment (or a profile) so credentials live in a
Kubernetes Secret and never in a spec or a log line. Every botocore failure is turned into one
`UserError` line that names the bucket/URI and the likely cause, never a credential.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import boto3
import botocore.config
import botocore.exceptions
from s3transfer.exceptions import RetriesExceededError
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from okvqa_k8s.errors import UserError
from okvqa_k8s.storage.base import (
    MULTIPART_CHUNK,
    Buffer,
    ObjectInfo,
    Progress,
    TransientStorageError,
    producing,
)
from okvqa_k8s.storage.uri import parse

T = TypeVar("T")
# Enough attempts to ride out a few seconds of 503/SlowDown; overridable with AWS_MAX_ATTEMPTS.
DEFAULT_MAX_ATTEMPTS = 8
# The bucket check at first use fails fast, so an unreachable endpoint is reported in about a second.
PREFLIGHT_ATTEMPTS = 3

_ENV_KEYS = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable"}
# HTTPClientError covers dropped connections and read timeouts; RetriesExceededError is s3transfer
# giving up on a download body that kept breaking.
_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    RetriesExceededError,
)
_UNREACHABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
)


def _make_client(max_attempts: int) -> Any:
    session = boto3.session.Session()  # honours AWS_PROFILE and the shared config/credentials files
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or session.region_name
    config = botocore.config.Config(
        s3={"addressing_style": "path"},
        retries={"mode": os.environ.get("AWS_RETRY_MODE", "standard"), "max_attempts": max_attempts},
        # boto3 >= 1.36 adds CRC checksum headers that several S3-compatible stores reject.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=64,
        connect_timeout=5,
        read_timeout=60,
    )
    # The endpoint (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL) is read by botocore itself.
    return session.client("s3", region_name=region or "us-east-1", config=config)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _ProgressSubscriber(BaseSubscriber):
    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._progress(bytes_transferred)


class S3Store:
    """One boto3 client shared by all threads (clients are thread-safe; resources are not)."""

    def __init__(self) -> None:
        self.client = _make_client(int(os.environ.get("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)))
        self.endpoint = self.client.meta.endpoint_url
        self._checked: set[str] = set()
        self._lock = threading.Lock()

    # -- error handling -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        """Turn botocore failures into one readable line; missing keys become FileNotFoundError."""
        bucket = parse(uri).bucket
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(uri) from None
            raise self._client_error(uri, bucket, code, status) from None
        except botocore.exceptions.NoCredentialsError:
            raise UserError(
                f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            ) from None
        except _UNREACHABLE_EXCEPTIONS as exc:
            raise UserError(
                f"cannot reach the S3 endpoint {self.endpoint} for {uri} ({type(exc).__name__}): "
                "check AWS_ENDPOINT_URL and the network"
            ) from None
        except _TRANSIENT_EXCEPTIONS as exc:
            raise TransientStorageError(
                f"S3 transfer for {uri} kept failing after retries ({type(exc).__name__}) at {self.endpoint}"
            ) from None
        except botocore.exceptions.BotoCoreError as exc:  # anything else botocore refuses, on one line
            detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise UserError(
                f"S3 request for {uri} failed at {self.endpoint}: {type(exc).__name__}: {detail}"
            ) from None

    def _client_error(self, uri: str, bucket: str, code: str, status: int) -> UserError:
        if code == "NoSuchBucket":
            return UserError(f"S3 bucket '{bucket}' does not exist at {self.endpoint} (for {uri})")
        if code in _CREDENTIAL_CODES:
            return UserError(
                f"S3 at {self.endpoint} rejected the credentials ({code}) for {uri}: "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return UserError(f"access denied ({code}) to {uri} at {self.endpoint}: check the bucket policy")
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientStorageError(
                f"S3 request for {uri} kept failing after retries: {code or 'HTTP error'} (HTTP {status})"
            )
        return UserError(f"S3 request for {uri} failed: {code or 'error'} (HTTP {status}) at {self.endpoint}")

    def _check_bucket(self, uri: str) -> None:
        """Classify a bad endpoint, bucket or credential once per bucket, before any long transfer.

        AccessDenied is let through: a fetch-only role may read objects without listing the bucket.
        """
        loc = parse(uri)
        with self._lock:
            if loc.bucket in self._checked:
                return
        probe = _make_client(PREFLIGHT_ATTEMPTS)
        with self._errors(uri):
            try:
                probe.list_objects_v2(Bucket=loc.bucket, Prefix=loc.key, MaxKeys=1)
            except botocore.exceptions.ClientError as exc:
                if _code(exc) not in ("AccessDenied", "403"):
                    raise
        with self._lock:
            self._checked.add(loc.bucket)

    @contextlib.contextmanager
    def _call(self, uri: str) -> Iterator[Any]:
        self._check_bucket(uri)
        with self._errors(uri):
            yield parse(uri)

    # -- Store ----------------------------------------------------------------------------------
    def read_bytes(self, uri: str) -> bytes:
        with self._call(uri) as loc:
            return self.client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()

    def read_stream(self, uri: str, consume: Callable[[BinaryIO], T]) -> T:
        with self._call(uri) as loc:
            body = self.client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            try:
                return consume(body)
            finally:
                body.close()

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self._call(uri) as loc:
            self.client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data)

    def info(self, uri: str) -> ObjectInfo | None:
        try:
            with self._call(uri) as loc:
                head = self.client.head_object(Bucket=loc.bucket, Key=loc.key)
        except FileNotFoundError:
            return None
        return ObjectInfo(size=int(head["ContentLength"]), etag=head["ETag"].strip('"'))

    def list(self, prefix_uri: str) -> dict[str, ObjectInfo]:
        found: dict[str, ObjectInfo] = {}
        with self._call(prefix_uri) as loc:
            prefix = loc.key.rstrip("/") + "/" if loc.key.strip("/") else ""
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    found[obj["Key"][len(prefix) :]] = ObjectInfo(int(obj["Size"]), obj["ETag"].strip('"'))
        return found

    def _transfer(self, concurrency: int) -> TransferManager:
        config = TransferConfig(
            multipart_threshold=MULTIPART_CHUNK,
            multipart_chunksize=MULTIPART_CHUNK,
            max_request_concurrency=max(1, concurrency),
        )
        return TransferManager(self.client, config)

    def upload_file(
        self, path: Path, uri: str, *, concurrency: int = 4, progress: Progress | None = None
    ) -> None:
        subscribers = [_ProgressSubscriber(progress)] if progress else None
        with self._call(uri) as loc, self._transfer(concurrency) as manager:
            manager.upload(str(path), loc.bucket, loc.key, subscribers=subscribers).result()

    def upload_parts(
        self, parts: Iterable[Buffer], uri: str, *, concurrency: int = 4, progress: Progress | None = None
    ) -> None:
        """One PUT for a single part; otherwise a multipart upload fed while the producer runs.

        At most `concurrency` parts are in flight, so memory stays near `concurrency + 1` parts however
        large the object. Any failure (a part, or the producer refusing a changed file) aborts the
        upload, so no invisible parts are left billed in the bucket.
        """
        with producing(parts) as chunks, self._call(uri) as loc:
            head = list(itertools.islice(chunks, 2))
            if len(head) < 2:
                body = head[0] if head else b""
                self.client.put_object(Bucket=loc.bucket, Key=loc.key, Body=body)
                if progress is not None:
                    progress(len(body))
                return
            upload_id = self.client.create_multipart_upload(Bucket=loc.bucket, Key=loc.key)["UploadId"]
            try:
                etags = self._send_parts(loc, upload_id, _handing_over(head, chunks), concurrency, progress)
                self.client.complete_multipart_upload(
                    Bucket=loc.bucket,
                    Key=loc.key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    self.client.abort_multipart_upload(Bucket=loc.bucket, Key=loc.key, UploadId=upload_id)
                raise

    def _send_parts(
        self,
        loc: Any,
        upload_id: str,
        parts: Iterable[Buffer],
        concurrency: int,
        progress: Progress | None,
    ) -> dict[int, str]:
        """Upload parts from a bounded pool; the first failure stops pulling parts and is re-raised."""
        etags: dict[int, str] = {}
        slots = threading.BoundedSemaphore(max(1, concurrency))
        failed = threading.Event()

        def send(number: int, body: Buffer) -> None:
            try:
                reply = self.client.upload_part(
                    Bucket=loc.bucket, Key=loc.key, UploadId=upload_id, PartNumber=number, Body=body
                )
                etags[number] = reply["ETag"]
                if progress is not None:
                    progress(len(body))
            except BaseException:
                failed.set()
                raise
            finally:
                slots.release()

        futures = []
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="okvqa-part") as pool:
            for number, body in enumerate(parts, start=1):
                slots.acquire()
                if failed.is_set():
                    slots.release()
                    break
                futures.append(pool.submit(send, number, body))
                del body  # the pool holds it now: memory stays at `concurrency` parts plus one filling
        for future in futures:
            future.result()
        return etags

    def download_file(
        self, uri: str, path: Path, *, concurrency: int = 4, progress: Progress | None = None
    ) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        subscribers = [_ProgressSubscriber(progress)] if progress else None
        with self._call(uri) as loc, self._transfer(concurrency) as manager:
            manager.download(loc.bucket, loc.key, str(path), subscribers=subscribers).result()

    def delete(self, uri: str) -> None:
        with self._call(uri) as loc:
            self.client.delete_object(Bucket=loc.bucket, Key=loc.key)

    def delete_prefix(self, prefix_uri: str) -> int:
        keys = list(self.list(prefix_uri))
        loc = parse(prefix_uri)
        prefix = loc.key.rstrip("/") + "/" if loc.key.strip("/") else ""
        with self._call(prefix_uri):
            for start in range(0, len(keys), 1000):
                batch = [{"Key": prefix + key} for key in keys[start : start + 1000]]
                self.client.delete_objects(Bucket=loc.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)


def _handing_over(head: list[Buffer], rest: Iterator[Buffer]) -> Iterator[Buffer]:
    """`head` then `rest`, dropping each head part once it is handed on so it is not held to the end."""
    while head:
        yield head.pop(0)
    yield from rest


_STORES: dict[tuple[str | None, ...], S3Store] = {}
_STORES_LOCK = threading.Lock()


def s3_store() -> S3Store:
    """A cached store for the current AWS environment; a changed environment gets a new client."""
    key = tuple(os.environ.get(name) for name in _ENV_KEYS)
    with _STORES_LOCK:
        if key not in _STORES:
            _STORES[key] = S3Store()
        return _STORES[key]
