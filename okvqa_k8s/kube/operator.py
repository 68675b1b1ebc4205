"""The FineTune operator: kopf watches, a thin reconcile that gathers `Observed`, applies `decide`'s actions.

Why no kopf create/update handlers or timers: those persist handler progress in annotations and (timers)
add a finalizer that blocks deletion while the operator is down. The reconcile is level-triggered
instead: any event of a FineTune or of a labelled child, plus a periodic resync thread (progress lives
in storage, which sends no events), runs the same idempotent `reconcile(namespace, name)`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from okvqa_k8s.errors import PermanentError, UserError
from okvqa_k8s.kube import names
from okvqa_k8s.kube.client import ApiError, Kube
from okvqa_k8s.kube.decide import Create, Decision, Delete, Observed, decide, fail
from okvqa_k8s.kube.render import Owner, variants
from okvqa_k8s.kube.states import TERMINAL, Reason
from okvqa_k8s.layout import checkpoints_uri, node_markers, progress_uri, result_uri
from okvqa_k8s.spec import FineTuneSpec, parse_spec

log = logging.getLogger("okvqa.operator")


def utcnow() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_json_or_none(uri: str) -> Any:
    """A JSON file from storage, or None while it does not exist or cannot be read yet."""
    from okvqa_k8s import storage

    try:
        return storage.read_json(uri)
    except (FileNotFoundError, UserError, ValueError, OSError) as exc:
        log.debug("cannot read %s yet: %s", uri, exc)
        return None


def latest_checkpoint_or_none(spec: FineTuneSpec) -> str | None:
    """Latest checkpoint every node has marked complete."""
    from okvqa_k8s import storage

    prefix = checkpoints_uri(spec)
    try:
        name = storage.latest_complete_checkpoint(prefix, node_markers(spec.nodes))
    except (FileNotFoundError, UserError, OSError) as exc:
        log.debug("cannot list checkpoints of %s: %s", spec.output_uri, exc)
        return None
    return storage.join(prefix, name) if name else None


@dataclass
class Reconciler:
    """One FineTune at a time (per-object lock), any number of FineTunes concurrently."""

    kube: Kube
    read_json: Callable[[str], Any] = read_json_or_none
    latest_checkpoint: Callable[[FineTuneSpec], str | None] = latest_checkpoint_or_none
    clock: Callable[[], str] = utcnow
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def reconcile(self, namespace: str, name: str) -> str | None:
        """Bring one FineTune one step further; returns its phase (None when it is gone)."""
        with self._lock(namespace, name):
            fine_tune = self.kube.get(names.API_VERSION, names.KIND, namespace, name)
            if fine_tune is None or fine_tune["metadata"].get("deletionTimestamp"):
                return None
            meta = fine_tune["metadata"]
            owner = Owner(name, namespace, meta["uid"])
            status = fine_tune.get("status") or {}
            observed = self.observe(owner, fine_tune.get("spec") or {}, status)
            decision = decide(
                owner, fine_tune.get("spec") or {}, status, observed, self.clock(), meta.get("generation")
            )
            decision = self.apply(owner, decision, meta.get("generation"))
            self.publish(fine_tune, decision)
            return decision.status.get("phase")

    def observe(self, owner: Owner, spec_doc: dict[str, Any], status: dict[str, Any]) -> Observed:
        """Children by their deterministic names, then the run's files in storage."""
        ns, run = owner.namespace, owner.name
        cm = self.kube.get("v1", "ConfigMap", ns, names.configmap_name(run))
        if cm is not None and not _owned_by(cm, owner):
            cm = None  # a same-named leftover of a deleted FineTune: never adopt another run's spec
        job = self.kube.get("kubeflow.org/v1", "PyTorchJob", ns, names.job_name(run))
        deployments, services = {}, {}
        for variant in ("finetuned", "base"):
            server = names.server_name(run, variant)
            if (d := self.kube.get("apps/v1", "Deployment", ns, server)) is not None:
                deployments[variant] = d
            if (s := self.kube.get("v1", "Service", ns, server)) is not None:
                services[variant] = s
        eval_job = self.kube.get("batch/v1", "Job", ns, names.eval_job_name(run))
        observed = Observed(
            configmap=cm, job=job, deployments=deployments, services=services, eval_job=eval_job
        )
        if status.get("phase") in TERMINAL:
            return observed
        spec = _spec_for_storage(cm, spec_doc)
        if spec is None:
            return observed
        progress = self.read_json(progress_uri(spec)) if job else None
        results = {}
        if eval_job and _complete(eval_job):
            for variant in variants(spec):
                results[variant] = self.read_json(result_uri(spec, variant))
        return Observed(
            configmap=cm,
            job=job,
            deployments=deployments,
            services=services,
            eval_job=eval_job,
            progress=progress if isinstance(progress, dict) else None,
            checkpoint_uri=self.latest_checkpoint(spec) if job else None,
            eval_results={k: v for k, v in results.items() if isinstance(v, dict)},
        )

    def apply(self, owner: Owner, decision: Decision, generation: int | None) -> Decision:
        """Create/delete as decided; an object the API refuses for good fails the run with the reason."""
        for action in decision.actions:
            try:
                if isinstance(action, Create):
                    _, created = self.kube.create(action.obj)
                    if created:
                        log.info(
                            "%s/%s: created %s %s",
                            owner.namespace,
                            owner.name,
                            action.obj["kind"],
                            action.obj["metadata"]["name"],
                        )
                elif isinstance(action, Delete):
                    self.kube.delete(action.api_version, action.kind, owner.namespace, action.name)
            except PermanentError as exc:  # a TemporaryError propagates: the next event or resync retries
                what = action.obj["kind"] if isinstance(action, Create) else action.kind
                name = action.obj["metadata"]["name"] if isinstance(action, Create) else action.name
                reason = Reason.CREATE_FAILED if isinstance(action, Create) else Reason.DELETE_FAILED
                failure = fail(decision.status, reason, f"{what} {name}: {exc}", self.clock(), generation)
                failure.events[:0] = decision.events
                return failure
        return decision

    def publish(self, fine_tune: dict[str, Any], decision: Decision) -> None:
        """Status (409 conflicts re-read and retried) and one Event per transition."""
        meta = fine_tune["metadata"]
        uid = meta["uid"]

        def compute(current: dict[str, Any]) -> dict[str, Any] | None:
            return decision.status if current["metadata"]["uid"] == uid else None

        try:
            self.kube.patch_status(meta["namespace"], meta["name"], compute)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return
        for event in decision.events:
            try:
                self.kube.event(fine_tune, event.type, event.reason, event.message)
            except ApiError as exc:  # an event is a courtesy: never fail the reconcile over it
                log.warning("cannot record event %s on %s: %s", event.reason, meta["name"], exc)

    def resync(self, namespace: str | None) -> None:
        """Reconcile every FineTune (the periodic pass that picks up progress written to storage)."""
        for item in self.kube.list(names.API_VERSION, names.KIND, namespace):
            meta = item["metadata"]
            try:
                self.reconcile(meta["namespace"], meta["name"])
            except Exception:  # one broken run must not stop the others' resync
                log.exception("reconcile of %s/%s failed", meta["namespace"], meta["name"])


def _owned_by(obj: dict[str, Any], owner: Owner) -> bool:
    """Ours, or unowned (objects applied by `submit --no-operator` / `render` carry no ownerReference)."""
    refs = obj["metadata"].get("ownerReferences") or []
    return owner.uid is None or not refs or any(ref.get("uid") == owner.uid for ref in refs)


def _complete(job: dict[str, Any]) -> bool:
    from okvqa_k8s.kube.decide import condition_true

    return condition_true(job, "Complete") is not None


def _spec_for_storage(cm: dict[str, Any] | None, spec_doc: dict[str, Any]) -> FineTuneSpec | None:
    """The accepted spec (ConfigMap) when there is one, else the current spec if valid."""
    import yaml

    from okvqa_k8s.kube.render import SPEC_FILE

    try:
        if cm is not None:
            return parse_spec(yaml.safe_load((cm.get("data") or {}).get(SPEC_FILE, "")))
        return parse_spec(spec_doc)
    except (UserError, yaml.YAMLError):
        return None


def register(reconciler: Reconciler) -> Any:
    """A kopf registry whose handlers only map events to `reconcile(namespace, name)`."""
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

    reconciler = Reconciler(kube)
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
