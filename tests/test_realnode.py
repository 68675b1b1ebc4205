"""The whole run in real containers on a real node: the chart, its MinIO, the operator, training pods,
servers and the evaluation Job, with faults injected — then the machine is as it was.

Needs root and `make testenv testenv-host testenv-images` (what `make test` does first); skipped on a
user's machine without them, failed in CI. Tests run in file order: the last one stops the node.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from okvqa_testenv import ControlPlane, find_tool, host
from okvqa_testenv.images import MINIO_IMAGE
from okvqa_testenv.node import NODE_NAME
from tests.cluster_fixture import exists, wait_for
from tests.conftest import REPO

pytestmark = pytest.mark.realnode

NAMESPACE = "okvqa"
RELEASE = "okvqa"
BASE = "localhost/okvqa-testenv/base:bookworm"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
SECURE_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "readOnlyRootFilesystem": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(scope="module")
def before() -> host.HostState:
    """The machine before the node starts (taken first: the module's fixtures start after it)."""
    return host.HostState.capture()


@pytest.fixture(scope="module")
def plane(before: host.HostState, real_cluster: ControlPlane) -> ControlPlane:
    return real_cluster


@pytest.fixture(scope="module")
def api(plane: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(plane.kubeconfig))


@pytest.fixture(scope="module")
def env(plane: ControlPlane) -> dict[str, str]:
    """The environment of a user's shell pointed at this cluster (kubectl, helm, okvqa-k8s)."""
    tools = Path(find_tool("helm") or "helm").parent
    path = os.pathsep.join([str(Path(sys.executable).parent), str(tools), os.environ.get("PATH", "")])
    return {**plane.env(), "PATH": path}


def _namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=RESTRICTED)))
    wait_for(
        f"the default ServiceAccount of {name}",
        lambda: exists(lambda: core.read_namespaced_service_account("default", name)),
    )


def _run(argv: list[str], env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def _pod(name: str, image: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": SECURE_CONTAINER,
                }
            ],
            **spec,
        },
    }


def test_a_restricted_pod_reaches_a_service_by_name_and_its_log_is_served(api: client.ApiClient) -> None:
    ns = f"pods-{uuid.uuid4().hex[:6]}"
    _namespace(api, ns)
    core = client.CoreV1Api(api)
    server = _pod("web", BASE, ["python", "-m", "http.server", "8080", "--directory", "/etc"])
    server["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "name": "http"}]
    server["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": "http"}, "periodSeconds": 1}
    core.create_namespaced_pod(ns, server)
    core.create_namespaced_service(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    # A Service without a ready endpoint rejects (EHOSTUNREACH): the probe starts once the server is ready,
    # and retries while kube-proxy writes the endpoint's rule (its sync is asynchronous, CI saw the race).
    discovery = client.DiscoveryV1Api(api)
    wait_for(
        "a ready endpoint of the web Service",
        lambda: any(
            endpoint.conditions.ready
            for piece in discovery.list_namespaced_endpoint_slice(
                ns, label_selector="kubernetes.io/service-name=web"
            ).items
            for endpoint in piece.endpoints or []
        ),
        timeout=120,
    )
    # Service name → CoreDNS → ClusterIP → kube-proxy → the other pod; and the API through `kubernetes`.
    probe = (
        "import urllib.request, socket, time\n"
        "for attempt in range(30):\n"
        "    try:\n"
        f"        page = urllib.request.urlopen('http://web.{ns}.svc.cluster.local/os-release', timeout=10)\n"
        "        break\n"
        "    except OSError as error:\n"
        "        print('retry:', error); time.sleep(1)\n"
        "else:\n"
        "    raise SystemExit('the web Service never answered')\n"
        "print('web:', page.read().decode().splitlines()[0])\n"
        "print('api:', socket.create_connection(('kubernetes.default.svc', 443), timeout=10).getpeername())"
    )
    client_pod = _pod("probe", BASE, ["python", "-c", probe], restartPolicy="Never")
    core.create_namespaced_pod(ns, client_pod)

    def finished() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("probe", ns)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = wait_for("the probe pod to finish", finished, timeout=180)
    log = core.read_namespaced_pod_log("probe", ns)
    assert pod.status.phase == "Succeeded", log
    assert pod.spec.node_name == NODE_NAME  # kwok's nodes are tainted: pods run for real
    assert 'web: PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"' in log
    assert "api: (" in log
    core.delete_namespace(ns)


# ------------------------------------------------------------------------------------ the whole run


@pytest.fixture(scope="module")
def release(api: client.ApiClient, env: dict[str, str]) -> dict[str, str]:
    """The chart installed with the locally built images into a `restricted` namespace; S3 access."""
    _namespace(api, NAMESPACE)
    began = time.monotonic()
    _run(
        [
            "helm",
            "install",
            RELEASE,
            str(REPO / "charts" / "okvqa"),
            "--namespace",
            NAMESPACE,
            "--values",
            str(REPO / "k8s" / "values-local.yaml"),
            "--wait",
            "--timeout",
            "6m",
        ],
        env,
    )
    print(f"helm install (MinIO + bucket Job + operator ready): {time.monotonic() - began:.0f} s")
    core = client.CoreV1Api(api)
    secret = core.read_namespaced_secret(f"{RELEASE}-s3", NAMESPACE).data
    minio = core.read_namespaced_service(f"{RELEASE}-minio", NAMESPACE)
    # From the host, MinIO is reached at its ClusterIP (kube-proxy), as pods reach it by name.
    return _Keys(
        {
            "AWS_ENDPOINT_URL": f"http://{minio.spec.cluster_ip}:9000",
            "AWS_ACCESS_KEY_ID": base64.b64decode(secret["AWS_ACCESS_KEY_ID"]).decode(),
            "AWS_SECRET_ACCESS_KEY": base64.b64decode(secret["AWS_SECRET_ACCESS_KEY"]).decode(),
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )


class _Keys(dict):
    """The release's S3 environment; its repr (in a failed test's report) shows no secret."""

    def __repr__(self) -> str:
        return f"<S3 keys for {self.get('AWS_ENDPOINT_URL')}>"


def test_the_chart_runs_minio_and_its_bucket_job_in_a_restricted_namespace(
    api: client.ApiClient, release: dict[str, str]
) -> None:
    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(NAMESPACE).items
    images = {c.image for p in pods for c in p.spec.containers}
    assert MINIO_IMAGE in images and "ghcr.io/okvqa-k8s/operator:0.1.0" in images
    assert all(p.spec.node_name == NODE_NAME for p in pods)
    s3 = _s3(release)
    assert "okvqa" in {b["Name"] for b in s3.list_buckets()["Buckets"]}  # made by the mc hook Job


def _s3(keys: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=keys["AWS_ENDPOINT_URL"],
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        region_name=keys["AWS_DEFAULT_REGION"],
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _finetune(api: client.ApiClient, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        "okvqa.dev", "v1alpha1", NAMESPACE, "finetunes", name
    )


def _spec(name: str, *, image: str = "ghcr.io/okvqa-k8s/trainer:0.1.0") -> dict[str, Any]:
    """examples/tiny-cpu.yaml as a user would submit it after `helm install okvqa` in namespace okvqa."""
    doc = yaml.safe_load((REPO / "examples" / "tiny-cpu.yaml").read_text())
    spec = doc["spec"]
    spec.update(image=image, outputUri=f"s3://okvqa/runs/{name}")
    # Checkpoints often enough that the Worker can be deleted after one and training still has steps left.
    spec["training"].update(epochs=6, saveSteps=30, saveTotalLimit=2)
    # Deleting the Worker also restarts the Master (its peer is gone): both count against the limit.
    spec["backoffLimit"] = 6
    return {"apiVersion": "okvqa.dev/v1alpha1", "kind": "FineTune", "metadata": {"name": name}, "spec": spec}


def _diagnose(api: client.ApiClient) -> str:
    """What a failed wait needs explained: the namespace's pods, their containers' states, recent events
    and the last log lines of every container that is not running."""
    core = client.CoreV1Api(api)
    lines = []
    for pod in core.list_namespaced_pod(NAMESPACE).items:
        lines.append(f"pod {pod.metadata.name}: {pod.status.phase} on {pod.spec.node_name}")
        for status in (pod.status.init_container_statuses or []) + (pod.status.container_statuses or []):
            lines.append(f"  {status.name}: restarts {status.restart_count} state {status.state.to_dict()}")
            if not status.state.running:
                try:
                    log = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, container=status.name)
                except ApiException as exc:
                    log = f"(no log: {exc.status})"
                lines += ["    " + line for line in log.splitlines()[-15:]]
    events = core.list_namespaced_event(NAMESPACE).items
    for event in sorted(events, key=lambda e: str(e.last_timestamp))[-25:]:
        involved = event.involved_object
        lines.append(f"event {involved.kind}/{involved.name}: {event.reason}: {event.message}")
    return "\n".join(lines)


def _wait(
    api: client.ApiClient, what: str, probe: Callable[[], Any], timeout: float, every: float = 2
) -> Any:
    try:
        return wait_for(what, probe, timeout, every)
    except pytest.fail.Exception:
        print(_diagnose(api))
        raise


def _pods(core: client.CoreV1Api, selector: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(NAMESPACE, label_selector=selector).items


def test_a_finetune_trains_in_pods_survives_faults_serves_and_evaluates(
    api: client.ApiClient, release: dict[str, str], env: dict[str, str], tmp_path: Path
) -> None:
    from okvqa_k8s.data.synth import make_prepared_dataset

    core = client.CoreV1Api(api)
    name = "tiny-e2e"
    dataset = make_prepared_dataset(tmp_path / "dataset", size=1500, seed=7)
    user = {**env, **release}
    _run(["okvqa-k8s", "data", "stage", str(dataset), "s3://okvqa/datasets/tiny"], user)
    spec_file = tmp_path / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(name)))
    began = time.monotonic()
    _run(["okvqa-k8s", "submit", str(spec_file), "-n", NAMESPACE], user)

    # Fault 1: a Worker pod is deleted once a checkpoint is complete in MinIO.
    checkpoint = _wait(
        api,
        "a complete checkpoint",
        lambda: (_finetune(api, name).get("status") or {}).get("checkpointUri"),
        600,
        2,
    )
    workers = f"training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=worker"
    (worker,) = _pods(core, workers)
    core.delete_namespaced_pod(worker.metadata.name, NAMESPACE)
    _wait(
        api,
        "the Worker pod to be recreated",
        lambda: any(p.metadata.uid != worker.metadata.uid for p in _pods(core, workers)),
        300,
        1,
    )
    job = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "kubeflow.org", "v1", NAMESPACE, "pytorchjobs", name
    )

    # Fault 2: the operator pod is deleted mid-run; its Deployment brings it back.
    (operator,) = _pods(core, "app.kubernetes.io/component=operator")
    core.delete_namespaced_pod(operator.metadata.name, NAMESPACE)

    def settled() -> dict[str, Any] | None:
        status = _finetune(api, name).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = _wait(api, "the FineTune to finish", settled, 1500, 5)
    elapsed = time.monotonic() - began
    print(f"submit → {status['phase']}: {elapsed:.0f} s; accuracy {status.get('accuracy')}")
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)

    # Nothing was created twice: the same PyTorchJob throughout, one of each child.
    now = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "kubeflow.org", "v1", NAMESPACE, "pytorchjobs", name
    )
    assert now["metadata"]["uid"] == job["metadata"]["uid"]
    jobs = client.BatchV1Api(api).list_namespaced_job(NAMESPACE, label_selector=f"okvqa.dev/run={name}").items
    assert [j.metadata.name for j in jobs] == [f"{name}-eval"]

    # Training resumed from MinIO: no step before the checkpoint trained again, one continuous curve.
    s3 = _s3(release)
    metrics = json.loads(s3.get_object(Bucket="okvqa", Key=f"runs/{name}/metrics.json")["Body"].read())
    steps = [r["step"] for r in metrics["log_history"]]
    assert metrics["resumed_from"], "the restarted replicas resumed from a checkpoint"
    assert int(metrics["resumed_from"].rsplit("-", 1)[-1]) >= int(checkpoint.rstrip("/").rsplit("-", 1)[-1])
    assert steps == list(range(1, len(steps) + 1)), "each step trained once, the loss history continuous"

    accuracy = status["accuracy"]
    assert accuracy["finetuned"] >= accuracy["base"] + 20, accuracy

    # The training log, through the API server from the kubelet, and through `okvqa-k8s logs`.
    kubectl_log = _run(["kubectl", "logs", "-n", NAMESPACE, f"{name}-master-0", "-c", "pytorch"], env)
    assert "resuming from" in kubectl_log and "loss" in kubectl_log
    assert "resuming from" in _run(["okvqa-k8s", "logs", name, "-n", NAMESPACE], env)

    # The official OpenAI client on the host, through the Service's ClusterIP.
    _ask_with_openai(core, name)

    # Delete: nothing of the run is left.
    _run(["okvqa-k8s", "delete", name, "-n", NAMESPACE], env)
    selector = f"okvqa.dev/run={name}"

    def gone() -> bool:
        apps, batch = client.AppsV1Api(api), client.BatchV1Api(api)
        left = (
            _pods(core, selector)
            + _pods(core, f"training.kubeflow.org/job-name={name}")
            + core.list_namespaced_service(NAMESPACE, label_selector=selector).items
            + apps.list_namespaced_deployment(NAMESPACE, label_selector=selector).items
            + batch.list_namespaced_job(NAMESPACE, label_selector=selector).items
        )
        return not left

    wait_for("every object of the run to be deleted", gone, 180, 2)


def _ask_with_openai(core: client.CoreV1Api, run: str) -> None:
    import openai
    from PIL import Image

    service = core.read_namespaced_service(f"{run}-serve", NAMESPACE)
    port = service.spec.ports[0].port
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    answer = openai.OpenAI(
        base_url=f"http://{service.spec.cluster_ip}:{port}/v1", api_key="unused"
    ).chat.completions.create(
        model=run,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "What color is the shape?"},
                ],
            }
        ],
        max_tokens=8,
    )
    assert answer.choices[0].message.content.strip()


def test_a_finetune_whose_image_is_not_on_the_node_fails_naming_it(
    api: client.ApiClient, release: dict[str, str], env: dict[str, str], tmp_path: Path
) -> None:
    name = "no-image"
    missing = "ghcr.io/okvqa-k8s/no-such-trainer:0.0.0"
    spec_file = tmp_path / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(name, image=missing)))
    _run(["okvqa-k8s", "submit", str(spec_file), "-n", NAMESPACE], {**env, **release})

    def failed() -> dict[str, Any] | None:
        status = _finetune(api, name).get("status") or {}
        return status if status.get("phase") == "Failed" else None

    status = _wait(api, "the FineTune to fail", failed, 180, 2)
    assert status["reason"] == "ImagePullFailed" and missing in status["message"], status
    _run(["okvqa-k8s", "delete", name, "-n", NAMESPACE], env)


def test_stop_leaves_the_machine_as_it_was(plane: ControlPlane, before: host.HostState) -> None:
    plane.stop()
    assert plane.leftovers == []
    assert before.diff(host.HostState.capture()) == []
