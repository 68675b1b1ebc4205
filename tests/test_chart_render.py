"""charts/okvqa with the real helm binary: lint, renders under the value sets users run, schema refusals.

Every rendered object is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, oldest
supported and a current version), FineTunes against the checked-in CRD and `FineTuneSpec`. helm comes from
k8s/tools.sh (or PATH); without it these tests skip, and fail in CI.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from okvqa_k8s.spec import load_document, parse_spec
from okvqa_testenv import find_tool
from tests.conftest import CHART_DIR, REPO, require

K8S_VERSIONS = ("1.27.0", "1.34.0")  # Chart.yaml's kubeVersion floor, and a current release
CRD_FILE = CHART_DIR / "crds" / "finetunes.okvqa.dev.yaml"
NAMESPACE = "okvqa"
PART_OF = {
    "app.kubernetes.io/name": "okvqa",
    "app.kubernetes.io/managed-by": "Helm",
    "app.kubernetes.io/part-of": "okvqa-k8s",
}
TINY_SPEC = load_document(REPO / "examples" / "tiny-cpu.yaml")

VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "minio-off-existing-secret": [
        "--set",
        "minio.enabled=false",
        "--set",
        "s3.existingSecret=team-s3",
        "--set",
        "s3.endpoint=https://s3.example.internal",
    ],
    "cluster-wide": ["--set", "rbac.clusterWide=true"],
    "finetune-in-values": [
        "--set-json",
        "finetunes="
        + json.dumps(
            [
                {
                    "name": "tiny-cpu",
                    "spec": {k: v for k, v in TINY_SPEC.items() if k != "storage"},
                    "nodePort": 30800,
                },
                {"name": "own-storage", "spec": TINY_SPEC},
            ]
        ),
    ],
    "other-namespace": ["--set", "rbac.watchNamespace=research"],
    "kind": ["--values", str(REPO / "k8s" / "values-kind.yaml")],
}


@pytest.fixture(scope="module")
def helm() -> str:
    path = find_tool("helm")
    require(
        path is not None, "helm not found: run k8s/tools.sh (pinned helm into ~/.cache) or put helm on PATH"
    )
    assert path is not None
    return path


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def render(helm: str, *args: str, release: str = "okvqa") -> list[dict[str, Any]]:
    proc = _helm(helm, "template", release, str(CHART_DIR), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def refusal(helm: str, *args: str) -> str:
    """stderr of a render that must fail; it must not have printed any manifest."""
    proc = _helm(helm, "template", "okvqa", str(CHART_DIR), "--namespace", NAMESPACE, *args)
    assert proc.returncode != 0, f"helm accepted {args}:\n{proc.stdout[:2000]}"
    assert "kind:" not in proc.stdout
    return proc.stderr


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod_specs(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objs
        if o["kind"] in ("Deployment", "Job")
    ]


def operator_rules() -> list[dict[str, Any]]:
    from okvqa_k8s.kube.rbac import OPERATOR_RULES

    return [dict(rule) for rule in OPERATOR_RULES]


@pytest.fixture(scope="module")
def crd_validator() -> jsonschema.Validator:
    crd = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # OpenAPI v3.0 schemas are draft-4 flavoured (boolean exclusiveMinimum); x-kubernetes-* are annotations.
    return jsonschema.Draft4Validator(schema)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_strict(helm: str, name: str) -> None:
    proc = _helm(helm, "lint", "--strict", str(CHART_DIR), "--namespace", NAMESPACE, *VALUE_SETS[name])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_object_validates(helm: str, name: str, crd_validator: jsonschema.Validator) -> None:
    objs = render(helm, *VALUE_SETS[name])
    assert objs
    for obj in objs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "FineTune":
            crd_validator.validate(obj)
            parse_spec(obj["spec"], source=where)
        else:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)
        labels = obj["metadata"].get("labels", {})
        assert PART_OF.items() <= labels.items(), where
        assert labels.get("app.kubernetes.io/instance") == "okvqa", where
        assert labels.get("app.kubernetes.io/component"), where
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace"), f"{where}: namespaced objects carry their namespace"
    # The chart installs the operator; rendering the training job is the operator's job alone.
    assert not [o for o in objs if o["kind"] == "PyTorchJob"]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_workloads_are_hardened(helm: str, name: str) -> None:
    for pod_name, pod in pod_specs(render(helm, *VALUE_SETS[name])):
        assert pod["securityContext"]["runAsNonRoot"] is True, pod_name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", pod_name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (pod_name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (pod_name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (pod_name, c["name"])
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], (pod_name, c["name"])
            # Credentials only by Secret reference: no literal key in any manifest.
            for env in c.get("env", []):
                if env["name"].startswith("AWS_") and "KEY" in env["name"]:
                    assert "secretKeyRef" in env["valueFrom"], (pod_name, env)


def test_security_contexts_come_from_values(helm: str) -> None:
    """podSecurityContext and securityContext reach every workload; the defaults are the hardened ones."""
    objs = render(
        helm,
        "--set",
        "podSecurityContext.runAsUser=2000",
        "--set-json",
        'securityContext={"privileged":false}',
    )
    for pod_name, pod in pod_specs(objs):
        assert pod["securityContext"]["runAsUser"] == 2000, pod_name
        assert pod["securityContext"]["runAsNonRoot"] is True, pod_name  # the other defaults stay
        for c in pod["containers"]:
            assert c["securityContext"]["privileged"] is False, (pod_name, c["name"])
    default = pod_specs(render(helm))
    assert {name for name, _ in default} == {name for name, _ in pod_specs(objs)}
    assert all(pod["securityContext"]["runAsUser"] == 1000 for _, pod in default)


def test_operator_deployment(helm: str) -> None:
    objs = render(helm)
    dep = one(objs, "Deployment", "okvqa-operator")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "okvqa"
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/okvqa-k8s/operator:0.1.0"
    assert container["command"] == ["okvqa-k8s", "operator"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    assert port == 8080
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://okvqa-minio.okvqa.svc:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "okvqa-s3"
    # Selector labels never include the version: an upgrade must not orphan the old ReplicaSet.
    assert "app.kubernetes.io/version" not in dep["spec"]["selector"]["matchLabels"]


def test_operator_args_parse_with_the_real_command(helm: str) -> None:
    """The chart passes flags `okvqa-k8s operator` accepts, in both RBAC modes."""
    import click

    from okvqa_k8s.kube.cli import operator as command

    expected = {
        "default": ("okvqa", False),
        "cluster-wide": (None, True),
        "other-namespace": ("research", False),
    }
    for name, (namespace, everywhere) in expected.items():
        dep = one(render(helm, *VALUE_SETS[name]), "Deployment", "okvqa-operator")
        container = dep["spec"]["template"]["spec"]["containers"][0]
        ctx = command.make_context("operator", list(container["args"]))
        assert isinstance(ctx, click.Context)
        assert (ctx.params["namespace"], ctx.params["all_namespaces"]) == (namespace, everywhere), name
        health = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
        assert ctx.params["liveness_port"] == health, "the probes ask the port the operator serves"


def test_image_pinning(helm: str) -> None:
    objs = render(helm)
    minio = one(objs, "Deployment", "okvqa-minio")["spec"]["template"]["spec"]["containers"][0]["image"]
    job = one(objs, "Job", "okvqa-minio-bucket")["spec"]["template"]["spec"]["containers"][0]["image"]
    for image in (minio, job):
        assert re.fullmatch(r"quay\.io/minio/(minio|mc):RELEASE\.[0-9TZ-]+@sha256:[0-9a-f]{64}", image), image
    digest = "sha256:" + "ab" * 32
    dep = one(render(helm, "--set", f"operator.image.digest={digest}"), "Deployment", "okvqa-operator")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/okvqa-k8s/operator@{digest}"


def test_minio_and_bucket_hook(helm: str) -> None:
    objs = render(helm)
    svc = one(objs, "Service", "okvqa-minio")
    assert svc["spec"]["ports"][0]["port"] == 9000
    dep = one(objs, "Deployment", "okvqa-minio")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "okvqa-s3",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert (
        one(objs, "PersistentVolumeClaim", "okvqa-minio")["spec"]["resources"]["requests"]["storage"]
        == "20Gi"
    )
    job = one(objs, "Job", "okvqa-minio-bucket")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    job_env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert job_env["BUCKET"] == "okvqa" and job_env["S3_ENDPOINT"] == "http://okvqa-minio.okvqa.svc:9000"
    secret = one(objs, "Secret", "okvqa-s3")
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}

    kind = render(helm, *VALUE_SETS["kind"])
    svc = one(kind, "Service", "okvqa-minio")
    assert svc["spec"]["type"] == "NodePort" and svc["spec"]["ports"][0]["nodePort"] == 30900
    kind_config = yaml.safe_load((REPO / "k8s" / "kind-config.yaml").read_text(encoding="utf-8"))
    mapped = {
        m["containerPort"]: m["hostPort"]
        for n in kind_config["nodes"]
        for m in n.get("extraPortMappings", [])
    }
    assert mapped[30900] == 9000, "kind must map MinIO's node port to localhost:9000"


def test_existing_secret_without_minio(helm: str) -> None:
    objs = render(helm, *VALUE_SETS["minio-off-existing-secret"])
    assert not by_kind(objs, "Secret"), "an existing Secret is referenced, never re-created"
    assert not [o for o in objs if "minio" in o["metadata"]["name"]]
    container = one(objs, "Deployment", "okvqa-operator")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "team-s3"
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://s3.example.internal"


def test_rbac_grants_exactly_the_operator_rules(helm: str) -> None:
    rules = operator_rules()
    namespaced = render(helm)
    (role,) = by_kind(namespaced, "Role")
    assert role["rules"] == rules and role["metadata"]["namespace"] == NAMESPACE
    (binding,) = by_kind(namespaced, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "okvqa", "namespace": NAMESPACE}]
    assert not by_kind(namespaced, "ClusterRole") and not by_kind(namespaced, "ClusterRoleBinding")

    other = render(helm, *VALUE_SETS["other-namespace"])
    (role,) = by_kind(other, "Role")
    assert role["metadata"]["namespace"] == "research" and role["rules"] == rules
    (binding,) = by_kind(other, "RoleBinding")
    assert binding["metadata"]["namespace"] == "research"
    assert binding["subjects"][0]["namespace"] == NAMESPACE, (
        "the ServiceAccount stays in the release namespace"
    )

    wide = render(helm, *VALUE_SETS["cluster-wide"])
    (cluster_role,) = by_kind(wide, "ClusterRole")
    assert cluster_role["rules"] == rules
    (cluster_binding,) = by_kind(wide, "ClusterRoleBinding")
    assert cluster_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": cluster_role["metadata"]["name"],
    }
    assert not by_kind(wide, "Role")
    bring_your_own = render(helm, "--set", "rbac.create=false")
    assert not [
        o for o in bring_your_own if o["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    ]


def test_finetunes_from_values(helm: str) -> None:
    objs = render(helm, *VALUE_SETS["finetune-in-values"])
    defaulted = one(objs, "FineTune", "tiny-cpu")
    assert defaulted["apiVersion"] == "okvqa.dev/v1alpha1"
    # A spec without storage gets the chart's MinIO, region and Secret...
    assert defaulted["spec"]["storage"] == {
        "endpoint": "http://okvqa-minio.okvqa.svc:9000",
        "region": "us-east-1",
        "credentialsSecret": "okvqa-s3",
    }
    # ...and one with its own storage keeps it.
    assert one(objs, "FineTune", "own-storage")["spec"]["storage"] == TINY_SPEC["storage"]
    for key in ("model", "dataset", "training", "nodes", "inference"):
        assert defaulted["spec"][key] == TINY_SPEC[key]
    node_port = one(objs, "Service", "tiny-cpu-nodeport")
    assert node_port["spec"]["type"] == "NodePort" and node_port["spec"]["ports"][0]["nodePort"] == 30800
    from okvqa_k8s.kube import names

    assert node_port["spec"]["selector"] == names.selector("tiny-cpu", "inference")


def test_examples_match_the_kind_release(helm: str) -> None:
    """examples/tiny-cpu.yaml names the Service and Secret that release okvqa in namespace okvqa creates."""
    objs = render(helm, *VALUE_SETS["kind"])
    storage = TINY_SPEC["storage"]
    host = re.match(r"http://([^.]+)\.([^.]+)\.svc:(\d+)$", storage["endpoint"])
    assert host, storage["endpoint"]
    svc = one(objs, "Service", host.group(1))
    assert svc["metadata"]["namespace"] == host.group(2) and svc["spec"]["ports"][0]["port"] == int(
        host.group(3)
    )
    one(objs, "Secret", storage["credentialsSecret"])


def test_crds_are_installed_verbatim(helm: str) -> None:
    proc = _helm(helm, "show", "crds", str(CHART_DIR))
    assert proc.returncode == 0, proc.stderr
    (crd,) = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert crd == yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(crd, version, strict=True)


def test_notes_tell_what_to_run_next(helm: str) -> None:
    proc = _helm(
        helm,
        "install",
        "okvqa",
        str(CHART_DIR),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        *VALUE_SETS["finetune-in-values"],
    )
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n okvqa get finetune tiny-cpu -w" in notes
    assert "okvqa-s3" in notes and "AWS_ENDPOINT_URL" in notes
    assert "training operator" in notes  # no PyTorchJob CRD in a dry run: the warning shows
    from tests.test_k8s_scripts import assert_commands_exist, okvqa_commands

    commands = okvqa_commands(notes)
    assert len(commands) >= 3
    assert_commands_exist(commands)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "minio.enabld=true"], "enabld"),
        (["--set", "operator.image.digest=sha256:nothex"], "digest"),
        (["--set", "minio.service.nodePort=80"], "nodePort"),
        (["--set", "s3.bucket=Bad_Bucket"], "bucket"),
        (
            [
                "--set-json",
                'finetunes=[{"name":"Tiny","spec":{"dataset":{"uri":"s3://bkt/d"},"outputUri":"s3://bkt/o"}}]',
            ],
            "name",
        ),
        (
            [
                "--set-json",
                'finetunes=[{"name":"t","spec":{"dataset":{"uri":"s3://bkt/d"},"outputUri":"s3://bkt/o","nodes":0}}]',
            ],
            "nodes",
        ),
        (["--set-json", 'finetunes=[{"name":"t","spec":{"outputUri":"s3://bkt/o"}}]'], "dataset"),
        (
            [
                "--set-json",
                'finetunes=[{"name":"t","spec":{"dataset":{"uri":"s3://bkt/d"},"outputUri":"s3://bkt/o",'
                '"training":{"learningRat":0.1}}}]',
            ],
            "learningRat",
        ),
        (["--set", "kueue.preemption=Always"], "preemption"),
        (["--set", "kueue.quota.cpu=lots"], "cpu"),
        (["--set", "kueue.localQueue=Team_A"], "localQueue"),
    ],
    ids=[
        "typo",
        "digest",
        "node-port",
        "bucket",
        "run-name",
        "spec-minimum",
        "spec-required",
        "spec-typo",
        "kueue-preemption",
        "kueue-quota",
        "kueue-queue-name",
    ],
)
def test_bad_values_are_refused_by_the_schema(helm: str, args: list[str], expected: str) -> None:
    err = refusal(helm, *args)
    assert "values don't meet the specifications of the schema" in err
    assert expected in err


def test_kueue_objects_are_off_by_default_and_follow_values(helm: str) -> None:
    """The quota (a default resource removed with null) and preemption come from values; the Kueue
    CRDs' own validation is exercised by helm install into the test cluster (test_kube_kueue.py)."""
    assert not [o for o in render(helm) if o["apiVersion"].startswith("kueue.x-k8s.io/")]
    objs = render(
        helm,
        "--set", "kueue.enabled=true", "--set", "kueue.preemption=LowerPriority",
        "--set-json", 'kueue.quota={"nvidia.com/gpu": 16, "cpu": "64", "memory": null}',
        "--set-json", 'kueue.priorityClasses=[{"name": "high", "value": 1000}]',
    )  # fmt: skip
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs if o["apiVersion"] == "kueue.x-k8s.io/v1beta2"}
    assert kinds == {
        ("ResourceFlavor", "okvqa-default"),
        ("ClusterQueue", "okvqa"),
        ("LocalQueue", "okvqa"),
        ("WorkloadPriorityClass", "high"),
    }
    queue = one(objs, "ClusterQueue", "okvqa")["spec"]
    (group,) = queue["resourceGroups"]
    assert group["coveredResources"] == ["cpu", "nvidia.com/gpu"]
    assert group["flavors"] == [
        {
            "name": "okvqa-default",
            "resources": [
                {"name": "cpu", "nominalQuota": "64"},
                {"name": "nvidia.com/gpu", "nominalQuota": "16"},
            ],
        }
    ]
    assert queue["preemption"] == {"withinClusterQueue": "LowerPriority"}
    local = one(objs, "LocalQueue", "okvqa")
    assert local["metadata"]["namespace"] == NAMESPACE and local["spec"] == {"clusterQueue": "okvqa"}


def test_template_guards(helm: str) -> None:
    err = refusal(helm, "--set", "minio.enabled=false")
    assert "s3.existingSecret" in err and "AWS_SECRET_ACCESS_KEY" in err
    err = refusal(helm, "--set", "serviceAccount.create=false")
    assert "serviceAccount.name" in err
    err = refusal(
        helm,
        "--set",
        "rbac.watchNamespace=research",
        "--set-json",
        'finetunes=[{"name":"t","spec":{"dataset":{"uri":"s3://bkt/d"},"outputUri":"s3://bkt/o"}}]',
    )
    assert "rbac.watchNamespace" in err
    err = refusal(
        helm,
        "--set-json",
        'finetunes=[{"name":"t","spec":{"dataset":{"uri":"s3://bkt/d"},'
        '"outputUri":"s3://bkt/o"}},{"name":"t","spec":{"dataset":{"uri":"s3://bkt/d"},"outputUri":"s3://bkt/x"}}]',
    )
    assert "twice" in err


def test_generated_names_fit(helm: str) -> None:
    long = "a" * 53
    objs = render(helm, release=long)
    for obj in objs:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]


def _chart_path(*parts: str) -> Path:
    return CHART_DIR.joinpath(*parts)


def test_chart_metadata() -> None:
    chart = yaml.safe_load(_chart_path("Chart.yaml").read_text(encoding="utf-8"))
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == project["version"]
    for name in ("templates/_helpers.tpl", "templates/NOTES.txt", "values.schema.json", ".helmignore"):
        assert _chart_path(name).is_file(), name
    helpers = _chart_path("templates", "_helpers.tpl").read_text(encoding="utf-8")
    for define in ("okvqa.name", "okvqa.fullname", "okvqa.labels", "okvqa.selectorLabels"):
        assert f'define "{define}"' in helpers
