"""The one driver over any `Cluster`, and the one `observe` over any object reader (no API, no processes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from okvqa_k8s.errors import PermanentError, TemporaryError
from okvqa_k8s.kube import names
from okvqa_k8s.kube.cluster import Run
from okvqa_k8s.kube.decide import Action, Create, Event, Observed
from okvqa_k8s.kube.driver import step, until_terminal
from okvqa_k8s.kube.observe import RunFiles, observe
from okvqa_k8s.kube.render import Owner, render_configmap, render_pytorchjob
from okvqa_k8s.spec import parse_spec

SPEC = {"dataset": {"uri": "s3://b/ds"}, "outputUri": "s3://b/out"}
OWNER = Owner("run", "ns")
NO_FILES = RunFiles(read_json=lambda uri: None, latest_checkpoint=lambda spec: None)


@dataclass
class FakeCluster:
    """Children in a dict; `refuse` raises on create of a kind; `job_after` marks the job Succeeded once
    that many steps have run (so `until_terminal` has somewhere to go)."""

    refuse: dict[str, Exception] = field(default_factory=dict)
    gone: bool = False
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: list[Mapping[str, Any]] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    observed: int = 0
    fail_observe: list[Exception] = field(default_factory=list)

    def observe(self, run: Run) -> Observed:
        self.observed += 1
        if self.fail_observe:
            raise self.fail_observe.pop(0)
        job = self.objects.get("PyTorchJob")
        if job is not None:
            job = {**job, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "x"}]}}
        return Observed(configmap=self.objects.get("ConfigMap"), job=job)

    def apply(self, run: Run, action: Action) -> None:
        assert isinstance(action, Create)
        if action.obj["kind"] in self.refuse:
            raise self.refuse[action.obj["kind"]]
        self.objects[action.obj["kind"]] = action.obj

    def publish(self, run: Run, status: Mapping[str, Any]) -> bool:
        self.published.append(status)
        return not self.gone

    def record(self, run: Run, event: Event) -> None:
        self.recorded.append(event.reason)


def test_step_applies_publishes_then_records() -> None:
    cluster = FakeCluster()
    run = step(cluster, Run(OWNER, SPEC), "t")
    assert set(cluster.objects) == {"ConfigMap", "PyTorchJob"}
    assert run.status["phase"] == "Pending" and cluster.published == [run.status]
    assert cluster.recorded == ["Pending"]


def test_permanent_refusal_fails_the_run_with_the_reason() -> None:
    cluster = FakeCluster(refuse={"PyTorchJob": PermanentError("422 Invalid: spec.replicas")})
    run = step(cluster, Run(OWNER, SPEC), "t")
    assert run.status["phase"] == "Failed" and run.status["reason"] == "CreateFailed"
    assert run.status["message"] == "PyTorchJob run: 422 Invalid: spec.replicas"
    assert cluster.recorded == ["Pending", "CreateFailed"]  # the decided events, then the failure


def test_temporary_refusal_propagates_and_nothing_is_published() -> None:
    cluster = FakeCluster(refuse={"ConfigMap": TemporaryError("503 etcd busy", delay=2)})
    with pytest.raises(TemporaryError):
        step(cluster, Run(OWNER, SPEC), "t")
    assert cluster.published == [] and cluster.recorded == []


def test_a_gone_run_records_no_events() -> None:
    cluster = FakeCluster(gone=True)
    step(cluster, Run(OWNER, SPEC), "t")
    assert cluster.published and cluster.recorded == []


def test_until_terminal_waits_out_temporary_errors_then_stops_at_a_terminal_phase() -> None:
    cluster = FakeCluster(fail_observe=[TemporaryError("503", delay=7)])
    slept: list[float] = []
    run = until_terminal(cluster, Run(OWNER, SPEC), poll_seconds=0.5, clock=lambda: "t", sleep=slept.append)
    assert run.status["phase"] == "Failed" and run.status["reason"] == "TrainingFailed"
    assert slept == [7, 0.5] and cluster.observed == 3  # retry after the delay, poll, then terminal


class Reader:
    """Objects by (kind, name); pods answered per label selector."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]], pods: dict[str, list[str]]) -> None:
        self.objects, self.pods, self.selectors = objects, pods, []

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def list(
        self, api_version: str, kind: str, namespace: str | None, selector: str = ""
    ) -> list[dict[str, Any]]:
        assert kind == "Pod" and namespace == "ns"
        self.selectors.append(selector)
        return [{"metadata": {"name": pod}} for pod in self.pods.get(selector, [])]


def test_observe_finds_children_by_name_and_lists_every_pod_of_the_run_once() -> None:
    spec = parse_spec(SPEC)
    owned = Owner("run", "ns", "uid-1")
    objects = {
        ("ConfigMap", "run-spec"): render_configmap(spec, owned),
        ("PyTorchJob", "run"): render_pytorchjob(spec, owned),
    }
    reader = Reader(
        objects,
        {
            "training.kubeflow.org/job-name=run": ["run-worker-0", "run-master-0"],
            f"{names.RUN_LABEL}=run": ["run-master-0", "run-serve-abc"],
        },
    )
    files = RunFiles(read_json=lambda uri: {"step": 1, "total_steps": 2}, latest_checkpoint=lambda s: None)
    seen = observe(reader, files, Run(owned, SPEC, {"phase": "Training"}))
    assert seen.configmap is not None and seen.job is not None and seen.eval_job is None
    assert [p["metadata"]["name"] for p in seen.pods] == ["run-master-0", "run-serve-abc", "run-worker-0"]
    assert seen.progress == {"step": 1, "total_steps": 2}

    # another FineTune's leftover ConfigMap is never adopted; a finished run reads no pods or files
    stranger = Owner("run", "ns", "uid-2")
    assert observe(reader, NO_FILES, Run(stranger, SPEC)).configmap is None
    reader.selectors.clear()
    done = observe(reader, files, Run(owned, SPEC, {"phase": "Succeeded"}))
    assert done.pods == () and done.progress is None and reader.selectors == []


def test_observe_reads_the_manifests_only_before_training_starts() -> None:
    """The evaluation set's and the dataset's manifest.json, read while no PyTorchJob exists: decide
    refuses a run whose evaluation set lacks a category before creating anything."""
    spec = parse_spec(SPEC)
    eval_set = {"counts": {"val": {"per_category": {"Other": 3}}}}
    dataset = {"options": {"category_codes": ["other"]}}
    stored = {"s3://b/ds/eval/manifest.json": eval_set, "s3://b/ds/manifest.json": dataset}
    asked: list[str] = []

    def read(uri: str) -> Any:
        asked.append(uri)
        return stored.get(uri)

    files = RunFiles(read_json=read, latest_checkpoint=lambda s: None)
    seen = observe(Reader({}, {}), files, Run(OWNER, SPEC))
    assert seen.eval_set == eval_set and seen.dataset_manifest == dataset
    assert asked == ["s3://b/ds/eval/manifest.json", "s3://b/ds/manifest.json"]
    running = Reader({("PyTorchJob", "run"): render_pytorchjob(spec, OWNER)}, {})
    asked.clear()
    assert observe(running, files, Run(OWNER, SPEC, {"phase": "Training"})).eval_set is None
    assert asked == ["s3://b/out/progress.json"]
    off = {**SPEC, "evaluation": {"enabled": False}}
    asked.clear()
    assert observe(Reader({}, {}), files, Run(OWNER, off)).eval_set is None and asked == []
