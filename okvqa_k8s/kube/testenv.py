"""A real Kubernetes control plane on 127.0.0.1, for the cluster tests and `okvqa-k8s dev cluster up`.

Why: the CRD, the operator, RBAC and PyTorchJob admission are only proven against the real API machinery,
so this starts the real binaries that `make testenv` builds (k8s/testenv/build.sh): etcd, kube-apiserver
(RBAC on, default admission plugins, service-account tokens), kube-controller-manager (Job controller,
garbage collector, service-account and root-CA publishers), kube-scheduler, kwok standing in for the
kubelets of three fake Nodes (two with 8 `nvidia.com/gpu` each, one CPU-only), and the Kubeflow training
operator v1 with its validating admission webhook registered, so its admission rules apply. Optionally
SeaweedFS serves S3. Nothing here is a fake API server. `SeaweedS3` starts that S3 server on its own,
without the control plane, for storage tests and benchmarks that want a real, compiled S3 server.

kwok plays pods through Stages: every pod becomes Running and Ready; pods of Jobs and of PyTorchJob
replicas then succeed (exit code 0) after about two seconds, and such pods annotated
`okvqa.dev/kwok-fail: "true"` fail with exit code 1 instead.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "training-operator",
)
S3_BINARY = "weed"
PYTORCHJOB_CRD = "kubeflow.org_pytorchjobs.yaml"
# kwok's own default Stages, copied from the kwok module that was built, so they match its version.
KWOK_STAGES = (
    "kwok-stages/node-initialize.yaml",
    "kwok-stages/node-heartbeat-with-lease.yaml",
    "kwok-stages/pod-ready.yaml",
    "kwok-stages/pod-delete.yaml",
)

FAIL_ANNOTATION = "okvqa.dev/kwok-fail"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# The training operator manages its webhook certificate through these fixed names (pkg/cert in v1.9).
OPERATOR_NAMESPACE = "kubeflow"
OPERATOR_WEBHOOK_SECRET = "training-operator-webhook-cert"
OPERATOR_WEBHOOK_CONFIGURATION = "validator.training-operator.kubeflow.org"
OPERATOR_WEBHOOK_DNS_NAME = "training-operator.kubeflow.svc"
OPERATOR_WEBHOOK_CA_NAME = "training-operator-ca"
PYTORCHJOB_WEBHOOK_PATH = "/validate-kubeflow-org-v1-pytorchjob"
OPERATOR_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # hard-coded in the operator

START_TIMEOUT_S = 90.0


def testenv_dir() -> Path:
    """Where `make testenv` puts the binaries: $OKVQA_TESTENV_DIR, else the user's cache directory."""
    override = os.environ.get("OKVQA_TESTENV_DIR")
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "okvqa-k8s" / "testenv" / "bin"


def missing_binaries(directory: Path | None = None, *, s3: bool = True) -> list[str]:
    """The files `make testenv` should have built into `directory` but did not, by name."""
    base = directory or testenv_dir()
    wanted = [*BINARIES, *([S3_BINARY] if s3 else []), PYTORCHJOB_CRD, *KWOK_STAGES]
    return [name for name in wanted if not (base / name).is_file()]


class ControlPlaneError(RuntimeError):
    """A component did not start: the message carries the tail of its log."""


@dataclass(frozen=True)
class S3Endpoint:
    """Where the test S3 server listens and the credentials it accepts (path-style addressing)."""

    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The standard AWS variables our storage layer and boto3 read (DESIGN.md, "S3")."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


@dataclass(frozen=True)
class FakeNode:
    """A Node that kwok plays: what the scheduler sees of a machine."""

    name: str
    capacity: dict[str, str]
    labels: dict[str, str]


NODES = (
    FakeNode(
        "kwok-gpu-0",
        {"cpu": "32", "memory": "256Gi", "pods": "110", GPU_RESOURCE: "8"},
        {"okvqa.dev/pool": "gpu", "nvidia.com/gpu.present": "true"},
    ),
    FakeNode(
        "kwok-gpu-1",
        {"cpu": "32", "memory": "256Gi", "pods": "110", GPU_RESOURCE: "8"},
        {"okvqa.dev/pool": "gpu", "nvidia.com/gpu.present": "true"},
    ),
    FakeNode("kwok-cpu-0", {"cpu": "16", "memory": "64Gi", "pods": "110"}, {"okvqa.dev/pool": "cpu"}),
)


# --------------------------------------------------------------------------------------------- PKI


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _new_key() -> ec.EllipticCurvePrivateKey:
    """P-256 keys: every component accepts them and they take microseconds, where RSA takes a while."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    # PKCS#1 for RSA: the training operator's cert rotator parses no other RSA key format.
    key_format = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _certificate(
    subject_key: PrivateKey,
    common_name: str,
    *,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    usages: tuple[x509.ObjectIdentifier, ...] = (),
    days: int = 3650,
) -> x509.Certificate:
    """A CA certificate when `issuer` is None, else a leaf signed by `issuer`."""
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    )
    now = datetime.datetime.now(datetime.UTC)
    issuer_cert, issuer_key = issuer if issuer else (None, subject_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pair(directory: Path, stem: str, cert: x509.Certificate, key: PrivateKey) -> None:
    (directory / f"{stem}.crt").write_bytes(_cert_pem(cert))
    key_path = directory / f"{stem}.key"
    key_path.write_bytes(_key_pem(key))
    key_path.chmod(0o600)


def _operator_webhook_certs() -> dict[str, bytes]:
    """The training operator's webhook CA and serving pair, shared by every control plane of this user.

    Why shared: the operator serves the certificate found in the fixed directory OPERATOR_CERT_DIR, so
    two control planes on one machine would overwrite each other's certificate unless both hold the
    same one. Why pre-made: the rotator only keeps a Secret's
    certificate if it verifies for `training-operator.kubeflow.svc`; ours also carries IP 127.0.0.1, which
    the API server dials, where the rotator's own certificate would not verify. RSA, because the rotator
    reads its CA key as PKCS#1; made once per machine, so the slower key generation costs nothing later.
    """
    directory = Path(tempfile.gettempdir()) / f"okvqa-k8s-testenv-webhook-{os.getuid()}"
    names = ("ca.crt", "ca.key", "tls.crt", "tls.key")
    if not all((directory / n).is_file() for n in names):
        staging = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        # The rotator checks that the CA certificate verifies for its CA name, as its own CA would.
        ca = _certificate(ca_key, OPERATOR_WEBHOOK_CA_NAME, dns_names=(OPERATOR_WEBHOOK_CA_NAME,))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _certificate(
            key,
            OPERATOR_WEBHOOK_DNS_NAME,
            issuer=(ca, ca_key),
            dns_names=(OPERATOR_WEBHOOK_DNS_NAME,),
            ips=("127.0.0.1",),
            usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
        )
        _write_pair(staging, "ca", ca, ca_key)
        _write_pair(staging, "tls", cert, key)
        try:
            staging.rename(directory)
        except OSError:  # another process won the race: use its certificates
            shutil.rmtree(staging)
    certs = {n: (directory / n).read_bytes() for n in names}
    _mount_operator_certs(certs)
    return certs


def _mount_operator_certs(certs: dict[str, bytes]) -> None:
    """Put the serving pair where the operator reads it, as the Secret volume of its Deployment would.

    The operator's readiness waits for these files; it never writes them itself. Each file is replaced
    atomically, so an operator of another control plane never reads half a file.
    """
    OPERATOR_CERT_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "tls.crt", "tls.key"):
        target = OPERATOR_CERT_DIR / name
        if target.is_file() and target.read_bytes() == certs[name]:
            continue
        fd, staging = tempfile.mkstemp(prefix=f".{name}.", dir=OPERATOR_CERT_DIR)
        with os.fdopen(fd, "wb") as out:
            out.write(certs[name])
        os.replace(staging, target)


# --------------------------------------------------------------------------------------- processes


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1, held open together so no two are the same."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]


class _Component:
    """One control-plane process in its own process group, logging to a file."""

    def __init__(
        self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, grace_s: float = 5.0
    ) -> None:
        self.name = name
        self.grace_s = grace_s
        self.argv = argv
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ControlPlaneError:
        return ControlPlaneError(f"{self.name}: {what} (log {self.log}); last lines:\n{self.tail()}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self.failure(f"exited with code {self.proc.returncode}")

    def terminate(self) -> None:
        """SIGTERM the whole process group, so children go with their leader."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait for the leader until `deadline` (time.monotonic), then SIGKILL what is left of the group."""
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


# ---------------------------------------------------------------------------------------- API access


class _Api:
    """Just enough of a REST client to bootstrap the cluster, with the admin client certificate."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path) -> None:
        self.port = port
        self._context = ssl.create_default_context(cafile=str(ca))
        self._context.load_cert_chain(str(cert), str(key))

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._context, timeout=10)
        try:
            payload = None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, data.decode(errors="replace")

    def ok(self, path: str) -> bool:
        """Whether GET `path` answers 200; connection errors mean "not yet"."""
        try:
            return self.request("GET", path)[0] == 200
        except OSError:
            return False

    def get(self, path: str) -> Any:
        try:
            status, body = self.request("GET", path)
        except OSError:
            return None
        return body if status == 200 else None

    def create(self, path: str, obj: dict[str, Any]) -> None:
        status, body = self.request("POST", path, obj)
        if status >= 300 and status != 409:
            kind = obj.get("kind", "object")
            raise ControlPlaneError(f"creating {kind} at {path} failed with HTTP {status}: {body}")


def _condition_true(obj: Any, condition: str) -> bool:
    conditions = (obj or {}).get("status", {}).get("conditions") or []
    return any(c.get("type") == condition and c.get("status") == "True" for c in conditions)


def _http_ok(url: str, *, timeout: float = 2.0) -> bool:
    """Whether a health endpoint answers 200: plain HTTP, or HTTPS without verification (the
    controller-manager and scheduler serve self-signed certificates of their own)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = (
        http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl._create_unverified_context()
        )
        if parts.scheme == "https"
        else http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    )
    try:
        connection.request("GET", parts.path or "/")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _wait_until(
    what: str,
    check: Callable[[], bool],
    components: list[_Component],
    blame: _Component,
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Poll `check` until true; fail fast, with the right log, when any of `components` dies."""
    deadline = time.monotonic() + timeout
    while not check():
        for component in components:
            component.check_alive()
        if time.monotonic() > deadline:
            raise blame.failure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------ SeaweedFS


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
        self.component: _Component | None = None
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
            _wait_until("SeaweedFS S3", self.ready, [component], component)
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

    def launch(self, directory: Path, log: Path) -> _Component:
        """Write the identity file and data directory under `directory` and start the process.

        It does not wait: ControlPlane starts its other components meanwhile and polls `ready` later.
        """
        # Every port explicit: the gRPC ones default to HTTP port + 10000, past 65535 for high free ports.
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_port, s3_grpc = _free_ports(8)
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
        self.component = _Component(
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
        return _http_ok(f"http://127.0.0.1:{master}/dir/assign") and _http_ok(
            f"http://127.0.0.1:{s3_port}/healthz"
        )


# ------------------------------------------------------------------------------------- kwok stages

_POD_COMPLETE_TEMPLATE = """\
{{ $now := Now }}
{{ $root := . }}
containerStatuses:
{{ range $index, $item := .spec.containers }}
- image: {{ $item.image | Quote }}
  name: {{ $item.name | Quote }}
  ready: false
  restartCount: 0
  started: false
  state:
    terminated:
      exitCode: %(exit_code)d
      finishedAt: {{ $now | Quote }}
      reason: %(reason)s
      startedAt: {{ $now | Quote }}
{{ end }}
phase: %(phase)s
"""

_RUNNING = {"key": ".status.phase", "operator": "In", "values": ["Running"]}
_NOT_DELETED = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
_JOB_OWNED = {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]}
_NOT_JOB_OWNED = {"key": ".metadata.ownerReferences.[].kind", "operator": "NotIn", "values": ["Job"]}
_TRAINING_REPLICA = {"key": '.metadata.labels["training.kubeflow.org/job-name"]', "operator": "Exists"}
_MARKED_FAIL = {"key": f'.metadata.annotations["{FAIL_ANNOTATION}"]', "operator": "In", "values": ["true"]}
_NOT_MARKED_FAIL = {**_MARKED_FAIL, "operator": "NotIn"}


def _finish_stage(name: str, expressions: list[dict[str, Any]], *, failed: bool) -> dict[str, Any]:
    """A Stage ending a running pod two seconds in, like a short training or evaluation run."""
    template = _POD_COMPLETE_TEMPLATE % (
        {"exit_code": 1, "reason": "Error", "phase": "Failed"}
        if failed
        else {"exit_code": 0, "reason": "Completed", "phase": "Succeeded"}
    )
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": [_NOT_DELETED, _RUNNING, *expressions]},
            "delay": {"durationMilliseconds": 2000},
            "next": {"statusTemplate": template},
        },
    }


# The selectors are mutually exclusive, so kwok never has to pick between two matching stages.
POD_FINISH_STAGES = (
    _finish_stage("okvqa-job-pod-complete", [_JOB_OWNED, _NOT_MARKED_FAIL], failed=False),
    _finish_stage(
        "okvqa-training-pod-complete", [_TRAINING_REPLICA, _NOT_JOB_OWNED, _NOT_MARKED_FAIL], failed=False
    ),
    _finish_stage("okvqa-job-pod-fail", [_JOB_OWNED, _MARKED_FAIL], failed=True),
    _finish_stage("okvqa-training-pod-fail", [_TRAINING_REPLICA, _NOT_JOB_OWNED, _MARKED_FAIL], failed=True),
)


# ------------------------------------------------------------------------------------ control plane


class ControlPlane:
    """etcd, kube-apiserver, controller-manager, scheduler, kwok, training operator (and S3) on 127.0.0.1.

    Use as a context manager, or start()/stop(). `kubeconfig` is an admin kubeconfig (client certificate
    in group system:masters); `env()` is the environment for subprocesses that should talk to it.
    """

    def __init__(
        self, *, s3: bool = False, binaries: Path | None = None, workdir: Path | None = None
    ) -> None:
        """`s3` also starts SeaweedFS; `binaries` defaults to testenv_dir(); `workdir` is the parent of
        the temporary data directory (logs, etcd data, certificates), by default the system's."""
        self.binaries = binaries or testenv_dir()
        self.s3_enabled = s3
        self._parent = workdir
        self.dir: Path | None = None
        self.server = ""
        self.s3: S3Endpoint | None = None
        self.start_seconds: float | None = None
        self._components: list[_Component] = []

    # -- public surface

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig file of the running control plane."""
        if self.dir is None:
            raise RuntimeError("the control plane is not started")
        return self.dir / "admin.kubeconfig"

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG (and the AWS variables of the S3 server when there is one)."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        if self.s3 is not None:
            env.update(self.s3.env())
        return env

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything and return once pods can be scheduled, run and be admitted as in a cluster."""
        missing = missing_binaries(self.binaries, s3=self.s3_enabled)
        if missing:
            raise FileNotFoundError(
                f"missing in {self.binaries}: {', '.join(missing)}; build them with `make testenv`"
            )
        began = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix="okvqa-testenv-", dir=self._parent))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def check(self) -> None:
        """Raise ControlPlaneError if a component has exited: a long-running dev cluster notices it."""
        for component in self._components:
            component.check_alive()

    def stop(self) -> None:
        """Stop every process, dependents first, and delete the data directory.

        One at a time: an API server whose clients are gone exits in about a second, one still serving
        their watches waits out its grace period.
        """
        for component in reversed(self._components):
            component.terminate()
            component.reap(time.monotonic() + component.grace_s)
        self._components.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # -- start-up, in dependency order

    def _bin(self, name: str) -> str:
        return str(self.binaries / name)

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, grace_s: float = 5.0
    ) -> _Component:
        assert self.dir is not None
        component = _Component(name, argv, self.dir / "logs" / f"{name}.log", env, grace_s)
        self._components.append(component)
        component.start()
        return component

    def _wait(
        self, what: str, check: Callable[[], bool], blame: _Component, timeout: float = START_TIMEOUT_S
    ) -> None:
        """Poll `check` until true; fail fast, with the right log, when any component dies."""
        _wait_until(what, check, self._components, blame, timeout)

    def _start(self) -> None:
        assert self.dir is not None
        (self.dir / "logs").mkdir()
        pki = self.dir / "pki"
        pki.mkdir()
        self._write_pki(pki)
        ports = dict(
            zip(
                ["etcd", "etcd_peer", "api", "kcm", "sched", "webhook", "op_metrics", "op_health"],
                _free_ports(8),
                strict=True,
            )
        )
        self.server = f"https://127.0.0.1:{ports['api']}"
        self._write_kubeconfig(pki)

        s3 = self._start_s3() if self.s3_enabled else None
        etcd = self._spawn(
            "etcd",
            [
                self._bin("etcd"),
                "--name=testenv",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-cluster=testenv=http://127.0.0.1:{ports['etcd_peer']}",
                "--unsafe-no-fsync",  # throwaway data: durability only costs time here
                "--log-level=warn",
            ],
        )
        self._wait("etcd health", lambda: _http_ok(f"http://127.0.0.1:{ports['etcd']}/health"), etcd)

        apiserver = self._spawn("kube-apiserver", self._apiserver_args(pki, ports))
        api = _Api(ports["api"], pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
        self._wait("kube-apiserver /readyz", lambda: api.ok("/readyz"), apiserver, timeout=60)

        kubeconfig = str(self.kubeconfig)
        delegated = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ]
        kcm = self._spawn(
            "kube-controller-manager",
            [
                self._bin("kube-controller-manager"),
                *delegated,
                f"--secure-port={ports['kcm']}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--controllers=*",
                "--enable-garbage-collector=true",
            ],
        )
        scheduler = self._spawn(
            "kube-scheduler", [self._bin("kube-scheduler"), *delegated, f"--secure-port={ports['sched']}"]
        )
        kwok = self._spawn(
            "kwok",
            [
                self._bin("kwok"),
                f"--kubeconfig={kubeconfig}",
                f"--config={self._write_kwok_config()}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                # Addresses kwok reports for its nodes and pods: nothing ever dials them.
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.2",
                "--node-lease-duration-seconds=40",
            ],
        )
        for node in NODES:
            api.create("/api/v1/nodes", self._node(node))

        crd = yaml.safe_load((self.binaries / PYTORCHJOB_CRD).read_text())
        api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
        self._wait(
            "the PyTorchJob CRD to be established",
            lambda: _condition_true(api.get(crd_path), "Established"),
            apiserver,
        )
        operator = self._start_training_operator(api, ports)

        self._wait(
            "kube-controller-manager /healthz",
            lambda: _http_ok(f"https://127.0.0.1:{ports['kcm']}/healthz"),
            kcm,
        )
        self._wait(
            "kube-scheduler /healthz",
            lambda: _http_ok(f"https://127.0.0.1:{ports['sched']}/healthz"),
            scheduler,
        )
        # Pods are refused until their namespace's default ServiceAccount exists, and cannot reach the
        # API without the root CA ConfigMap: both come from the controller-manager.
        self._wait(
            "the default ServiceAccount and kube-root-ca.crt",
            lambda: (
                api.ok("/api/v1/namespaces/default/serviceaccounts/default")
                and api.ok("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
            ),
            kcm,
        )
        self._wait("kwok Nodes to be Ready", lambda: self._nodes_ready(api), kwok)
        self._wait(
            "the training operator /readyz",
            lambda: _http_ok(f"http://127.0.0.1:{ports['op_health']}/readyz"),
            operator,
        )
        if s3 is not None:
            component, check = s3
            self._wait("SeaweedFS S3", check, component)

    def _write_pki(self, pki: Path) -> None:
        ca_key = _new_key()
        ca = _certificate(ca_key, "okvqa-testenv-ca")
        _write_pair(pki, "ca", ca, ca_key)
        serving_key = _new_key()
        serving = _certificate(
            serving_key,
            "kube-apiserver",
            issuer=(ca, ca_key),
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()))),
            usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
        )
        _write_pair(pki, "apiserver", serving, serving_key)
        admin_key = _new_key()
        admin = _certificate(
            admin_key,
            "okvqa-testenv-admin",
            issuer=(ca, ca_key),
            organizations=("system:masters",),
            usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        )
        _write_pair(pki, "admin", admin, admin_key)
        sa_key = _new_key()
        (pki / "sa.key").write_bytes(_key_pem(sa_key))
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _write_kubeconfig(self, pki: Path) -> None:
        """A self-contained admin kubeconfig (certificates inline), so it can be copied elsewhere."""

        def b64(name: str) -> str:
            return base64.b64encode((pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "okvqa-testenv",
                    "cluster": {"server": self.server, "certificate-authority-data": b64("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "okvqa-testenv-admin",
                    "user": {
                        "client-certificate-data": b64("admin.crt"),
                        "client-key-data": b64("admin.key"),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "okvqa-testenv",
                    "context": {"cluster": "okvqa-testenv", "user": "okvqa-testenv-admin"},
                }
            ],
            "current-context": "okvqa-testenv",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _apiserver_args(self, pki: Path, ports: dict[str, int]) -> list[str]:
        assert self.dir is not None
        return [
            self._bin("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['api']}",
            f"--cert-dir={self.dir / 'apiserver'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            # 127.0.0.1 is not a valid Endpoints address: keep the `kubernetes` Service without endpoints.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]

    def _write_kwok_config(self) -> Path:
        assert self.dir is not None
        documents = [(self.binaries / stage).read_text().strip() for stage in KWOK_STAGES]
        documents += [yaml.safe_dump(stage, sort_keys=False).strip() for stage in POD_FINISH_STAGES]
        path = self.dir / "kwok.yaml"
        path.write_text("\n---\n".join(documents) + "\n")
        return path

    @staticmethod
    def _node(node: FakeNode) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node.name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": node.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    **node.labels,
                },
            },
            "status": {"capacity": node.capacity, "allocatable": node.capacity},
        }

    @staticmethod
    def _nodes_ready(api: _Api) -> bool:
        nodes = api.get("/api/v1/nodes") or {}
        ready = {n["metadata"]["name"] for n in nodes.get("items", []) if _condition_true(n, "Ready")}
        return ready >= {node.name for node in NODES}

    def _start_training_operator(self, api: _Api, ports: dict[str, int]) -> _Component:
        """The operator with its validating webhook served on 127.0.0.1 and registered with the API server."""
        certs = _operator_webhook_certs()
        api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
        )
        api.create(
            f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": OPERATOR_WEBHOOK_SECRET},
                "data": {name: base64.b64encode(value).decode() for name, value in certs.items()},
            },
        )
        api.create(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": OPERATOR_WEBHOOK_CONFIGURATION},
                "webhooks": [
                    {
                        # The webhook as the operator's release manifests declare it, but reached by URL:
                        # there is no Service network to route a Service reference through.
                        "name": "validator.pytorchjob.training-operator.kubeflow.org",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 10,
                        "clientConfig": {
                            "url": f"https://127.0.0.1:{ports['webhook']}{PYTORCHJOB_WEBHOOK_PATH}",
                            "caBundle": base64.b64encode(certs["ca.crt"]).decode(),
                        },
                        "rules": [
                            {
                                "apiGroups": ["kubeflow.org"],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE", "UPDATE"],
                                "resources": ["pytorchjobs"],
                            }
                        ],
                    }
                ],
            },
        )
        return self._spawn(
            "training-operator",
            [
                self._bin("training-operator"),
                f"--kubeconfig={self.kubeconfig}",
                "--enable-scheme=pytorchjob",
                f"--webhook-server-port={ports['webhook']}",
                f"--metrics-bind-address=127.0.0.1:{ports['op_metrics']}",
                f"--health-probe-bind-address=127.0.0.1:{ports['op_health']}",
                "--leader-elect=false",
            ],
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig), "MY_POD_NAMESPACE": OPERATOR_NAMESPACE},
        )

    def _start_s3(self) -> tuple[_Component, Callable[[], bool]]:
        """SeaweedS3, launched now and waited for last, so it starts while the rest of the plane does."""
        assert self.dir is not None
        seaweed = SeaweedS3(binaries=self.binaries)
        component = seaweed.launch(self.dir, self.dir / "logs" / "seaweedfs.log")
        self._components.append(component)  # stop() reaps it with the others; self.dir holds its data
        self.s3 = seaweed.endpoint
        return component, seaweed.ready
