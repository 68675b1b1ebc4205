"""A real S3 server for tests and benchmarks, without Kubernetes.

Why a compiled server: storage tests and `benchmarks/staging.py` need a real S3 server whose per-byte
cost does not hide what our transfer path does (moto's does); ControlPlane(s3=True) runs the very same
class inside its start-up, so there is one way the server is started.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from okvqa_testenv.paths import testenv_dir
from okvqa_testenv.processes import Component, free_ports, http_ok, wait_until

S3_BINARY = "weed"


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


class SeaweedS3:
    """SeaweedFS (master, volume, filer and S3 gateway in one process) with one admin identity.

    Why on its own: storage tests and `benchmarks/staging.py` need a real S3 server written in a compiled
    language (moto's per-byte cost hides what our transfer path does), but not Kubernetes. ControlPlane
    (s3=True) runs this very class inside its own start-up, so there is one way SeaweedFS is started.

    Use as a context manager (or start()/stop()); `endpoint` holds the URL and the keys it accepts.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        binaries: Path | None = None,
        volume_size_limit_mb: int = 64,
        max_volumes: int = 16,
    ) -> None:
        """`workdir` is the parent of the temporary data directory (the system's by default); `binaries`
        defaults to testenv_dir(). Small volumes by default: SeaweedFS's 30 GB volume limit makes tiny
        test files reserve real disk; `volume_size_limit_mb` x `max_volumes` bounds what it can store."""
        self.binaries = binaries or testenv_dir()
        self.volume_size_limit_mb = volume_size_limit_mb
        self.max_volumes = max_volumes
        self._parent = workdir
        self._owns_dir = False
        self.dir: Path | None = None
        self.endpoint: S3Endpoint | None = None
        self.component: Component | None = None
        self._ports: tuple[int, int] | None = None  # (master HTTP, S3 gateway)

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> S3Endpoint:
        """Start in a fresh temporary directory and return once objects can be written."""
        binary = self.binaries / S3_BINARY
        if not binary.is_file():
            raise FileNotFoundError(f"missing {binary}: build it with `make testenv`")
        self.dir = Path(tempfile.mkdtemp(prefix="okvqa-seaweedfs-", dir=self._parent))
        self._owns_dir = True
        try:
            component = self.launch(self.dir, self.dir / "logs" / "seaweedfs.log")
            wait_until("SeaweedFS S3", self.ready, [component], component)
        except BaseException:
            self.stop()
            raise
        assert self.endpoint is not None
        return self.endpoint

    def stop(self) -> None:
        """Stop the process (its data is thrown away) and delete the directory start() made."""
        if self.component is not None:
            self.component.terminate()
            self.component.reap(time.monotonic() + self.component.grace_s)
            self.component = None
        if self._owns_dir and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self._owns_dir = False

    def launch(self, directory: Path, log: Path) -> Component:
        """Write the identity file and data directory under `directory` and start the process.

        It does not wait: ControlPlane starts its other components meanwhile and polls `ready` later.
        """
        # Every port explicit: the gRPC ones default to HTTP port + 10000, past 65535 for high free ports.
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_port, s3_grpc = free_ports(8)
        self.dir = directory
        self._ports = (master, s3_port)
        self.endpoint = S3Endpoint(
            url=f"http://127.0.0.1:{s3_port}",
            access_key="okvqa" + secrets.token_hex(4),
            secret_key=secrets.token_hex(20),
        )
        config = {
            "identities": [
                {
                    "name": "okvqa-admin",
                    "credentials": [
                        {"accessKey": self.endpoint.access_key, "secretKey": self.endpoint.secret_key}
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        config_path = directory / "s3.json"
        config_path.write_text(json.dumps(config))
        config_path.chmod(0o600)
        data = directory / "seaweedfs"
        data.mkdir()
        log.parent.mkdir(parents=True, exist_ok=True)
        self.component = Component(
            "seaweedfs",
            [
                str(self.binaries / S3_BINARY),
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={data}",
                f"-master.port={master}",
                f"-master.port.grpc={master_grpc}",
                f"-volume.port={volume}",
                f"-volume.port.grpc={volume_grpc}",
                f"-filer.port={filer}",
                f"-filer.port.grpc={filer_grpc}",
                "-s3",
                f"-s3.port={s3_port}",
                f"-s3.port.grpc={s3_grpc}",
                f"-s3.config={config_path}",
                f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
                f"-volume.max={self.max_volumes}",
            ],
            log,
            # It drains for 10 s on SIGTERM; its data is thrown away, so there is nothing to drain for.
            grace_s=1.0,
        )
        self.component.start()
        return self.component

    def ready(self) -> bool:
        """Whether a write can succeed: the gateway answers before a volume server has joined the master."""
        if self._ports is None:
            return False
        master, s3_port = self._ports
        return http_ok(f"http://127.0.0.1:{master}/dir/assign") and http_ok(
            f"http://127.0.0.1:{s3_port}/healthz"
        )
