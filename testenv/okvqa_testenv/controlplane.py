"""A real Kubernetes control plane on 127.0.0.1, for the cluster tests and `okvqa-k8s dev cluster up`.

Why: the CRD, the operator, RBAC and PyTorchJob admission are only proven against the real API machinery,
so this starts the real binaries that `make testenv` builds (k8s/testenv/build.sh): etcd, kube-apiserver
(RBAC on, default admission plugins plus OwnerReferencesPermissionEnforcement, service-account tokens),
kube-controller-manager (Job controller, garbage collector, service-account and root-CA publishers),
kube-scheduler, kwok standing in for the
kubelets of three fake Nodes (two with 8 `nvidia.com/gpu` each, one CPU-only), and the Kubeflow training
operator v1 with its validating admission webhook registered, so its admission rules apply. Optionally
an S3 server, and one real node (node.py: kubelet + containerd, kube-proxy, CoreDNS) beside the kwok
nodes, which are then tainted so that pods run for real unless they tolerate `okvqa.dev/kwok`. Nothing
here is a fake API server.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from okvqa_testenv import images, kueue, kwok, node, training_operator
from okvqa_testenv.api import Api, condition_true
from okvqa_testenv.paths import testenv_dir
from okvqa_testenv.pki import CLIENT_AUTH, SERVER_AUTH, ClusterCa, mount_pair
from okvqa_testenv.processes import START_TIMEOUT_S, Component, StartStop, free_ports, http_ok, wait_until
from okvqa_testenv.s3 import S3_BINARY, MinioS3, S3Endpoint

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "training-operator",
)
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def missing_binaries(
    directory: Path | None = None, *, s3: bool = True, real_node: bool = False, queueing: bool = False
) -> list[str]:
    """The files `make testenv` should have built into `directory` but did not, by name."""
    base = directory or testenv_dir()
    wanted = [*BINARIES, *([S3_BINARY] if s3 else []), training_operator.PYTORCHJOB_CRD, *kwok.KWOK_STAGES]
    wanted += [kueue.BINARY, *kueue.REQUIRED] if queueing else []
    wanted += list(node.BINARIES) if real_node else []
    return [name for name in wanted if not (base / name).is_file()]


class ControlPlane(StartStop):
    """etcd, kube-apiserver, controller-manager, scheduler, kwok, training operator (and S3, and Kueue)
    on 127.0.0.1.

    Use as a context manager, or start()/stop(). `kubeconfig` is an admin kubeconfig (client certificate
    in group system:masters); `env()` is the environment for subprocesses that should talk to it.
    """

    def __init__(
        self,
        *,
        s3: bool = False,
        real_node: bool = False,
        queueing: bool = False,
        binaries: Path | None = None,
        workdir: Path | None = None,
    ) -> None:
        """`s3` also starts an S3 server; `real_node` a real Node (root only); `queueing` Kueue (kueue.py);
        `binaries` defaults to testenv_dir(); `workdir` is the parent of the temporary data directory
        (logs, etcd data, certificates), by default the system's."""
        self.binaries = binaries or testenv_dir()
        self.s3_enabled = s3
        self.real_node = real_node
        self.queueing = queueing
        self._parent = workdir
        self.dir: Path | None = None
        self.server = ""
        self.s3: S3Endpoint | None = None
        self.node: node.RealNode | None = None
        self.api: Api | None = None
        self.ca: ClusterCa | None = None
        self.start_seconds: float | None = None
        self.leftovers: list[str] = []  # what a stopped real node could not put back (empty: nothing)
        self._components: list[Component] = []

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

    def start(self) -> None:
        """Start everything and return once pods can be scheduled, run and be admitted as in a cluster."""
        missing = missing_binaries(
            self.binaries, s3=self.s3_enabled, real_node=self.real_node, queueing=self.queueing
        )
        if self.real_node:
            node.check_can_run(self.binaries)
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
        their watches waits out its grace period. A real node goes first and puts the machine back.
        """
        if self.node is not None:
            self.leftovers = self.node.stop()
            self.node = None
        for component in reversed(self._components):
            component.stop()
        self._components.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # -- start-up, in dependency order

    def _bin(self, name: str) -> str:
        return str(self.binaries / name)

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, grace_s: float = 5.0
    ) -> Component:
        assert self.dir is not None
        component = Component(name, argv, self.dir / "logs" / f"{name}.log", env, grace_s)
        self._components.append(component)
        component.start()
        return component

    def _wait(
        self, what: str, check: Callable[[], bool], blame: Component, timeout: float = START_TIMEOUT_S
    ) -> None:
        """Poll `check` until true; fail fast, with the right log, when any component dies."""
        wait_until(what, check, self._components, blame, timeout)

    def _start(self) -> None:
        assert self.dir is not None
        (self.dir / "logs").mkdir()
        pki = self.dir / "pki"
        pki.mkdir()
        # With a real node the API server listens on the node's bridge, where pods (and kube-proxy's
        # `kubernetes` Service) reach it; the bridge must exist first.
        api_host = "127.0.0.1"
        if self.real_node:
            self.node = node.RealNode(self.binaries, self.dir / "node", SERVICE_CLUSTER_IP_RANGE)
            self.node.prepare()
            api_host = node.NODE_IP
        self.ca = ca = self._write_pki(pki, api_host)
        port_names = ["etcd", "etcd_peer", "kcm", "sched", "webhook", "op_metrics", "op_health"]
        port_names += [*kueue.PORTS] if self.queueing else []
        ports = dict(zip(port_names, free_ports(len(port_names)), strict=True))
        ports["api"] = free_ports(1, api_host)[0]
        self.server = f"https://{api_host}:{ports['api']}"
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
        self._wait("etcd health", lambda: http_ok(f"http://127.0.0.1:{ports['etcd']}/health"), etcd)

        apiserver = self._spawn("kube-apiserver", self._apiserver_args(pki, ports))
        api = Api(ports["api"], pki / "ca.crt", pki / "admin.crt", pki / "admin.key", host=api_host)
        self.api = api
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
        kwok_process = self._spawn(
            "kwok",
            [
                self._bin("kwok"),
                f"--kubeconfig={kubeconfig}",
                f"--config={kwok.write_config(self.binaries, self.dir / 'kwok.yaml')}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={kwok.KWOK_NODE_ANNOTATION}=fake",
                # Addresses kwok reports for its nodes and pods: nothing ever dials them.
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.2",
                "--node-lease-duration-seconds=40",
            ],
        )
        for fake in kwok.NODES:
            api.create("/api/v1/nodes", fake.manifest())

        crd = yaml.safe_load((self.binaries / training_operator.PYTORCHJOB_CRD).read_text())
        api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
        self._wait(
            "the PyTorchJob CRD to be established",
            lambda: condition_true(api.get(crd_path), "Established"),
            apiserver,
        )
        for path, obj in training_operator.bootstrap_objects(
            training_operator.webhook_certs(), ports["webhook"]
        ):
            api.create(path, obj)
        operator = self._spawn(
            "training-operator",
            training_operator.argv(
                self._bin("training-operator"), self.kubeconfig, ports, init_image=images.BASE_IMAGE
            ),
            env={
                **os.environ,
                "KUBECONFIG": str(self.kubeconfig),
                "MY_POD_NAMESPACE": training_operator.NAMESPACE,
            },
        )

        queueing = self._start_kueue(api, apiserver, ports) if self.queueing else None

        self._wait(
            "kube-controller-manager /healthz",
            lambda: http_ok(f"https://127.0.0.1:{ports['kcm']}/healthz"),
            kcm,
        )
        self._wait(
            "kube-scheduler /healthz",
            lambda: http_ok(f"https://127.0.0.1:{ports['sched']}/healthz"),
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
        self._wait("kwok Nodes to be Ready", lambda: self._nodes_ready(api), kwok_process)
        self._wait(
            "the training operator /readyz",
            lambda: http_ok(f"http://127.0.0.1:{ports['op_health']}/readyz"),
            operator,
        )
        if queueing is not None:
            # Ready once the API server gets through its webhooks: a dry-run create passes them.
            self._wait("Kueue's webhooks", lambda: kueue.admits(api), queueing)
        if s3 is not None:
            component, check = s3
            self._wait("the S3 server", check, component)
        if self.node is not None:
            self.node.start(api, ca, self.server, self._spawn)
            for fake in kwok.NODES:
                api.patch(f"/api/v1/nodes/{fake.name}", {"spec": {"taints": [node.KWOK_TAINT]}})

    def _start_kueue(self, api: Api, apiserver: Component, ports: dict[str, int]) -> Component:
        """Kueue's CRDs, namespace, certificate Secret and webhooks, then Kueue itself (waited for later)."""
        assert self.dir is not None
        certs = kueue.webhook_certs()
        definitions = kueue.crds(self.binaries, certs, ports["kueue_webhook"])
        for crd in definitions:
            api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        for crd in definitions:
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
            self._wait(
                f"the CRD {crd['metadata']['name']} to be established",
                lambda path=path: condition_true(api.get(path), "Established"),
                apiserver,
            )
        for path, obj in kueue.bootstrap_objects(self.binaries, certs, ports["kueue_webhook"]):
            api.create(path, obj)
        cert_dir = self.dir / "kueue-certs"
        mount_pair(certs, cert_dir)
        config = kueue.write_config(self.dir / "kueue.yaml", ports, cert_dir)
        return self._spawn(
            "kueue",
            kueue.argv(self._bin(kueue.BINARY), config),
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )

    def _write_pki(self, pki: Path, api_host: str) -> ClusterCa:
        ca = ClusterCa.create(pki)
        ca.issue(
            "apiserver",
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=tuple(
                dict.fromkeys(
                    ("127.0.0.1", api_host, str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts())))
                )
            ),
            usages=(SERVER_AUTH,),
        )
        ca.issue("admin", "okvqa-testenv-admin", organizations=("system:masters",), usages=(CLIENT_AUTH,))
        ca.write_service_account_keys()
        return ca

    def _write_kubeconfig(self, pki: Path) -> None:
        """A self-contained admin kubeconfig (certificates inline), so it can be copied elsewhere."""
        write_kubeconfig(self.kubeconfig, self.server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key")

    def _apiserver_args(self, pki: Path, ports: dict[str, int]) -> list[str]:
        assert self.dir is not None
        if self.node is not None:
            # Pods reach it through the `kubernetes` Service (kube-proxy) at the node's address; it reaches
            # kubelets by their InternalIP with the admin certificate and checks theirs.
            where = [
                f"--bind-address={node.NODE_IP}",
                f"--advertise-address={node.NODE_IP}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            ]
        else:
            # 127.0.0.1 is not a valid Endpoints address: keep the `kubernetes` Service without endpoints.
            where = [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
            ]
        return [
            self._bin("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            *where,
            f"--secure-port={ports['api']}",
            f"--cert-dir={self.dir / 'apiserver'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            # On by default in OpenShift: an ownerReference with blockOwnerDeletion needs `update` on the
            # owner's finalizers. Enforced here so the chart's RBAC is proven against it.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--profiling=false",
        ]

    @staticmethod
    def _nodes_ready(api: Api) -> bool:
        nodes = api.get("/api/v1/nodes") or {}
        ready = {n["metadata"]["name"] for n in nodes.get("items", []) if condition_true(n, "Ready")}
        return ready >= {fake.name for fake in kwok.NODES}

    def _start_s3(self) -> tuple[Component, Callable[[], bool]]:
        """The S3 server, launched now and waited for last, so it starts while the rest of the plane does."""
        assert self.dir is not None
        server = MinioS3(binaries=self.binaries)
        component = server.launch(self.dir, self.dir / "logs" / "s3.log")
        self._components.append(component)  # stop() reaps it with the others; self.dir holds its data
        self.s3 = server.endpoint
        return component, server.ready


def write_kubeconfig(
    path: Path, server: str, ca: Path, cert: Path, key: Path, user: str = "okvqa-testenv-admin"
) -> None:
    """A self-contained kubeconfig (certificates inline, mode 0600), so it can be copied elsewhere."""

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "okvqa-testenv", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
        ],
        "contexts": [{"name": "okvqa-testenv", "context": {"cluster": "okvqa-testenv", "user": user}}],
        "current-context": "okvqa-testenv",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
