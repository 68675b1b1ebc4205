"""MinIO, the S3 server the chart ships, for tests and benchmarks without Kubernetes.

Why a compiled server: storage tests and `benchmarks/staging.py` need a real S3 server whose per-byte
cost does not hide what our transfer path does (moto's does), and MinIO is the one users run beside
the chart. ControlPlane(s3=True) runs this very class inside its start-up, so there is one way the
server is started. The binary is `make testenv`'s build of github.com/minio/minio.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from okvqa_testenv.paths import testenv_dir
from okvqa_testenv.processes import Component, StartStop, free_ports, http_ok, wait_until

S3_BINARY = "minio"


@dataclass(frozen=True)
class S3Endpoint:
    """Where the test S3 server listens and the credentials it accepts (path-style addressing)."""

    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The standard AWS variables the project's storage layer and boto3 read."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


class MinioS3(StartStop):
    """A single-drive MinIO server on 127.0.0.1 with one root identity of random keys.

    Use as a context manager (or start()/stop()); `endpoint` holds the URL and the keys it accepts.
    """

    def __init__(self, workdir: Path | None = None, *, binaries: Path | None = None) -> None:
        """`workdir` is the parent of the temporary data directory (the system's by default); `binaries`
        defaults to testenv_dir()."""
        self.binaries = binaries or testenv_dir()
        self._parent = workdir
        self._owns_dir = False
        self.dir: Path | None = None
        self.endpoint: S3Endpoint | None = None
        self.component: Component | None = None

    def start(self) -> S3Endpoint:
        """Start in a fresh temporary directory and return once objects can be written."""
        binary = self.binaries / S3_BINARY
        if not binary.is_file():
            raise FileNotFoundError(f"missing {binary}: build it with `make testenv`")
        self.dir = Path(tempfile.mkdtemp(prefix="okvqa-minio-", dir=self._parent))
        self._owns_dir = True
        try:
            component = self.launch(self.dir, self.dir / "logs" / "minio.log")
            wait_until("MinIO", self.ready, [component], component)
        except BaseException:
            self.stop()
            raise
        assert self.endpoint is not None
        return self.endpoint

    def stop(self) -> None:
        """Stop the process (its data is thrown away) and delete the directory start() made."""
        if self.component is not None:
            self.component.stop()
            self.component = None
        if self._owns_dir and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self._owns_dir = False

    def launch(self, directory: Path, log: Path) -> Component:
        """Start the process with its data under `directory`; it does not wait (ControlPlane starts its
        other components meanwhile and polls `ready` later)."""
        port, console = free_ports(2)
        self.dir = directory
        self.endpoint = S3Endpoint(
            url=f"http://127.0.0.1:{port}",
            access_key="okvqa" + secrets.token_hex(4),
            secret_key=secrets.token_hex(20),
        )
        data = directory / "minio"
        data.mkdir(parents=True)
        env = {
            **os.environ,
            # The keys go in the environment, never on the command line (`ps` shows that to everyone).
            "MINIO_ROOT_USER": self.endpoint.access_key,
            "MINIO_ROOT_PASSWORD": self.endpoint.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CONFIG_DIR": str(directory / "minio-config"),
            "HOME": str(directory),
        }
        self.component = Component(
            "minio",
            [
                str(self.binaries / S3_BINARY),
                "server",
                str(data),
                "--address",
                f"127.0.0.1:{port}",
                "--console-address",
                f"127.0.0.1:{console}",
                "--quiet",
            ],
            log,
            env,
            # Its data is thrown away: nothing to drain for.
            grace_s=2.0,
        )
        self.component.start()
        return self.component

    def ready(self) -> bool:
        """Whether MinIO accepts requests (its cluster readiness endpoint)."""
        return self.endpoint is not None and http_ok(f"{self.endpoint.url}/minio/health/ready")
