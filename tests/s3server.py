"""Reusable S3 test fixtures: a moto S3 server on 127.0.0.1 and a fresh bucket per test.

Enable with `pytest_plugins = ["tests.s3server"]` in tests/conftest.py. Tests talk real HTTP to the
server (boto3 signing, multipart, retries), and subprocesses get the same settings through `.env`.
`FaultProxy` sits in front of the server and breaks every k-th request, to prove retries work.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

REGION = "us-east-1"
# Everything that could point boto3 at a developer's real account is replaced or removed.
_AWS_VARS_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
)


@dataclass
class S3Server:
    endpoint: str


@dataclass
class S3Bucket:
    """A bucket on the test server; `.env` is what a subprocess needs to reach it."""

    endpoint: str
    bucket: str
    env: dict[str, str] = field(default_factory=dict)

    def uri(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}" if prefix.strip("/") else f"s3://{self.bucket}"

    def client(self) -> Any:
        """A plain boto3 client, for tests that inspect or tamper with objects directly."""
        import boto3
        import botocore.config

        config = botocore.config.Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            config=config,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server per test session, in a thread of the test process, on 127.0.0.1 only."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(endpoint=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


def s3_env(endpoint: str, tmp_dir: os.PathLike[str] | str) -> dict[str, str]:
    """AWS variables for a test server; config files point at nothing so ~/.aws never leaks in."""
    missing = os.path.join(tmp_dir, "no-aws-config")
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test-access-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": missing,
        "AWS_SHARED_CREDENTIALS_FILE": missing,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture
def s3_bucket(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> S3Bucket:
    """A new, empty bucket, with the AWS_* environment of this process pointed at it."""
    env = s3_env(s3_server.endpoint, tmp_path_factory.getbasetemp())
    for name in _AWS_VARS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bucket = S3Bucket(endpoint=s3_server.endpoint, bucket=f"test-{uuid.uuid4().hex[:12]}", env=env)
    bucket.client().create_bucket(Bucket=bucket.bucket)
    return bucket


_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>fault-proxy</RequestId></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "upgrade"}


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and 100-continue, like a real S3 endpoint
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: test output stays readable."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = self.server.proxy.next_fault()
        if fault == "drop":
            self.close_connection = True  # no response at all: the client sees a reset connection
            return
        if fault in ("503", "slowdown"):
            code, message = (
                ("SlowDown", "Please reduce your request rate.")
                if fault == "slowdown"
                else ("ServiceUnavailable", "Service is unable to handle the request.")
            )
            payload = _ERROR_XML.format(code=code, message=message).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        upstream = urlsplit(self.server.proxy.upstream)
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and (
                name.lower() != "content-length" or self.command == "HEAD"
            ):
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.end_headers()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class FaultProxy:
    """An HTTP proxy to `upstream` that fails every `every`-th request, cycling through `faults`.

    Faults: "503" (ServiceUnavailable), "slowdown" (503 SlowDown XML, S3's throttling answer) and
    "drop" (the connection closes without a response). `injected` counts what was done.
    """

    def __init__(
        self, upstream: str, every: int = 4, faults: Sequence[str] = ("503", "slowdown", "drop")
    ) -> None:
        self.upstream = upstream
        self.every = every
        self._faults = itertools.cycle(faults)
        self._count = 0
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self._server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.proxy = self
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def next_fault(self) -> str | None:
        with self._lock:
            self._count += 1
            if self._count % self.every:
                return None
            fault = next(self._faults)
            self.injected[fault] += 1
            return fault

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
