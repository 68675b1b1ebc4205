"""FineTunes sharing a cluster through Kueue v0.17, against the real control plane (`make testenv`).

The queues are the chart's own Kueue objects (helm install with `kueue.enabled`), so the real Kueue
CRDs and webhooks check them: a ClusterQueue with quota for exactly one 2-node run (16
`nvidia.com/gpu`, the two kwok GPU nodes), preemption of lower priorities, and two
WorkloadPriorityClasses. Training pods are kwok's; those annotated `okvqa.dev/kwok-hold` keep running (and
keep their quota) until the test lets them finish.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from okvqa_k8s.kube import names, queueing
from okvqa_k8s.kube.client import Kube, object_path
from okvqa_k8s.kube.decide import condition_true
from okvqa_k8s.layout import node_markers
from okvqa_testenv import HOLD_ANNOTATION, ControlPlane, find_tool
from tests import test_kube_cluster as base
from tests.cluster_fixture import wait_for
from tests.conftest import CHART_DIR, require

pytestmark = pytest.mark.cluster
kube = base.kube  # the module's API client, with the FineTune CRD installed
GPUS = 16  # two kwok nodes of 8
PIPELINE_OFF = {"inference": {"enabled": False}, "evaluation": {"enabled": False}}


class Queues(NamedTuple):
    namespace: str  # holds the LocalQueue `team`
    low: str  # WorkloadPriorityClass names
    high: str


@pytest.fixture(scope="module")
def queues(kube: Kube, cluster: ControlPlane) -> Iterator[Queues]:
    """The chart's Kueue objects (a release of their own) in a fresh namespace; removed after."""
    helm = find_tool("helm")
    require(helm is not None, "helm not found: run k8s/tools.sh or put helm on PATH")
    assert helm is not None
    tag = uuid.uuid4().hex[:6]  # ClusterQueues, flavors and priority classes are cluster-scoped
    made = Queues(f"kueue-{tag}", f"low-{tag}", f"high-{tag}")
    ns = made.namespace
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": ns}})
    chart_queues = {
        "enabled": True,
        "resourceFlavor": f"gpu-{tag}",
        "clusterQueue": f"okvqa-{tag}",
        "localQueue": "team",
        "quota": {"cpu": None, "memory": None, "nvidia.com/gpu": GPUS},
        "preemption": "LowerPriority",
        "priorityClasses": [{"name": made.low, "value": 100}, {"name": made.high, "value": 1000}],
    }
    helm_cmd = [helm, "--kubeconfig", str(cluster.kubeconfig), "-n", ns]
    proc = subprocess.run(
        [*helm_cmd, "install", "queues", str(CHART_DIR), "--set-json", f"kueue={json.dumps(chart_queues)}",
         "--set", "minio.enabled=false", "--set", "s3.existingSecret=s3"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    local_queue = f"/apis/{queueing.WORKLOAD_API}/namespaces/{ns}/localqueues/team"
    wait_for(
        "the LocalQueue to be active",
        lambda: condition_true(kube.request("GET", local_queue), "Active"),
        60,
    )
    yield made
    subprocess.run([*helm_cmd, "uninstall", "queues"], capture_output=True, timeout=120, check=False)
    kube.delete("v1", "Namespace", None, ns)


def submit(kube: Kube, ns: str, name: str, out: Path, **extra: Any) -> None:
    spec = base.spec_doc(out, **{"nprocPerNode": 8, "queue": "team", **PIPELINE_OFF, **extra})
    meta = {"name": name, "namespace": ns}
    kube.create({"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": meta, "spec": spec})


def status(kube: Kube, ns: str, run: str) -> dict[str, Any]:
    return base.finetune(kube, ns, run).get("status") or {}


def reaches(kube: Kube, ns: str, run: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    """The run's status once it is in `phase`."""
    return wait_for(f"{run} to be {phase}", lambda: base.phase_is(kube, ns, run, phase), timeout)["status"]


def pods_of(kube: Kube, ns: str, run: str) -> list[dict[str, Any]]:
    return kube.list("v1", "Pod", ns, f"{names.TRAINING_JOB_LABEL}={run}")


def release(kube: Kube, ns: str, run: str) -> None:
    """Let the held pods of `run` finish (kwok then completes them two seconds later)."""
    for pod in pods_of(kube, ns, run):
        path = object_path("v1", "Pod", ns, pod["metadata"]["name"])
        patch = {"metadata": {"annotations": {HOLD_ANNOTATION: None}}}
        kube.request("PATCH", path, body=patch, content_type="application/merge-patch+json")


def remove(kube: Kube, ns: str, *runs: str) -> None:
    """Delete runs and wait until their jobs (and so their quota) are gone."""
    for run in runs:
        kube.delete(names.API_VERSION, names.KIND, ns, run)
    wait_for(
        "the runs' PyTorchJobs to go",
        lambda: all(kube.get("kubeflow.org/v1", "PyTorchJob", ns, r) is None for r in runs),
        60,
    )


def test_second_run_waits_for_quota_then_runs(
    kube: Kube, cluster: ControlPlane, queues: Queues, tmp_path: Path
) -> None:
    ns = queues.namespace
    with base.OperatorThread(kube):
        submit(kube, ns, "first", tmp_path / "first", podAnnotations={HOLD_ANNOTATION: "true"})
        reaches(kube, ns, "first", "Training")
        submit(kube, ns, "second", tmp_path / "second")
        st = wait_for(
            "the second run to be queued with Kueue's reason",
            lambda: (got := status(kube, ns, "second")).get("queue", {}).get("reason") and got,
            60,
        )
        assert st["phase"] == "Queued" and st["reason"] == "Queued"
        assert st["message"].startswith("waiting in LocalQueue team: couldn't assign flavors to pod set")
        assert "insufficient unused quota for nvidia.com/gpu" in st["message"], st["message"]
        assert st["queue"]["name"] == "team" and st["queue"]["since"]
        admitted = next(c for c in st["conditions"] if c["type"] == "Admitted")
        assert admitted["status"] == "False" and admitted["message"] == st["message"]
        job = kube.get("kubeflow.org/v1", "PyTorchJob", ns, "second")
        assert job["spec"]["runPolicy"]["suspend"] is True
        assert job["metadata"]["labels"][queueing.QUEUE_LABEL] == "team"
        assert pods_of(kube, ns, "second") == [], "a queued run holds no pod"
        assert len(pods_of(kube, ns, "first")) == 2
        # what the user sees while waiting
        got = base.kubectl(cluster, "get", "finetunes", "-n", ns, "-o", "wide")
        assert got.returncode == 0, got.stderr
        header, *rows = got.stdout.splitlines()
        assert header.split()[-3:] == ["WAITING", "QUEUE", "AGE"]
        assert next(r for r in rows if r.startswith("second")).split()[1:3] == ["Queued", "2"]
        detail = base.cli(["status", "second", "-n", ns], cluster.kubeconfig).output
        assert "queue: LocalQueue team, waiting " in detail and "Kueue reason Pending" in detail, detail
        assert "Admitted=False (Queued): waiting in LocalQueue team: couldn't assign flavors" in detail
        print(f"{got.stdout}\n{detail}")

        release(kube, ns, "first")
        reaches(kube, ns, "first", "Succeeded")
        done = reaches(kube, ns, "second", "Succeeded")
    base.events_reach(kube, ns, "second", "Queued", "Training")
    assert "since" not in done["queue"] and done["queue"]["waitedSeconds"] >= 0
    assert len(pods_of(kube, ns, "second")) == 2
    remove(kube, ns, "first", "second")


def test_run_asking_more_than_the_quota_fails(kube: Kube, queues: Queues, tmp_path: Path) -> None:
    ns = queues.namespace
    with base.OperatorThread(kube):
        submit(kube, ns, "huge", tmp_path / "huge", nodes=3)
        st = reaches(kube, ns, "huge", "Failed")
    assert st["reason"] == "Inadmissible"
    assert st["message"].startswith("LocalQueue team can never admit this run: ")
    assert "> maximum capacity (16)" in st["message"], st["message"]
    remove(kube, ns, "huge")  # its job is already gone: the run left the queue


def test_missing_queue_is_a_clear_condition(kube: Kube, queues: Queues, tmp_path: Path) -> None:
    ns = queues.namespace
    with base.OperatorThread(kube):
        submit(kube, ns, "lost", tmp_path / "lost", queue="no-such-queue")
        st = wait_for(
            "the missing queue to show",
            lambda: (got := status(kube, ns, "lost")).get("reason") == "QueueNotFound" and got,
            60,
        )
    assert st["phase"] == "Queued"
    assert st["message"].startswith("LocalQueue no-such-queue doesn't exist"), st["message"]
    cond = next(c for c in st["conditions"] if c["type"] == "Admitted")
    assert cond["status"] == "False" and cond["reason"] == "QueueNotFound"
    remove(kube, ns, "lost")


def test_higher_priority_preempts_and_the_preempted_run_resumes(
    kube: Kube, queues: Queues, tmp_path: Path
) -> None:
    ns, low, high = queues
    out = tmp_path / "low"
    with base.OperatorThread(kube):
        submit(kube, ns, "low", out, priorityClass=low, podAnnotations={HOLD_ANNOTATION: "true"})
        reaches(kube, ns, "low", "Training")
        job_uid = kube.get("kubeflow.org/v1", "PyTorchJob", ns, "low")["metadata"]["uid"]
        # a checkpoint both nodes completed, as training leaves it
        checkpoint = out / "checkpoints" / "checkpoint-20"
        checkpoint.mkdir(parents=True)
        for marker in node_markers(2):
            (checkpoint / marker).write_text("")
        wait_for(
            "the checkpoint in the status",
            lambda: status(kube, ns, "low").get("checkpointUri") == str(checkpoint),
            30,
        )

        submit(kube, ns, "high", tmp_path / "high", priorityClass=high)
        preempted = reaches(kube, ns, "low", "Queued")
        assert preempted["reason"] == "Preempted", preempted
        assert preempted["message"].startswith("Preempted by Kueue ("), preempted["message"]
        wait_for("its pods to go", lambda: pods_of(kube, ns, "low") == [], 60)
        reaches(kube, ns, "high", "Succeeded")
        st = reaches(kube, ns, "low", "Training")
    # The same job, resumed: its new pods train on from the newest checkpoint every node completed.
    assert kube.get("kubeflow.org/v1", "PyTorchJob", ns, "low")["metadata"]["uid"] == job_uid
    assert len(pods_of(kube, ns, "low")) == 2
    assert st["checkpointUri"] == str(checkpoint)
    assert "since" not in st["queue"] and st["queue"]["waitedSeconds"] >= 0
    reasons = base.events_reach(kube, ns, "low", "Queued", "Training", "Training")
    assert reasons.count("Training") == 2, reasons
    remove(kube, ns, "low", "high")
