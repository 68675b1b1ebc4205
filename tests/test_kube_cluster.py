"""The CRD, operator and CLI against a real control plane (etcd, kube-apiserver, controller-manager,
scheduler, kwok nodes, the Kubeflow training operator with its webhook): `make testenv`.

Run outputs go to a local directory (the operator runs in this process and reads it), so the test can
write the files training and evaluation would leave: progress.json and the eval results.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import pytest
import yaml
from click.testing import CliRunner

from okvqa_k8s.errors import UserError
from okvqa_k8s.kube import names
from okvqa_k8s.kube.backends.kubernetes import KubernetesCluster
from okvqa_k8s.kube.backends.pod_env import container_env, operator_env
from okvqa_k8s.kube.cli import COMMANDS
from okvqa_k8s.kube.client import ApiError, Kube, object_path
from okvqa_k8s.kube.crd import crd_manifest
from okvqa_k8s.kube.operator import Reconciler, run_operator
from okvqa_k8s.kube.render import Owner, render_network_policy, render_pytorchjob
from okvqa_k8s.spec import parse_spec
from okvqa_testenv import FAIL_ANNOTATION, find_tool
from tests.cluster_fixture import wait_for

pytestmark = pytest.mark.cluster
T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
PHASES = ("Pending", "Training", "Serving", "Evaluating", "Succeeded", "Failed")


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
    # Pod Security `restricted` enforced by the API server: every pod the run creates must pass it.
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
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


def events_reach(kube: Kube, namespace: str, name: str, *expected: str) -> list[str]:
    """The FineTune's event reasons, once they hold every `expected` reason (as often as listed).

    The operator writes the status first and the transition's Event after it, so a test that has just
    seen a phase must wait for its Event rather than read it at once.
    """
    want = Counter(expected)

    def complete() -> list[str] | None:
        reasons = event_reasons(kube, namespace, name)
        return None if want - Counter(reasons) else reasons

    return wait_for(f"events {sorted(expected)} on {name}", complete, 30)


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
            json.dumps({"overall": score, "per_category": {}, "metric": "official"})
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
    inference = {
        "apiKeySecret": {"name": "life-api"},
        "allowedClients": [
            {"podSelector": {"app": "chat"}, "namespaceSelector": {"team": "ml"}},
            {"cidr": "10.0.0.0/8"},
        ],
    }
    spec_file.write_text(yaml.safe_dump(spec_doc(out, inference=inference)))
    kube.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "life-api", "namespace": namespace},
         "stringData": {"api-key": "sk-" + uuid.uuid4().hex}}
    )  # fmt: skip
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
    transitions = ("Pending", "Training", "Serving", "Evaluating", "Succeeded")
    reasons = events_reach(kube, namespace, "life", *transitions)
    # one Event per transition (same-second Events have no reliable order, so compare as a multiset)
    assert sorted(reasons) == sorted(transitions), reasons

    # the base model's server was only there for the "before" score
    wait_for(
        "the base server to go", lambda: kube.get("apps/v1", "Deployment", namespace, "life-base") is None
    )
    assert kube.get("apps/v1", "Deployment", namespace, "life-serve") is not None

    # the API server stored the NetworkPolicy as rendered (nothing pruned) and the key as a reference
    spec = parse_spec(spec_doc(out, inference=inference))
    policy = kube.get("networking.k8s.io/v1", "NetworkPolicy", namespace, "life-inference")
    assert policy is not None
    assert policy["spec"] == render_network_policy(spec, Owner("life", namespace))["spec"]
    server = kube.get("apps/v1", "Deployment", namespace, "life-serve")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in server["containers"][0]["env"]}
    assert env["OKVQA_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "life-api", "key": "api-key"}

    # the pods got exactly the environment the local executor injects
    job = render_pytorchjob(spec, Owner("life", namespace))
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
        ("networking.k8s.io/v1", "NetworkPolicy", "life-inference"),
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
    events_reach(kube, namespace, "broken", "TrainingFailed")
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
    assert Reconciler(KubernetesCluster(kube)).reconcile(namespace, "steady") == "Pending"
    job = kube.get("kubeflow.org/v1", "PyTorchJob", namespace, "steady")
    cm = kube.get("v1", "ConfigMap", namespace, "steady-spec")

    # a spec change after the job exists is refused, visibly, and changes nothing
    path = object_path(names.API_VERSION, names.KIND, namespace, "steady")
    kube.request("PATCH", path, body={"spec": {"nodes": 3}}, content_type="application/merge-patch+json")
    Reconciler(KubernetesCluster(kube)).reconcile(namespace, "steady")  # a second, "restarted" reconciler
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


# --- the CLI as a user runs it (a process: exit codes, stderr, no traceback) and kubectl on the CRD


def okvqa_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "okvqa_k8s.cli", *args]


def okvqa(cluster: Any, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        okvqa_cmd(*args), env=cluster.env(), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def kubectl(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    tool = find_tool("kubectl")
    if tool is None:
        pytest.skip("kubectl is not installed (make tools, or put it on PATH)")
    return subprocess.run([tool, *args], env=cluster.env(), capture_output=True, text=True, timeout=60)


class Watch:
    """`okvqa-k8s status NAME -w` as a process; its lines are collected by a thread as they come."""

    def __init__(self, cluster: Any, name: str, namespace: str) -> None:
        env = {**cluster.env(), "PYTHONUNBUFFERED": "1"}
        argv = okvqa_cmd("status", name, "-n", namespace, "-w", "--interval", "0.3")
        self.name = name
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def phases(self) -> list[str]:
        """The run's phase in every table printed so far ("" before the operator set one)."""
        while not self.lines.empty():
            line = self.lines.get_nowait()
            self.seen.append(line)
        rows = [line.split() for line in self.seen if line.split()[:1] == [self.name]]
        return [row[1] if row[1] in PHASES else "" for row in rows]

    def stop(self) -> int | None:
        """Terminate it (it refreshes until interrupted, like `kubectl get -w`); None if it had exited."""
        exited = self.proc.poll()
        if exited is None:
            self.proc.terminate()
            self.proc.wait(10)
        return exited


@pytest.fixture(scope="module")
def watched_run(kube: Kube, cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One FineTune driven to Succeeded by the operator while `okvqa-k8s status NAME -w` watches it.

    The operator only starts once the watch has printed its first table, so the watch sees the run move.
    Yields (namespace, the phase of every table the watch printed, its exit code if it had exited by
    itself else None, its output).
    """
    ns = f"ft-{uuid.uuid4().hex[:8]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    wait_for("the default ServiceAccount", lambda: kube.get("v1", "ServiceAccount", ns, "default"), 30)
    out = tmp_path_factory.mktemp("watched") / "out"
    write_run_files(out)
    meta = {"name": "watched", "namespace": ns}
    kube.create(
        {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": meta, "spec": spec_doc(out)}
    )
    watch = Watch(cluster, "watched", ns)
    try:
        wait_for("the watch's first table", lambda: watch.phases() or watch.proc.poll() is not None, 60)
        assert watch.proc.poll() is None, "\n".join(watch.seen)
        with OperatorThread(kube):
            wait_for("the run to succeed", lambda: phase_is(kube, ns, "watched", "Succeeded", "Failed"), 120)
        wait_for(
            "the watch to show a terminal phase",
            lambda: {"Succeeded", "Failed"} & set(watch.phases()) or watch.proc.poll() is not None,
            30,
        )
    finally:
        exited = watch.stop()
    yield ns, watch.phases(), exited, "\n".join(watch.seen)
    kube.delete("v1", "Namespace", None, ns)


def test_status_watch_follows_the_run(watched_run: Any) -> None:
    _, phases, exited, output = watched_run
    assert exited is None, f"status -w exited by itself ({exited}):\n{output}"
    assert phases[-1] == "Succeeded", output
    moving = [p for p in phases if p]
    assert len(set(moving)) >= 2, output  # it refreshed while the run moved, not one snapshot
    assert moving == sorted(moving, key=PHASES.index), output  # phases only go forward
    assert "Traceback" not in output


def test_kubectl_get_shows_the_printer_columns(kube: Kube, cluster: Any, watched_run: Any) -> None:
    ns = watched_run[0]
    got = kubectl(cluster, "get", "finetunes", "-n", ns)
    assert got.returncode == 0, got.stderr
    header, row = got.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "NODES", "PROGRESS", "ACCURACY", "ENDPOINT", "AGE"]
    assert row.split()[:6] == [
        "watched",
        "Succeeded",
        "2",
        "3/10",
        "55.5",
        f"http://watched-serve.{ns}.svc:8000",
    ]
    # the CRD's short name works too
    short = kubectl(cluster, "get", "ft", "watched", "-n", ns)
    assert short.returncode == 0 and short.stdout.splitlines()[1].split()[0] == "watched", short


def test_kubectl_explain_shows_the_spec_descriptions(cluster: Any, kube: Kube) -> None:
    spec = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    training = spec["properties"]["training"]

    def explain(path: str) -> str | None:  # the CRD reaches the OpenAPI document shortly after Established
        got = kubectl(cluster, "explain", path)
        return " ".join(got.stdout.split()) if got.returncode == 0 else None

    text = wait_for("kubectl explain finetune.spec.training", lambda: explain("finetune.spec.training"), 30)
    assert "GROUP: okvqa.dev" in text and "KIND: FineTune" in text and "VERSION: v1alpha1" in text
    assert training["description"] in text
    assert "deepspeed <string>" in text and "learningRate" in text
    text = explain("finetunes.spec.training.deepspeed")
    assert text is not None and training["properties"]["deepspeed"]["description"] in text
    assert "zero2" in text and "zero3" in text


def test_logs_finds_the_replica_pod(kube: Kube, cluster: Any, watched_run: Any) -> None:
    """kwok's nodes keep no container logs: the command must still find the right pod and say so."""
    ns = watched_run[0]
    pods = {
        p["metadata"]["name"] for p in kube.list("v1", "Pod", ns, "training.kubeflow.org/job-name=watched")
    }
    assert pods == {"watched-master-0", "watched-worker-0"}
    for replica, pod in (("master", "watched-master-0"), ("worker-0", "watched-worker-0")):
        got = okvqa(cluster, "logs", "watched", "-n", ns, "--replica", replica)
        if got.returncode == 0:  # a node that serves logs (not kwok's): whatever the API returned
            continue
        assert got.returncode == 2 and got.stdout == "", got
        (line,) = got.stderr.splitlines()
        assert line.startswith(f"okvqa-k8s: error: pod {ns}/{pod} (Succeeded on kwok-"), line
        assert "has no logs to show" in line
    missing = okvqa(cluster, "logs", "watched", "-n", ns, "--replica", "worker-3")
    assert missing.returncode == 2 and missing.stdout == "", missing
    assert missing.stderr.splitlines() == [
        f"okvqa-k8s: error: pod {ns}/watched-worker-3 not found "
        "(training pods of run watched: watched-master-0, watched-worker-0)"
    ]


def test_submit_without_operator_drives_the_run_from_the_cli(
    kube: Kube, cluster: Any, namespace: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_run_files(out)
    spec_file = tmp_path / "solo.yaml"
    spec_file.write_text(yaml.safe_dump(spec_doc(out)))
    started = time.monotonic()
    got = okvqa(cluster, "submit", str(spec_file), "-n", namespace, "--no-operator", timeout=150)
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.splitlines() == [
        f"solo: Succeeded: VQA accuracy (official): base 31.25%, finetuned 55.50%; "
        f"serving at http://solo-serve.{namespace}.svc:8000"
    ]
    # each transition is reported once, as the operator's Events would be
    reasons = [line.split()[1].rstrip(":") for line in got.stderr.splitlines()]
    assert reasons[0] == "Pending" and reasons[-1] == "Succeeded" and "Evaluating" in reasons, got.stderr
    assert len(reasons) == len(set(reasons)) and "Traceback" not in got.stderr
    assert time.monotonic() - started < 150

    # no FineTune: the objects were applied directly, unowned, and all carry the run label
    assert kube.list(names.API_VERSION, names.KIND, namespace) == []
    expected = {
        ("v1", "ConfigMap"): {"solo-spec"},
        ("kubeflow.org/v1", "PyTorchJob"): {"solo"},
        ("apps/v1", "Deployment"): {"solo-serve"},  # the base server is gone once its score is in
        ("v1", "Service"): {"solo-serve"},
        ("batch/v1", "Job"): {"solo-eval"},
    }
    for (api_version, kind), wanted in expected.items():
        objs = kube.list(api_version, kind, namespace, f"{names.RUN_LABEL}=solo")
        assert {o["metadata"]["name"] for o in objs} == wanted, kind
        assert all(not o["metadata"].get("ownerReferences") for o in objs), kind
    job = kube.get("kubeflow.org/v1", "PyTorchJob", namespace, "solo")
    assert any(c["type"] == "Succeeded" and c["status"] == "True" for c in job["status"]["conditions"])

    # `delete` finds an operator-less run by its label and removes everything it created
    gone = okvqa(cluster, "delete", "solo", "-n", namespace)
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.startswith("run solo (no FineTune, submitted with --no-operator): deleted ")
    for api_version, kind in expected:
        wait_for(
            f"{kind}s of run solo to be deleted",
            lambda a=api_version, k=kind: not kube.list(a, k, namespace, f"{names.RUN_LABEL}=solo"),
        )
    again = okvqa(cluster, "delete", "solo", "-n", namespace)
    assert again.returncode == 2 and "not found, and no objects labelled okvqa.dev/run=solo" in again.stderr


def test_a_missing_secret_fails_the_run_before_anything_is_created(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """storage.credentialsSecret names a Secret that is not there (then one lacking a key): the run fails
    with SecretNotFound naming it, instead of pods waiting in CreateContainerConfigError for ever."""
    for name, secret in (("nosecret", None), ("nokey", {"AWS_ACCESS_KEY_ID": "AKIA-NEVER-SHOWN"})):
        if secret is not None:
            kube.create(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"{name}-s3", "namespace": namespace},
                    "stringData": secret,
                }
            )
        doc = spec_doc(tmp_path / name, storage={"credentialsSecret": f"{name}-s3"})
        meta = {"name": name, "namespace": namespace}
        kube.create({"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": meta, "spec": doc})
        assert Reconciler(KubernetesCluster(kube)).reconcile(namespace, name) == "Failed"
        status = finetune(kube, namespace, name)["status"]
        assert status["reason"] == "SecretNotFound"
        assert f"Secret {namespace}/{name}-s3" in status["message"]
        assert ("not found" if secret is None else "has no key AWS_SECRET_ACCESS_KEY") in status["message"]
        assert "AKIA-NEVER-SHOWN" not in json.dumps(status)
        assert "SecretNotFound" in event_reasons(kube, namespace, name)
        assert kube.get("v1", "ConfigMap", namespace, f"{name}-spec") is None
        assert kube.get("kubeflow.org/v1", "PyTorchJob", namespace, name) is None


def test_a_same_named_object_the_run_does_not_own_is_refused(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """A ConfigMap `<run>-spec` made by hand (no owner) is neither adopted nor replaced: the run fails
    with NotOwned naming it, and creates nothing."""
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "taken-spec", "namespace": namespace},
            "data": {"spec.yaml": "not this run's"},
        }
    )
    meta = {"name": "taken", "namespace": namespace}
    doc = spec_doc(tmp_path / "out")
    kube.create({"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": meta, "spec": doc})
    assert Reconciler(KubernetesCluster(kube)).reconcile(namespace, "taken") == "Failed"
    status = finetune(kube, namespace, "taken")["status"]
    assert status["reason"] == "NotOwned"
    assert f"ConfigMap {namespace}/taken-spec is owned by nobody" in status["message"]
    assert kube.get("v1", "ConfigMap", namespace, "taken-spec")["data"] == {"spec.yaml": "not this run's"}
    assert kube.get("kubeflow.org/v1", "PyTorchJob", namespace, "taken") is None
