"""What `decide` sees, gathered the same way whichever backend holds the run's children.

A backend only answers `get` and `list` as the Kubernetes API does (`kube.client.Kube` is one such
answerer, `backends.local.LocalCluster` another). Finding the children by their deterministic names,
refusing another run's leftovers, listing the run's pods and reading its files in storage happen here once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from okvqa_k8s.errors import PermanentError, UserError
from okvqa_k8s.kube import names, queueing
from okvqa_k8s.kube.cluster import Run
from okvqa_k8s.kube.decide import Foreign, Observed, accepted_spec, condition_true
from okvqa_k8s.kube.render import VARIANTS, Owner, secret_references, variants
from okvqa_k8s.kube.states import TERMINAL
from okvqa_k8s.layout import (
    PREPARED_MANIFEST,
    checkpoints_uri,
    eval_dataset_uri,
    node_markers,
    progress_uri,
    result_uri,
)
from okvqa_k8s.spec import FineTuneSpec, parse_spec
from okvqa_k8s.storage.uri import join

log = logging.getLogger("okvqa.observe")


class Objects(Protocol):
    """The two reads of the Kubernetes API that observing needs (signatures of `Kube`'s)."""

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None: ...

    def list(
        self, api_version: str, kind: str, namespace: str | None, selector: str = ""
    ) -> list[dict[str, Any]]: ...


def read_json_or_none(uri: str) -> Any:
    """A JSON file from storage, or None while it does not exist or cannot be read yet."""
    from okvqa_k8s import storage

    try:
        return storage.read_json(uri)
    except (FileNotFoundError, UserError, ValueError, OSError) as exc:
        log.debug("cannot read %s yet: %s", uri, exc)
        return None


def latest_checkpoint_or_none(spec: FineTuneSpec) -> str | None:
    """Latest checkpoint every node has marked complete, or None (none yet, or storage unreachable)."""
    from okvqa_k8s import storage

    prefix = checkpoints_uri(spec)
    try:
        name = storage.latest_complete_checkpoint(prefix, node_markers(spec.nodes))
    except (FileNotFoundError, UserError, OSError) as exc:
        log.debug("cannot list checkpoints of %s: %s", spec.output_uri, exc)
        return None
    return storage.join(prefix, name) if name else None


@dataclass(frozen=True)
class RunFiles:
    """How the run's files in storage are read; tests swap in stand-ins for the two reads."""

    read_json: Callable[[str], Any] = read_json_or_none
    latest_checkpoint: Callable[[FineTuneSpec], str | None] = latest_checkpoint_or_none


def observe(objects: Objects, files: RunFiles, run: Run, *, secrets: bool) -> Observed:
    """Children by their deterministic names; for a run still going, its pods and files in storage too.

    A same-named object this run does not own is recorded in `foreign` and otherwise ignored, so it is
    never adopted (decide refuses or waits). `secrets`: whether this backend's pods read Secrets at all
    (the local one takes credentials from this machine's environment, so there is nothing to check).
    """
    ns, name = run.owner.namespace, run.owner.name
    foreign: list[Foreign] = []

    def child(api_version: str, kind: str, child_name: str) -> dict[str, Any] | None:
        obj = objects.get(api_version, kind, ns, child_name)
        if obj is None or owned_by(obj, run.owner):
            return obj
        ref = next(iter(obj["metadata"].get("ownerReferences") or []), {})
        foreign.append(Foreign(kind, child_name, ref.get("kind"), ref.get("name")))
        return None

    configmap = child("v1", "ConfigMap", names.configmap_name(name))
    job = child("kubeflow.org/v1", "PyTorchJob", names.job_name(name))
    deployments, services = {}, {}
    for variant in VARIANTS:
        server = names.server_name(name, variant)
        if (deployment := child("apps/v1", "Deployment", server)) is not None:
            deployments[variant] = deployment
        if (service := child("v1", "Service", server)) is not None:
            services[variant] = service
    network_policy = child("networking.k8s.io/v1", "NetworkPolicy", names.network_policy_name(name))
    eval_job = child("batch/v1", "Job", names.eval_job_name(name))
    children = Observed(
        configmap=configmap,
        job=job,
        deployments=deployments,
        services=services,
        network_policy=network_policy,
        eval_job=eval_job,
        foreign=tuple(foreign),
    )
    if run.status.get("phase") in TERMINAL:
        return children  # a finished run reads nothing more
    spec = accepted_spec(configmap) or _valid_spec(run.spec)
    if spec is None:
        return children
    progress = files.read_json(progress_uri(spec)) if job else None
    eval_set = dataset_manifest = secret_keys = None
    if job is None and spec.evaluation.enabled:  # checked once, before training starts
        eval_set = files.read_json(join(eval_dataset_uri(spec), PREPARED_MANIFEST))
        dataset_manifest = files.read_json(join(spec.dataset.uri, PREPARED_MANIFEST))
    if job is None and secrets:
        secret_keys = read_secret_keys(objects, ns, secret_references(spec))
    # Only a held job needs its Workload read (decide looks at it only then).
    held = job if spec.queue and job is not None and queueing.suspended(job) else None
    workload, queueing_installed = _workload(objects, run.owner.namespace, held)
    results = {}
    if eval_job is not None and condition_true(eval_job, "Complete"):
        results = {variant: files.read_json(result_uri(spec, variant)) for variant in variants(spec)}
    return replace(
        children,
        pods=run_pods(objects, run.owner),
        progress=progress if isinstance(progress, dict) else None,
        checkpoint_uri=files.latest_checkpoint(spec) if job else None,
        eval_results={k: v for k, v in results.items() if isinstance(v, dict)},
        eval_set=eval_set if isinstance(eval_set, dict) else None,
        dataset_manifest=dataset_manifest if isinstance(dataset_manifest, dict) else None,
        secret_keys=secret_keys,
        workload=workload,
        queueing_installed=queueing_installed,
    )


def read_secret_keys(
    objects: Objects, namespace: str, wanted: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[str]] | None:
    """The key names of each wanted Secret that exists; the values are dropped here, never kept.

    None when Secrets cannot be read from here (a `--no-operator` user without `get secrets`): then
    nothing is known and nothing is refused.
    """
    found = {}
    for secret in wanted:
        try:
            obj = objects.get("v1", "Secret", namespace, secret)
        except PermanentError as exc:
            log.debug("cannot read Secret %s/%s: %s", namespace, secret, exc)
            return None
        if obj is not None:
            found[secret] = frozenset({**(obj.get("data") or {}), **(obj.get("stringData") or {})})
    return found


def _workload(objects: Objects, namespace: str, job: Mapping[str, Any] | None) -> tuple[Any, bool]:
    """(Kueue's Workload of a queued run's job or None, whether the cluster serves the Workload API).

    Kueue labels a job's Workload with the job's uid; an API server without Kueue answers 404."""
    uid = ((job or {}).get("metadata") or {}).get("uid")
    if not uid:
        return None, True
    try:
        found = objects.list(queueing.WORKLOAD_API, "Workload", namespace, f"{queueing.JOB_UID_LABEL}={uid}")
    except PermanentError as exc:
        if getattr(exc, "status", None) == 404:
            return None, False
        raise
    return (found[0] if found else None), True


def run_pods(objects: Objects, owner: Owner) -> tuple[dict[str, Any], ...]:
    """The run's pods by name: training pods by the training operator's label, servers and the eval
    Job's pods by the run label (a pod carrying both is listed once)."""
    selectors = (
        f"{names.TRAINING_JOB_LABEL}={names.job_name(owner.name)}",
        f"{names.RUN_LABEL}={owner.name}",
    )
    pods = {
        pod["metadata"]["name"]: pod
        for selector in selectors
        for pod in objects.list("v1", "Pod", owner.namespace, selector)
    }
    return tuple(pods[name] for name in sorted(pods))


def owned_by(obj: Mapping[str, Any], owner: Owner) -> bool:
    """Whether `obj` is this run's: owned by its FineTune, or, for a run without one (`submit
    --no-operator`, whose objects carry no ownerReference), owned by nobody."""
    refs = obj["metadata"].get("ownerReferences") or []
    if owner.uid is None:
        return not refs
    return any(ref.get("uid") == owner.uid for ref in refs)


def _valid_spec(doc: Mapping[str, Any]) -> FineTuneSpec | None:
    try:
        return parse_spec(dict(doc))
    except UserError:
        return None
