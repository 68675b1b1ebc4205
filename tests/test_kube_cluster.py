"""The CRD, operator and CLI against a real control plane (etcd, kube-apiserver, controller-manager,
scheduler, kwok nodes, the Kubeflow training operator with its webhook): `make testenv`.

Run outputs go to a local directory (the operator runs in this process and reads it), so the test can
write the files training and evaluation would leave: progress.json and the eval results.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import pytest
import yaml
from click.testing import CliRunner

from okvqa_k8s.errors import UserError
from okvqa_k8s.kube import names
from okvqa_k8s.kube.cli import COMMANDS
from okvqa_k8s.kube.client import ApiError, Kube, object_path
from okvqa_k8s.kube.crd import crd_manifest
from okvqa_k8s.kube.operator import Reconciler, run_operator
from okvqa_k8s.kube.render import Owner, render_pytorchjob
from okvqa_k8s.kube.testenv import FAIL_ANNOTATION
from okvqa_k8s.local import container_env, operator_env
from okvqa_k8s.spec import parse_spec
from tests.cluster_fixture import wait_for

pytestmark = pytest.mark.cluster
T = TypeVar("T")


@pytest.fixture(scope="module")
def kube(cluster: Any) -> Kube:
    kube = Kube.from_config(kubeconfig=str(cluster.kubeconfig))
    kube.create(crd_manifest())

    def established() -> bool:
        crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, "finetunes.okvqa.dev")
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (crd.get("status") or {}).get("conditions") or []
        )

    wait_for("the FineTune CRD to be established", established)
    return kube


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"ft-{uuid.uuid4().hex[:8]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for("the default ServiceAccount", lambda: kube.get("v1", "ServiceAccount", name, "default"), 30)
    yield name
    kube.delete("v1", "Namespace", None, name)


class OperatorThread:
    """`okvqa-k8s operator` in a thread, stoppable (to test restarts)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        run_operator(
            self.kube,
            namespace=None,
            resync_seconds=1.0,
            liveness=None,
            stop=self.stop_flag,
            ready=self.ready,
        )

    def __enter__(self) -> OperatorThread:
        self.thread.start()
        assert self.ready.wait(30), "operator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.thread.join(30)


@pytest.fixture
def operator(kube: Kube) -> Iterator[OperatorThread]:
    with OperatorThread(kube) as op:
        yield op


def spec_doc(out: Path, **extra: Any) -> dict[str, Any]:
    doc = {
        "dataset": {"uri": "s3://okvqa/datasets/other"},
        "outputUri": str(out),
        "image": "registry.local/okvqa-k8s/trainer:test",
        "nodes": 2,
        "nprocPerNode": 2,
    }
    doc.update(extra)
    return doc


def finetune(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    obj = kube.get(names.API_VERSION, names.KIND, namespace, name)
    assert obj is not None, f"FineTune {namespace}/{name} is gone"
    return obj


def phase_is(kube: Kube, namespace: str, name: str, *phases: str) -> dict[str, Any] | None:
    obj = finetune(kube, namespace, name)
    return obj if (obj.get("status") or {}).get("phase") in phases else None


def event_reasons(kube: Kube, namespace: str, name: str) -> list[str]:
    events = kube.list("v1", "Event", namespace)
    mine = [
        e
        for e in events
        if e["involvedObject"].get("kind") == names.KIND and e["involvedObject"]["name"] == name
    ]
    return [e["reason"] for e in sorted(mine, key=lambda e: e["metadata"]["creationTimestamp"])]


def cli(args: list[str], kubeconfig: Path) -> Any:
    group = click.Group(commands={c.name: c for c in COMMANDS})
    return CliRunner().invoke(group, args, env={"KUBECONFIG": str(kubeconfig)}, catch_exceptions=False)


def write_run_files(out: Path) -> None:
    """What training and evaluation leave in storage (the pods are kwok's, they run nothing)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "progress.json").write_text(json.dumps({"step": 3, "total_steps": 10, "loss": 1.5}))
    for variant, score in (("finetuned", 55.5), ("base", 31.25)):
        (out / "eval" / variant).mkdir(parents=True)
        (out / "eval" / variant / "results.json").write_text(
            json.dumps({"overall": score, "per_category": {}})
        )


def test_api_server_rejects_bad_fields(kube: Kube, namespace: str, tmp_path: Path) -> None:
    path = object_path(names.API_VERSION, names.KIND, namespace)

    def create(spec: dict[str, Any], strict: bool = False) -> ApiError:
        obj = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": "bad"}, "spec": spec}
        with pytest.raises(ApiError) as info:
            kube.request("POST", path, body=obj, query=[("fieldValidation", "Strict")] if strict else None)
        return info.value

    err = create(spec_doc(tmp_path, nodes=0))
    assert err.status == 422 and "spec.nodes" in err.message
    err = create(spec_doc(tmp_path, training={"deepspeed": "zero4"}))
    assert err.status == 422 and "spec.training.deepspeed" in err.message
    err = create(spec_doc(tmp_path, inference={"enabled": False}))
    assert err.status == 422 and "evaluation.enabled requires inference.enabled" in err.message
    err = create({**spec_doc(tmp_path), "noodes": 2}, strict=True)
    assert err.status == 400 and 'unknown field "spec.noodes"' in err.message
    # and a valid one is stored with the spec's defaults filled in by the API server
    meta = {"name": "ok", "namespace": namespace}
    created, _ = kube.create(
        {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": meta, "spec": spec_doc(tmp_path)}
    )
    assert created["spec"]["lora"]["r"] == 128 and created["spec"]["training"]["deepspeed"] == "zero3"
    assert parse_spec(created["spec"]) == parse_spec(spec_doc(tmp_path))


def test_finetune_lifecycle_with_cli(
    kube: Kube, cluster: Any, operator: OperatorThread, namespace: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_run_files(out)
    spec_file = tmp_path / "life.yaml"
    spec_file.write_text(yaml.safe_dump(spec_doc(out)))
    result = cli(["submit", str(spec_file), "-n", namespace], cluster.kubeconfig)
    assert result.exit_code == 0, result.output
    assert f"finetune.okvqa.dev/life created in namespace {namespace}" in result.output

    done = wait_for(
        "the run to succeed", lambda: phase_is(kube, namespace, "life", "Succeeded", "Failed"), 180
    )
    st = done["status"]
    assert st["phase"] == "Succeeded", st
    assert st["accuracy"] == {"finetuned": 55.5, "base": 31.25}
    assert st["endpoint"] == f"http://life-serve.{namespace}.svc:8000"
    assert st["modelUri"] == str(out / "merged") and st["jobName"] == "life" and st["progress"] == "3/10"
    reasons = event_reasons(kube, namespace, "life")
    # one Event per transition (same-second Events have no reliable order, so compare as a multiset)
    assert sorted(reasons) == sorted(["Pending", "Training", "Serving", "Evaluating", "Succeeded"]), reasons

    # the base model's server was only there for the "before" score
    wait_for(
        "the base server to go", lambda: kube.get("apps/v1", "Deployment", namespace, "life-base") is None
    )
    assert kube.get("apps/v1", "Deployment", namespace, "life-serve") is not None

    # the pods got exactly the environment the local executor injects
    job = render_pytorchjob(parse_spec(spec_doc(out)), Owner("life", namespace))
    pods = kube.list("v1", "Pod", namespace, "training.kubeflow.org/job-name=life")
    assert len(pods) == 2
    for pod in pods:
        labels = pod["metadata"]["labels"]
        rtype = labels["training.kubeflow.org/replica-type"].capitalize()
        index = int(labels["training.kubeflow.org/replica-index"])
        (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "pytorch"]
        actual = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        (rendered,) = job["spec"]["pytorchReplicaSpecs"][rtype]["template"]["spec"]["containers"]
        expected = {
            **container_env(rendered, {}),
            **operator_env(job, rtype, index, actual.get("MASTER_ADDR", "")),
        }
        assert actual == expected, (rtype, index)
        assert actual["MASTER_ADDR"] in ("life-master-0", "localhost")
        assert [e["name"] for e in container["env"] if "valueFrom" in e] == []  # no Secret in this spec

    listing = cli(["status", "-n", namespace], cluster.kubeconfig)
    assert "life" in listing.output and "Succeeded" in listing.output and "31.25% → 55.50%" in listing.output
    detail = cli(["status", "life", "-n", namespace], cluster.kubeconfig)
    assert "Evaluated=True" in detail.output

    assert cli(["delete", "life", "-n", namespace], cluster.kubeconfig).exit_code == 0
    children = [
        ("v1", "ConfigMap", "life-spec"),
        ("kubeflow.org/v1", "PyTorchJob", "life"),
        ("apps/v1", "Deployment", "life-serve"),
        ("v1", "Service", "life-serve"),
        ("batch/v1", "Job", "life-eval"),
    ]
    wait_for(
        "the garbage collector to remove the children",
        lambda: all(kube.get(a, k, namespace, n) is None for a, k, n in children),
        120,
    )
    with pytest.raises(UserError, match="not found"):
        cli(["delete", "life", "-n", namespace], cluster.kubeconfig)


def test_failing_training_fails_the_run_with_reason(
    kube: Kube, operator: OperatorThread, namespace: str, tmp_path: Path
) -> None:
    doc = spec_doc(tmp_path / "out", backoffLimit=0, podAnnotations={FAIL_ANNOTATION: "true"})
    kube.create(
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": "broken", "namespace": namespace},
            "spec": doc,
        }
    )
    failed = wait_for("the run to fail", lambda: phase_is(kube, namespace, "broken", "Failed"), 120)
    assert failed["status"]["reason"] == "TrainingFailed"
    assert "PyTorchJob broken failed" in failed["status"]["message"]
    assert "TrainingFailed" in event_reasons(kube, namespace, "broken")
    assert kube.get("apps/v1", "Deployment", namespace, "broken-serve") is None


def test_restart_and_spec_change_create_nothing_twice(kube: Kube, namespace: str, tmp_path: Path) -> None:
    """No operator running: reconcile by hand, 'restart' with a fresh operator, edit the spec mid-run."""
    doc = spec_doc(tmp_path / "out")
    kube.create(
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": "steady", "namespace": namespace},
            "spec": doc,
        }
    )
    assert Reconciler(kube).reconcile(namespace, "steady") == "Pending"
    job = kube.get("kubeflow.org/v1", "PyTorchJob", namespace, "steady")
    cm = kube.get("v1", "ConfigMap", namespace, "steady-spec")

    # a spec change after the job exists is refused, visibly, and changes nothing
    path = object_path(names.API_VERSION, names.KIND, namespace, "steady")
    kube.request("PATCH", path, body={"spec": {"nodes": 3}}, content_type="application/merge-patch+json")
    Reconciler(kube).reconcile(namespace, "steady")  # a second, "restarted" reconciler
    st = finetune(kube, namespace, "steady")["status"]
    cond = next(c for c in st["conditions"] if c["type"] == "SpecAccepted")
    assert cond["status"] == "False" and cond["reason"] == "ChangeRefused"
    assert "SpecChangeRefused" in event_reasons(kube, namespace, "steady")
    now = kube.get("kubeflow.org/v1", "PyTorchJob", namespace, "steady")
    assert now["metadata"]["uid"] == job["metadata"]["uid"]
    assert now["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1

    with OperatorThread(kube):
        wait_for(
            "the run to finish", lambda: phase_is(kube, namespace, "steady", "Serving", "Evaluating"), 120
        )
    assert kube.get("v1", "ConfigMap", namespace, "steady-spec")["metadata"]["uid"] == cm["metadata"]["uid"]
    assert (
        kube.get("kubeflow.org/v1", "PyTorchJob", namespace, "steady")["metadata"]["uid"]
        == job["metadata"]["uid"]
    )
    assert len(kube.list("kubeflow.org/v1", "PyTorchJob", namespace)) == 1
    assert event_reasons(kube, namespace, "steady").count("Pending") == 1
    deployment = kube.get("apps/v1", "Deployment", namespace, "steady-serve")
    assert deployment["metadata"]["ownerReferences"][0]["name"] == "steady"


def test_status_write_retries_a_real_conflict(kube: Kube, namespace: str, tmp_path: Path) -> None:
    kube.create(
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": "racy", "namespace": namespace},
            "spec": spec_doc(tmp_path),
        }
    )
    path = object_path(names.API_VERSION, names.KIND, namespace, "racy")
    calls = []

    def compute(current: dict[str, Any]) -> dict[str, Any]:
        calls.append(current["metadata"]["resourceVersion"])
        if len(calls) == 1:  # another writer slips in between our read and our write
            kube.request(
                "PATCH",
                path,
                body={"metadata": {"labels": {"touched": "yes"}}},
                content_type="application/merge-patch+json",
            )
        return {"phase": "Pending", "message": f"attempt {len(calls)}"}

    kube.patch_status(namespace, "racy", compute)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert finetune(kube, namespace, "racy")["status"]["message"] == "attempt 2"
