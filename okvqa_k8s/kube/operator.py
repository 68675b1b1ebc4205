"""The FineTune operator: kopf watches; every handler only runs `driver.step` for one FineTune.

Why no kopf create/update handlers or timers: those persist handler progress in annotations and (timers)
add a finalizer that blocks deletion while the operator is down. The reconcile is level-triggered
instead: any event of a FineTune or of a labelled child, plus a periodic resync thread (progress lives
in storage, which sends no events; stuck pods are noticed there too), runs the same idempotent
`reconcile(namespace, name)`: load the FineTune, `step` it through the Kubernetes backend.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from okvqa_k8s.errors import TemporaryError
from okvqa_k8s.kube import names
from okvqa_k8s.kube.backends.kubernetes import KubernetesCluster
from okvqa_k8s.kube.client import Kube
from okvqa_k8s.kube.driver import step, utcnow

log = logging.getLogger("okvqa.operator")


@dataclass
class Reconciler:
    """One FineTune at a time (per-object lock), any number of FineTunes concurrently."""

    cluster: KubernetesCluster
    clock: Callable[[], str] = utcnow
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def reconcile(self, namespace: str, name: str) -> str | None:
        """Bring one FineTune one step further; returns its phase (None when it is gone)."""
        with self._lock(namespace, name):
            run = self.cluster.load(namespace, name)
            if run is None:
                return None
            return step(self.cluster, run, self.clock()).status.get("phase")

    def resync(self, namespace: str | None) -> None:
        """Reconcile every FineTune (the periodic pass that picks up progress written to storage)."""
        for item in self.cluster.kube.list(names.API_VERSION, names.KIND, namespace):
            meta = item["metadata"]
            try:
                self.reconcile(meta["namespace"], meta["name"])
            except TemporaryError as exc:  # the next pass tries again
                log.warning("reconcile of %s/%s: %s", meta["namespace"], meta["name"], exc)
            except Exception:  # one broken run must not stop the others' resync
                log.exception("reconcile of %s/%s failed", meta["namespace"], meta["name"])


def register(reconciler: Reconciler) -> Any:
    """A kopf registry whose handlers only map an event to its FineTune and `reconcile` (= `step`) it."""
    import kopf

    registry = kopf.OperatorRegistry()

    def on_fine_tune(body: Any, type: str | None, **_: Any) -> None:  # noqa: A002 - kopf's argument name
        if type == "DELETED":
            return
        reconciler.reconcile(body["metadata"]["namespace"], body["metadata"]["name"])

    def on_child(body: Any, type: str | None, **_: Any) -> None:  # noqa: A002
        run = (body["metadata"].get("labels") or {}).get(names.RUN_LABEL)
        if run:
            reconciler.reconcile(body["metadata"]["namespace"], run)

    kopf.on.event(names.GROUP, names.VERSION, names.PLURAL, registry=registry)(on_fine_tune)
    for group, version, plural in (
        ("kubeflow.org", "v1", "pytorchjobs"),
        ("apps", "v1", "deployments"),
        ("batch", "v1", "jobs"),
    ):
        kopf.on.event(group, version, plural, labels={names.RUN_LABEL: kopf.PRESENT}, registry=registry)(
            on_child
        )
    return registry


def run_operator(
    kube: Kube,
    *,
    namespace: str | None,
    resync_seconds: float = 15.0,
    liveness: str | None = "http://0.0.0.0:8080/healthz",
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Run kopf in this thread (standalone: one replica, no peering objects) plus the resync thread."""
    import asyncio

    import kopf

    reconciler = Reconciler(KubernetesCluster(kube))
    registry = register(reconciler)
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # our own Events tell the story; kopf's would repeat every handler run
    settings.watching.server_timeout = 60
    # No cluster-scope scanning of CRDs/namespaces: the resources are known, and least-privilege RBAC
    # (a namespaced Role) does not grant those lists.
    settings.scanning.disabled = True
    stop = stop or threading.Event()

    def resync_loop() -> None:
        while not stop.wait(resync_seconds):
            try:
                reconciler.resync(namespace)
            except Exception:
                log.exception("resync failed")

    thread = threading.Thread(target=resync_loop, name="okvqa-resync", daemon=True)
    thread.start()
    _configure_kopf_login(kube, registry)
    try:
        asyncio.run(
            kopf.operator(
                registry=registry,
                settings=settings,
                standalone=True,
                liveness_endpoint=liveness,
                clusterwide=namespace is None,
                namespaces=[namespace] if namespace else (),
                stop_flag=stop,
                ready_flag=ready,
            )
        )
    finally:
        stop.set()


def _configure_kopf_login(kube: Kube, registry: Any) -> None:
    """Log kopf in with the same credentials as our client (kubeconfig, context or service account)."""
    import kopf

    def login(**_: Any) -> kopf.ConnectionInfo:
        cfg = kube.api.configuration
        token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        scheme, _, value = (token or "").partition(" ")
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
            scheme=scheme or None if value else None,
            token=value or None,
        )

    kopf.on.login(registry=registry)(login)
