"""Reconciler wiring with an in-memory stand-in for the Kube adapter (the API itself: test_kube_cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from okvqa_k8s.kube import names
from okvqa_k8s.kube.backends.kubernetes import KubernetesCluster
from okvqa_k8s.kube.client import ApiError, api_error
from okvqa_k8s.kube.observe import RunFiles
from okvqa_k8s.kube.operator import Reconciler

SPEC = {"dataset": {"uri": "s3://bkt/ds"}, "outputUri": "s3://bkt/out"}


class MemoryKube:
    """Objects by (kind, namespace, name); `refuse` maps a kind to the API error its creation gets."""

    def __init__(self, refuse: dict[str, ApiError] | None = None) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str]] = []
        self.refuse = refuse or {}
        self.creates = 0

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if obj["kind"] in self.refuse:
            raise self.refuse[obj["kind"]]
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self.objects:
            return self.objects[key], False
        self.creates += 1
        self.objects[key] = obj
        return obj, True

    def list(
        self, api_version: str, kind: str, namespace: str | None, selector: str = ""
    ) -> list[dict[str, Any]]:
        return []  # no pods: nothing runs here

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        return self.objects.pop((kind, namespace, name), None) is not None

    def patch_status(self, namespace: str, name: str, compute: Any) -> dict[str, Any]:
        obj = self.objects[(names.KIND, namespace, name)]
        obj["status"] = compute(obj)
        return obj

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


def fine_tune(kube: MemoryKube, generation: int = 1) -> None:
    meta = {"name": "run", "namespace": "ns", "uid": "u1", "generation": generation}
    kube.objects[(names.KIND, "ns", "run")] = {"apiVersion": names.API_VERSION, "kind": names.KIND,
                                               "metadata": meta, "spec": SPEC}  # fmt: skip


def reconciler(kube: MemoryKube) -> Reconciler:
    files = RunFiles(read_json=lambda uri: None, latest_checkpoint=lambda spec: None)
    return Reconciler(KubernetesCluster(kube, files), clock=lambda: "t")  # type: ignore[arg-type]


def test_reconcile_creates_once_and_records_events() -> None:
    kube = MemoryKube()
    fine_tune(kube, generation=4)
    assert reconciler(kube).reconcile("ns", "run") == "Pending"
    assert reconciler(kube).reconcile("ns", "run") == "Pending"  # a restarted operator
    assert kube.creates == 2 and kube.events == [("Normal", "Pending")]
    status = kube.objects[(names.KIND, "ns", "run")]["status"]
    assert status["observedGeneration"] == 4 and status["jobName"] == "run"
    job = kube.objects[("PyTorchJob", "ns", "run")]
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u1"


def test_refused_object_fails_the_run_with_the_api_reason() -> None:
    kube = MemoryKube(refuse={"PyTorchJob": api_error(422, "Invalid", "spec.pytorchReplicaSpecs: bad")})
    fine_tune(kube)
    assert reconciler(kube).reconcile("ns", "run") == "Failed"
    status = kube.objects[(names.KIND, "ns", "run")]["status"]
    assert status["reason"] == "CreateFailed" and "PyTorchJob run: 422 Invalid" in status["message"]
    assert ("Warning", "CreateFailed") in kube.events


def test_transient_errors_propagate_for_retry_and_gone_objects_are_ignored() -> None:
    kube = MemoryKube(refuse={"ConfigMap": api_error(503, "ServiceUnavailable", "etcd busy")})
    fine_tune(kube)
    with pytest.raises(ApiError) as info:  # transient: must reach kopf/resync, which retry
        reconciler(kube).reconcile("ns", "run")
    assert info.value.status == 503
    assert "status" not in kube.objects[(names.KIND, "ns", "run")]
    assert reconciler(MemoryKube()).reconcile("ns", "missing") is None
