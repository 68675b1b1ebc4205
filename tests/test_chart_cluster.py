"""The chart against a real API server (k8s/testenv): helm install, upgrade and uninstall, and the operator
running with nothing but the chart's ServiceAccount token.

Least privilege is shown both ways: every rule the operator declares is granted in its namespace and
nothing else is (other namespaces, Secrets, Pods, cluster objects are refused by the real RBAC
authorizer), and the real `okvqa-k8s operator`, logged in as that ServiceAccount, takes a FineTune the
chart created from values to Training (ConfigMap + PyTorchJob admitted by the Kubeflow webhook).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from okvqa_testenv import ControlPlane, find_tool
from tests.cluster_fixture import wait_for
from tests.conftest import CHART_DIR, require

pytestmark = pytest.mark.cluster
T = TypeVar("T")
RELEASE = "okvqa"
GROUP, VERSION, PLURAL = "okvqa.dev", "v1alpha1", "finetunes"
RUN = "chart-run"
RUN_SPEC = {
    "model": {"name": "s3://okvqa/models/tiny"},
    "dataset": {"uri": "s3://okvqa/datasets/tiny"},
    "outputUri": "s3://okvqa/runs/chart-run",
    "nodes": 2,
    "nprocPerNode": 1,
    "gpusPerNode": 0,
    "inference": {"gpus": 0},
}


def status_of(call: Callable[[], Any]) -> int:
    """HTTP status of an API call: 200 when it went through, else the ApiException's code."""
    try:
        call()
    except ApiException as exc:
        return exc.status
    return 200


@pytest.fixture(scope="module")
def helm() -> str:
    path = find_tool("helm")
    require(path is not None, "helm not found: run k8s/tools.sh or put helm on PATH")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def admin(cluster: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


def run_helm(helm: str, cluster: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm, *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=300,
        env=cluster.env(),
        check=False,
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def new_namespace(admin: client.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(admin)
    # Pod Security `restricted` enforced by the API server, as a production namespace would.
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    wait_for(
        "the default ServiceAccount",
        lambda: status_of(lambda: core.read_namespaced_service_account("default", name)) == 200,
    )
    return name


def sa_kubeconfig(cluster: ControlPlane, admin: client.ApiClient, namespace: str, sa: str, out: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (TokenRequest), as the pod would."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = (
        client.CoreV1Api(admin).create_namespaced_service_account_token(sa, namespace, request).status.token
    )
    admin_cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_entry = admin_cfg["clusters"][0]
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [
            {"name": sa, "context": {"cluster": cluster_entry["name"], "user": sa, "namespace": namespace}}
        ],
        "current-context": sa,
    }
    out.write_text(yaml.safe_dump(doc))
    return out


def can(api: client.ApiClient, verb: str, group: str, resource: str, namespace: str | None) -> bool:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, group=group, resource=resource, namespace=namespace or ""
            )
        )
    )
    return bool(client.AuthorizationV1Api(api).create_self_subject_access_review(review).status.allowed)


def operator_rules() -> list[dict[str, Any]]:
    from okvqa_k8s.kube.rbac import OPERATOR_RULES

    return [dict(rule) for rule in OPERATOR_RULES]


@pytest.fixture(scope="module")
def installed(
    helm: str, cluster: ControlPlane, admin: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Release `okvqa` with MinIO off, an existing Secret, and one FineTune from values; removed after."""
    namespace = new_namespace(admin, "chart")
    s3 = cluster.s3
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="team-s3"),
        string_data={
            "AWS_ACCESS_KEY_ID": s3.access_key if s3 else "test-key",
            "AWS_SECRET_ACCESS_KEY": s3.secret_key if s3 else "test-secret-key",
        },
    )
    client.CoreV1Api(admin).create_namespaced_secret(namespace, secret)
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "minio": {"enabled": False},
                "s3": {"existingSecret": "team-s3", "endpoint": s3.url if s3 else "http://127.0.0.1:9"},
                "finetunes": [{"name": RUN, "spec": RUN_SPEC}],
            }
        )
    )
    run_helm(helm, cluster, "install", RELEASE, str(CHART_DIR), "-n", namespace, "--values", str(values))
    yield namespace
    subprocess.run(
        [helm, "uninstall", RELEASE, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    client.CoreV1Api(admin).delete_namespace(namespace)


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [""])
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_install_creates_the_bundle(
    installed: str, admin: client.ApiClient, helm: str, cluster: ControlPlane
) -> None:
    ns = installed
    crd = client.ApiextensionsV1Api(admin).read_custom_resource_definition("finetunes.okvqa.dev")
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    dep = client.AppsV1Api(admin).read_namespaced_deployment("okvqa-operator", ns)
    assert dep.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
    assert dep.spec.template.spec.service_account_name == "okvqa"
    role = client.RbacAuthorizationV1Api(admin).read_namespaced_role("okvqa-operator", ns)
    granted = rule_triples([admin.sanitize_for_serialization(r) for r in role.rules])
    assert granted == rule_triples(operator_rules())
    assert (
        not client.RbacAuthorizationV1Api(admin)
        .list_cluster_role(label_selector="app.kubernetes.io/instance=okvqa")
        .items
    )

    fine_tune = client.CustomObjectsApi(admin).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, RUN)
    assert fine_tune["spec"]["storage"]["credentialsSecret"] == "team-s3"
    assert fine_tune["spec"]["lora"]["r"] == 128, "the API server applied the CRD's defaults"
    status = json.loads(run_helm(helm, cluster, "status", RELEASE, "-n", ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"


def test_service_account_is_granted_exactly_the_operator_rules(
    installed: str, cluster: ControlPlane, admin: client.ApiClient, tmp_path: Path
) -> None:
    ns = installed
    sa = config.new_client_from_config(
        config_file=str(sa_kubeconfig(cluster, admin, ns, "okvqa", tmp_path / "sa"))
    )
    needed = rule_triples(operator_rules())
    for group, resource, verb in sorted(needed):
        assert can(sa, verb, group, resource, ns), f"{verb} {resource}.{group} must be allowed in {ns}"
        assert not can(sa, verb, group, resource, "default"), (
            f"{verb} {resource}.{group} leaks to other namespaces"
        )
    rbac_group = "rbac.authorization.k8s.io"
    beyond = {
        ("", "secrets", "get"), ("", "secrets", "list"), ("", "pods", "create"), ("", "pods/exec", "create"),
        ("", "nodes", "list"), ("", "namespaces", "delete"), ("", "serviceaccounts/token", "create"),
        (rbac_group, "roles", "create"), (rbac_group, "rolebindings", "create"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "create"), ("apps", "daemonsets", "create"),
        ("kueue.x-k8s.io", "workloads", "update"), ("kueue.x-k8s.io", "workloads", "delete"),
        ("kueue.x-k8s.io", "localqueues", "create"), ("kueue.x-k8s.io", "clusterqueues", "list"),
    }  # fmt: skip
    for group, resource, verb in sorted(beyond - needed):
        assert not can(sa, verb, group, resource, ns), f"{verb} {resource}.{group} is not needed yet granted"
    # Real requests, not only reviews: what is granted goes through, what is not is refused.
    custom = client.CustomObjectsApi(sa)
    assert status_of(lambda: custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)) == 200
    assert status_of(lambda: custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)) == 403
    assert status_of(lambda: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)) == 403
    assert status_of(lambda: client.CoreV1Api(sa).list_namespaced_secret(ns)) == 403
    # Kueue's Workloads (why a queued run waits): read in its namespace only, never written.
    workloads = ("kueue.x-k8s.io", "v1beta2")
    assert status_of(lambda: custom.list_namespaced_custom_object(*workloads, ns, "workloads")) == 200
    assert status_of(lambda: custom.list_namespaced_custom_object(*workloads, "default", "workloads")) == 403
    assert status_of(lambda: custom.list_cluster_custom_object(*workloads, "clusterqueues")) == 403


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_operator_as_service_account(
    cluster: ControlPlane, admin: client.ApiClient, release: str, ns: str, sa: str, work: Path
) -> str:
    """Run the real operator with the chart's args and the chart's ServiceAccount token, until it has taken
    the FineTune from values through every kind of child (PyTorchJob, ConfigMap, NetworkPolicy,
    Deployments, Services, evaluation Job) with kwok playing the pods; return its log."""
    kubeconfig = sa_kubeconfig(cluster, admin, ns, sa, work / "sa")
    port = _free_port()
    log = work / "operator.log"
    dep = client.AppsV1Api(admin).read_namespaced_deployment(f"{release}-operator", ns)
    args = dep.spec.template.spec.containers[0].args  # exactly what the chart runs in the pod
    args = [a for a in args if not a.startswith(("--liveness-port", "--resync"))]
    args += [f"--liveness-port={port}", "--resync=2"]
    env = {**cluster.env(), "KUBECONFIG": str(kubeconfig)}
    entry = "from okvqa_k8s.kube.cli import operator; operator(prog_name='okvqa-k8s operator')"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", entry, *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    custom = client.CustomObjectsApi(admin)
    batch = client.BatchV1Api(admin)
    try:
        wait_for(
            "the operator, as the chart's ServiceAccount, to reach the evaluation Job",
            lambda: status_of(lambda: batch.read_namespaced_job(f"{RUN}-eval", ns)) == 200,
            timeout=120,
        )
        assert (
            status_of(
                lambda: custom.get_namespaced_custom_object("kubeflow.org", "v1", ns, "pytorchjobs", RUN)
            )
            == 200
        )
        client.CoreV1Api(admin).read_namespaced_config_map(f"{RUN}-spec", ns)
        client.CoreV1Api(admin).read_namespaced_service(f"{RUN}-serve", ns)
        client.NetworkingV1Api(admin).read_namespaced_network_policy(f"{RUN}-inference", ns)
        status = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, RUN)["status"]
        assert status["phase"] in ("Evaluating", "Succeeded"), status
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200, "the probe endpoint the chart points at answers"
    except BaseException:
        print(f"operator log:\n{log.read_text()[-5000:]}")
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return log.read_text()


def forbidden(log: str) -> list[str]:
    """The distinct refused requests in an operator log (`GET <url> -> APIForbiddenError('...`)."""
    found = re.findall(r"((?:GET|POST|PUT|PATCH|DELETE) \S+) -> APIForbiddenError", log)
    found += re.findall(r"(\S+ is forbidden: User \S+ cannot \w+ resource \S+)", log)
    return sorted(set(found))


def test_operator_reconciles_with_the_chart_service_account(
    installed: str, cluster: ControlPlane, admin: client.ApiClient, tmp_path: Path
) -> None:
    text = run_operator_as_service_account(cluster, admin, RELEASE, installed, "okvqa", tmp_path)
    assert forbidden(text) == [], "the operator needs permissions the chart does not grant"


def test_cluster_wide_operator_upgrade_uninstall(
    helm: str, cluster: ControlPlane, admin: client.ApiClient, tmp_path: Path
) -> None:
    """Cluster-wide mode in a release of its own: the operator reconciles with the ClusterRole, upgrade
    changes it in place, uninstall leaves no RBAC or workload behind (the CRD stays: Helm never deletes
    CRDs it installed from crds/)."""
    work = tmp_path
    ns = new_namespace(admin, "chart-wide")
    rbac = client.RbacAuthorizationV1Api(admin)
    apps = client.AppsV1Api(admin)
    selector = "app.kubernetes.io/instance=wide"
    try:
        # No MinIO: its bucket hook Job would wait for a pod kwok never finishes.
        client.CoreV1Api(admin).create_namespaced_secret(
            ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="s3"),
                string_data={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
            ),
        )
        run_helm(helm, cluster, "install", "wide", str(CHART_DIR), "-n", ns, "--set", "rbac.clusterWide=true",
                 "--set", "minio.enabled=false", "--set", "s3.existingSecret=s3",
                 "--set-json", "finetunes=" + json.dumps([{"name": RUN, "spec": RUN_SPEC}]))  # fmt: skip
        (cluster_role,) = rbac.list_cluster_role(label_selector=selector).items
        assert rule_triples(
            [admin.sanitize_for_serialization(r) for r in cluster_role.rules]
        ) == rule_triples(operator_rules())
        assert not rbac.list_namespaced_role(ns, label_selector=selector).items
        before = apps.read_namespaced_deployment("wide-okvqa-operator", ns)
        assert "--all-namespaces" in before.spec.template.spec.containers[0].args
        text = run_operator_as_service_account(cluster, admin, "wide-okvqa", ns, "wide-okvqa", work)
        assert forbidden(text) == [], "the operator needs permissions the ClusterRole does not grant"

        run_helm(helm, cluster, "upgrade", "wide", str(CHART_DIR), "-n", ns, "--reuse-values", "--set",
                 "operator.resyncSeconds=30")  # fmt: skip
        after = apps.read_namespaced_deployment("wide-okvqa-operator", ns)
        assert "--resync=30" in after.spec.template.spec.containers[0].args
        assert after.metadata.generation > before.metadata.generation

        run_helm(helm, cluster, "uninstall", "wide", "-n", ns, "--wait")
        assert not rbac.list_cluster_role(label_selector=selector).items
        assert not rbac.list_cluster_role_binding(label_selector=selector).items
        assert status_of(lambda: apps.read_namespaced_deployment("wide-okvqa-operator", ns)) == 404
        custom = client.CustomObjectsApi(admin)
        wait_for(
            "the FineTune from values to be deleted (no finalizer may hold it once the operator is gone)",
            lambda: (
                status_of(lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, RUN)) == 404
            ),
            timeout=30,
        )
        client.ApiextensionsV1Api(admin).read_custom_resource_definition("finetunes.okvqa.dev")
    finally:
        subprocess.run([helm, "uninstall", "wide", "-n", ns, "--kubeconfig", str(cluster.kubeconfig)],
                       capture_output=True, timeout=300, check=False)  # fmt: skip
        client.CoreV1Api(admin).delete_namespace(ns)


def test_secret_keys_survive_upgrade(helm: str, cluster: ControlPlane, admin: client.ApiClient) -> None:
    """Generated S3 keys are read back on upgrade, never regenerated (MinIO would lose its data)."""
    ns = new_namespace(admin, "chart-keys")
    core = client.CoreV1Api(admin)
    try:
        run_helm(helm, cluster, "install", "keys", str(CHART_DIR), "-n", ns, "--no-hooks")
        first = core.read_namespaced_secret("keys-okvqa-s3", ns).data
        run_helm(helm, cluster, "upgrade", "keys", str(CHART_DIR), "-n", ns, "--no-hooks", "--reuse-values")
        assert core.read_namespaced_secret("keys-okvqa-s3", ns).data == first
    finally:
        subprocess.run([helm, "uninstall", "keys", "-n", ns, "--kubeconfig", str(cluster.kubeconfig)],
                       capture_output=True, timeout=300, check=False)  # fmt: skip
        core.delete_namespace(ns)


def test_children_with_block_owner_deletion_need_the_finalizers_rule(
    installed: str, cluster: ControlPlane, admin: client.ApiClient, tmp_path: Path
) -> None:
    """The test API server enforces OwnerReferencesPermissionEnforcement (as OpenShift does): a child
    whose ownerReference sets blockOwnerDeletion is admitted for the chart's ServiceAccount, and refused
    with 403 for one granted every operator rule but `finetunes/finalizers` update."""
    ns = installed
    fine_tune = client.CustomObjectsApi(admin).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, RUN)
    owner = client.V1OwnerReference(
        api_version=f"{GROUP}/{VERSION}", kind="FineTune", name=RUN, uid=fine_tune["metadata"]["uid"],
        controller=True, block_owner_deletion=True,
    )  # fmt: skip

    def child(name: str) -> client.V1ConfigMap:
        return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, owner_references=[owner]))

    rbac = client.RbacAuthorizationV1Api(admin)
    lacking = [r for r in operator_rules() if not any(res.endswith("/finalizers") for res in r["resources"])]
    assert len(lacking) == len(operator_rules()) - 1
    client.CoreV1Api(admin).create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="no-finalizers"))
    )
    rbac.create_namespaced_role(ns, {"metadata": {"name": "no-finalizers"}, "rules": lacking})
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "no-finalizers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-finalizers"},
            "subjects": [{"kind": "ServiceAccount", "name": "no-finalizers", "namespace": ns}],
        },
    )
    chart_sa = config.new_client_from_config(
        config_file=str(sa_kubeconfig(cluster, admin, ns, "okvqa", tmp_path / "sa"))
    )
    without = config.new_client_from_config(
        config_file=str(sa_kubeconfig(cluster, admin, ns, "no-finalizers", tmp_path / "without"))
    )
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(without).create_namespaced_config_map(ns, child("refused-child"))
    assert refused.value.status == 403 and "blockOwnerDeletion" in str(refused.value.body)
    client.CoreV1Api(chart_sa).create_namespaced_config_map(ns, child("admitted-child"))
    client.CoreV1Api(admin).delete_namespaced_config_map("admitted-child", ns)
