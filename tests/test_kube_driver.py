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

SPEC = {"dataset": {"uri": "s3://bkt/ds"}, "outputUri": "s3://bkt/out"}
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
    seen = observe(reader, files, Run(owned, SPEC, {"phase": "Training"}), secrets=False)
    assert seen.configmap is not None and seen.job is not None and seen.eval_job is None
    assert [p["metadata"]["name"] for p in seen.pods] == ["run-master-0", "run-serve-abc", "run-worker-0"]
    assert seen.progress == {"step": 1, "total_steps": 2}

    # another FineTune's leftover ConfigMap is never adopted; a finished run reads no pods or files
    stranger = Owner("run", "ns", "uid-2")
    assert observe(reader, NO_FILES, Run(stranger, SPEC), secrets=False).configmap is None
    reader.selectors.clear()
    done = observe(reader, files, Run(owned, SPEC, {"phase": "Succeeded"}), secrets=False)
    assert done.pods == () and done.progress is None and reader.selectors == []


def test_observe_reads_the_manifests_only_before_training_starts() -> None:
    """The evaluation set's and the dataset's manifest.json, read while no PyTorchJob exists: decide
    refuses a run whose evaluation set lacks a category before creating anything."""
    spec = parse_spec(SPEC)
    eval_set = {"counts": {"val": {"per_category": {"Other": 3}}}}
    dataset = {"options": {"category_codes": ["other"]}}
    stored = {"s3://bkt/ds/eval/manifest.json": eval_set, "s3://bkt/ds/manifest.json": dataset}
    asked: list[str] = []

    def read(uri: str) -> Any:
        asked.append(uri)
        return stored.get(uri)

    files = RunFiles(read_json=read, latest_checkpoint=lambda s: None)
    seen = observe(Reader({}, {}), files, Run(OWNER, SPEC), secrets=False)
    assert seen.eval_set == eval_set and seen.dataset_manifest == dataset
    assert asked == ["s3://bkt/ds/eval/manifest.json", "s3://bkt/ds/manifest.json"]
    running = Reader({("PyTorchJob", "run"): render_pytorchjob(spec, OWNER)}, {})
    asked.clear()
    assert observe(running, files, Run(OWNER, SPEC, {"phase": "Training"}), secrets=False).eval_set is None
    assert asked == ["s3://bkt/out/progress.json"]
    off = {**SPEC, "evaluation": {"enabled": False}}
    asked.clear()
    assert observe(Reader({}, {}), files, Run(OWNER, off), secrets=False).eval_set is None and asked == []


def test_observe_reads_only_the_key_names_of_the_secrets_the_pods_read() -> None:
    """Before training starts, each Secret a rendered pod reads is looked up; only its key names are
    kept (never a value), and a backend whose pods read no Secret (local) looks nothing up."""
    doc = {**SPEC, "storage": {"credentialsSecret": "s3-keys"}}
    secret = {"metadata": {"name": "s3-keys"}, "data": {"AWS_ACCESS_KEY_ID": "c2VjcmV0"}}
    reader = Reader({("Secret", "s3-keys"): secret}, {})
    seen = observe(reader, NO_FILES, Run(OWNER, doc), secrets=True)
    assert seen.secret_keys == {"s3-keys": frozenset({"AWS_ACCESS_KEY_ID"})}
    assert "c2VjcmV0" not in repr(seen)
    assert observe(Reader({}, {}), NO_FILES, Run(OWNER, doc), secrets=True).secret_keys == {}
    assert observe(reader, NO_FILES, Run(OWNER, doc), secrets=False).secret_keys is None

    class Forbidden(Reader):
        def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
            if kind == "Secret":
                raise PermanentError("403 Forbidden")
            return super().get(api_version, kind, namespace, name)

    assert observe(Forbidden({}, {}), NO_FILES, Run(OWNER, doc), secrets=True).secret_keys is None
    spec = parse_spec(doc)
    running = Reader(
        {("PyTorchJob", "run"): render_pytorchjob(spec, OWNER), ("Secret", "s3-keys"): secret}, {}
    )
    assert (
        observe(running, NO_FILES, Run(OWNER, doc, {"phase": "Training"}), secrets=True).secret_keys is None
    )


def test_observe_never_adopts_a_same_named_child_it_does_not_own() -> None:
    """Another FineTune's child, or an unowned one, is recorded as foreign and not returned as a child;
    a run without a FineTune (`--no-operator`) owns exactly the unowned ones."""
    spec = parse_spec(SPEC)
    mine, other = Owner("run", "ns", "uid-1"), Owner("run", "ns", "uid-0")
    objects = {
        ("PyTorchJob", "run"): render_pytorchjob(spec, other),
        ("ConfigMap", "run-spec"): render_configmap(spec, Owner("run", "ns")),
    }
    seen = observe(Reader(objects, {}), NO_FILES, Run(mine, SPEC), secrets=False)
    assert seen.job is None and seen.configmap is None
    assert [(f.kind, f.owner_kind, f.owner_name) for f in seen.foreign] == [
        ("ConfigMap", None, None),
        ("PyTorchJob", names.KIND, "run"),
    ]
    unowned = observe(Reader(objects, {}), NO_FILES, Run(Owner("run", "ns"), SPEC), secrets=False)
    assert unowned.configmap is not None and unowned.job is None
    assert [(f.kind, f.owner_kind) for f in unowned.foreign] == [("PyTorchJob", names.KIND)]


class QueueReader(Reader):
    """A Reader that also answers Kueue's Workload list, counting the lists."""

    workload_lists = 0

    def list(
        self, api_version: str, kind: str, namespace: str | None, selector: str = ""
    ) -> list[dict[str, Any]]:
        if kind != "Workload":
            return super().list(api_version, kind, namespace, selector)
        self.workload_lists += 1
        return [{"metadata": {"name": "pytorchjob-run"}}]


def test_observe_reads_kueues_workload_only_while_the_job_is_held() -> None:
    """decide reads the Workload only of a suspended job: a running run costs no Workload list."""
    doc = {**SPEC, "queue": "team"}
    job = render_pytorchjob(parse_spec(doc), OWNER)
    job["metadata"]["uid"] = "job-uid"
    reader = QueueReader({("PyTorchJob", "run"): job}, {})
    held = observe(reader, NO_FILES, Run(OWNER, doc, {"phase": "Queued"}), secrets=False)
    assert held.workload == {"metadata": {"name": "pytorchjob-run"}} and reader.workload_lists == 1
    job["spec"]["runPolicy"]["suspend"] = False  # admitted
    running = observe(reader, NO_FILES, Run(OWNER, doc, {"phase": "Training"}), secrets=False)
    assert running.workload is None and reader.workload_lists == 1
