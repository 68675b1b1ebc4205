"""The test control plane behaves like a cluster where it matters to us: real API server, RBAC,
controllers, scheduler, kwok nodes and pods, the Kubeflow training operator and its admission webhook,
Kueue and its webhooks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from okvqa_testenv import FAIL_ANNOTATION, GPU_RESOURCE, NODES, ControlPlane, ControlPlaneError
from tests.cluster_fixture import exists, wait_for

pytestmark = pytest.mark.cluster

T = TypeVar("T")
IMAGE = "registry.k8s.io/pause:3.10"


@pytest.fixture(scope="session")
def api(cluster: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    """A namespace of its own per test, so tests cannot see each other's objects."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods are refused until the namespace's default ServiceAccount exists.
    wait_for(
        "the default ServiceAccount",
        lambda: exists(lambda: core.read_namespaced_service_account("default", name)),
    )
    yield name
    core.delete_namespace(name)


def _condition(obj: dict[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions") or []
    )


def _pytorchjob(name: str, *, masters: int = 1, fail_master: bool = False) -> dict[str, Any]:
    def replica(count: int, annotations: dict[str, str]) -> dict[str, Any]:
        return {
            "replicas": count,
            "restartPolicy": "Never",
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": [{"name": "pytorch", "image": IMAGE}]},
            },
        }

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": replica(masters, {FAIL_ANNOTATION: "true"} if fail_master else {}),
                "Worker": replica(1, {}),
            }
        },
    }


def _jobs(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def test_api_server_answers_with_the_pinned_release(api: client.ApiClient) -> None:
    version = client.VersionApi(api).get_code()
    # A real release number, as k8s/testenv/build.sh stamps it, not the unstamped v0.0.0-master.
    assert version.major == "1" and int(version.minor) >= 30 and version.git_version.startswith("v1.")


def test_kwok_nodes_are_ready_with_gpu_capacity(api: client.ApiClient) -> None:
    nodes = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    assert set(nodes) == {n.name for n in NODES}
    for expected in NODES:
        node = nodes[expected.name]
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True"
        assert node.status.allocatable.get(GPU_RESOURCE) == expected.capacity.get(GPU_RESOURCE)
    assert sum(int(n.status.capacity.get(GPU_RESOURCE, "0")) for n in nodes.values()) == 16


def test_a_gpu_pod_is_scheduled_and_becomes_ready(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    container = client.V1Container(
        name="main", image=IMAGE, resources=client.V1ResourceRequirements(limits={GPU_RESOURCE: "8"})
    )
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(metadata=client.V1ObjectMeta(name="p"), spec=client.V1PodSpec(containers=[container])),
    )

    def ready() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("p", namespace)
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        return pod if pod.status.phase == "Running" and conditions.get("Ready") == "True" else None

    pod = wait_for("the pod to be Running and Ready", ready)
    assert pod.spec.node_name.startswith("kwok-gpu-")


def test_a_jobs_pod_completes_and_the_job_completes(api: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api)
    template = client.V1PodTemplateSpec(
        spec=client.V1PodSpec(
            restart_policy="Never", containers=[client.V1Container(name="main", image=IMAGE)]
        )
    )
    batch.create_namespaced_job(
        namespace,
        client.V1Job(metadata=client.V1ObjectMeta(name="j"), spec=client.V1JobSpec(template=template)),
    )

    def complete() -> bool:
        job = batch.read_namespaced_job_status("j", namespace)
        return any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])

    wait_for("the Job to be Complete", complete)
    (pod,) = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="job-name=j").items
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_a_pytorchjob_runs_to_succeeded(api: client.ApiClient, namespace: str) -> None:
    _jobs(api).create_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "pytorchjobs", _pytorchjob("ok")
    )
    core = client.CoreV1Api(api)
    selector = "training.kubeflow.org/job-name=ok"
    wait_for(
        "the operator's two pods",
        lambda: len(core.list_namespaced_pod(namespace, label_selector=selector).items) == 2,
    )
    services = core.list_namespaced_service(namespace, label_selector=selector).items
    assert sorted(s.metadata.name for s in services) == ["ok-master-0", "ok-worker-0"]

    job = wait_for(
        "the PyTorchJob to succeed",
        lambda: (
            j
            if _condition(
                j := _jobs(api).get_namespaced_custom_object(
                    "kubeflow.org", "v1", namespace, "pytorchjobs", "ok"
                ),
                "Succeeded",
            )
            else None
        ),
    )
    assert not _condition(job, "Failed")


def test_a_failing_replica_fails_the_pytorchjob(api: client.ApiClient, namespace: str) -> None:
    objects = _jobs(api)
    objects.create_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "pytorchjobs", _pytorchjob("bad", fail_master=True)
    )
    wait_for(
        "the PyTorchJob to fail",
        lambda: _condition(
            objects.get_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs", "bad"),
            "Failed",
        ),
    )
    (master,) = (
        client.CoreV1Api(api)
        .list_namespaced_pod(
            namespace,
            label_selector="training.kubeflow.org/job-name=bad,training.kubeflow.org/replica-type=master",
        )
        .items
    )
    assert master.status.phase == "Failed"
    assert master.status.container_statuses[0].state.terminated.exit_code == 1


def test_the_webhook_refuses_two_masters(api: client.ApiClient, namespace: str) -> None:
    with pytest.raises(ApiException) as refused:
        _jobs(api).create_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "pytorchjobs", _pytorchjob("two", masters=2)
        )
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'admission webhook "validator.pytorchjob.training-operator.kubeflow.org" denied' in message
    assert "pytorchReplicaSpecs[Master].replicas" in message


def test_kueue_serves_its_webhooks_and_manages_only_queued_jobs(
    api: client.ApiClient, namespace: str
) -> None:
    """Kueue's mutating webhook (by URL, with the testenv's Kueue CA) stamps its finalizer on a
    ResourceFlavor; its PyTorchJob integration leaves a job without a queue alone."""
    kueue = ("kueue.x-k8s.io", "v1beta2")
    name = f"flavor-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": name}}
    flavor = _jobs(api).create_cluster_custom_object(*kueue, "resourceflavors", body)
    assert "kueue.x-k8s.io/resource-in-use" in flavor["metadata"]["finalizers"]
    _jobs(api).create_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "pytorchjobs", _pytorchjob("plain")
    )

    def plain() -> dict[str, Any]:
        return _jobs(api).get_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "pytorchjobs", "plain"
        )

    job = wait_for("the PyTorchJob to succeed", lambda: _condition(plain(), "Succeeded") and plain())
    assert not (job["spec"].get("runPolicy") or {}).get("suspend")
    assert _jobs(api).list_namespaced_custom_object(*kueue, namespace, "workloads")["items"] == []
    _jobs(api).delete_cluster_custom_object(*kueue, "resourceflavors", name)


def test_garbage_collector_deletes_dependents(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[reference])),
    )
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(
        "the dependent to be collected",
        lambda: not exists(lambda: core.read_namespaced_config_map("child", namespace)),
    )


def test_rbac_denies_a_service_account_until_bound(
    api: client.ApiClient, cluster: ControlPlane, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="sa"))
    )
    token = core.create_namespaced_service_account_token(
        "sa", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    ).status.token
    configuration = client.Configuration()
    configuration.host = cluster.server
    configuration.ssl_ca_cert = api.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_sa = client.CoreV1Api(client.ApiClient(configuration))

    with pytest.raises(ApiException) as denied:
        as_sa.list_namespaced_pod(namespace)
    assert denied.value.status == 403  # authenticated (a valid token), but not authorized
    assert f"system:serviceaccount:{namespace}:sa" in denied.value.body

    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="read-pods"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="read-pods"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-pods"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="sa", namespace=namespace)],
        ),
    )
    # The RBAC authorizer sees a new binding through its informer, a moment after the write.
    pods = wait_for(
        "the binding to take effect", lambda: _allowed(lambda: as_sa.list_namespaced_pod(namespace))
    )
    assert pods.items == []


def _allowed(call: Callable[[], T]) -> T | None:
    """The call's result, or None while it is still forbidden (403)."""
    try:
        return call()
    except ApiException as exc:
        if exc.status == 403:
            return None
        raise


def test_s3_serves_with_its_credentials_only(cluster: ControlPlane) -> None:
    assert cluster.s3 is not None
    settings = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )

    def s3(access_key: str, secret_key: str) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=cluster.s3.url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=cluster.s3.region,
            config=settings,
        )

    store = s3(cluster.s3.access_key, cluster.s3.secret_key)
    store.create_bucket(Bucket="testenv")
    store.put_object(Bucket="testenv", Key="datasets/x/manifest.json", Body=b"{}")
    assert store.get_object(Bucket="testenv", Key="datasets/x/manifest.json")["Body"].read() == b"{}"
    with pytest.raises(ClientError):
        s3("not-a-key", "not-a-secret").list_objects_v2(Bucket="testenv")


def test_a_component_that_dies_fails_start_with_its_log_and_leaves_nothing_running(
    cluster: ControlPlane, tmp_path: Path
) -> None:
    binaries = tmp_path / "bin"
    binaries.mkdir()
    for built in cluster.binaries.iterdir():
        if built.name != "kube-apiserver":
            (binaries / built.name).symlink_to(built)
    (binaries / "kube-apiserver").write_text("#!/bin/sh\necho 'E0101 no etcd for you' >&2\nexit 3\n")
    (binaries / "kube-apiserver").chmod(0o755)
    plane = ControlPlane(binaries=binaries, workdir=tmp_path)

    with pytest.raises(ControlPlaneError) as failed:
        plane.start()

    assert "kube-apiserver: exited with code 3" in str(failed.value)
    assert "E0101 no etcd for you" in str(failed.value)
    assert plane.dir is None and list(tmp_path.iterdir()) == [binaries]
