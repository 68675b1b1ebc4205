"""Rendered objects validate against the PyTorchJob CRD schema and the Kubernetes OpenAPI schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from okvqa_k8s.kube import names
from okvqa_k8s.kube.render import (
    MODEL_DIR,
    Owner,
    render_children,
    render_configmap,
    render_eval_job,
    render_finetune,
    render_network_policy,
    render_pytorchjob,
    render_server,
    to_yaml,
)
from okvqa_k8s.layout import result_uri
from okvqa_k8s.prompts import LLAVA_V1_CHAT_TEMPLATE, chat_template
from okvqa_k8s.spec import parse_spec

K8S_VERSION = "1.34.0"
OWNER = Owner("llava-other", "ml", "0d9b7c2e-1111-2222-3333-444455556666")
BASE = {
    "dataset": {"uri": "s3://okvqa/datasets/other"},
    "outputUri": "s3://okvqa/runs/llava-other",
    "storage": {"endpoint": "http://minio.okvqa:9000", "credentialsSecret": "okvqa-s3"},
}
VARIANTS = {
    "default-1-node": {},
    "3-nodes-tolerations": {
        "nodes": 3,
        "nprocPerNode": 4,
        "nodeSelector": {"nvidia.com/gpu.product": "H100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "16", "memory": "200Gi"}, "limits": {"memory": "240Gi"}},
        "inference": {"apiKeySecret": {"name": "llava-api"}},
    },
    "cpu-vllm-s3-base": {
        "nodes": 2,
        "nprocPerNode": 2,
        "gpusPerNode": 0,
        "model": {"name": "s3://okvqa/models/llava-1.5-7b-hf"},
        "inference": {
            "engine": "vllm",
            "gpus": 0,
            "replicas": 2,
            "apiKeySecret": {"name": "llava-api", "key": "token"},
            "allowedClients": [
                {"podSelector": {"app": "chat-ui"}, "namespaceSelector": {"team": "ml"}},
                {"namespaceSelector": {}},
                {"cidr": "10.0.0.0/8"},
            ],
        },
        "evaluation": {"maxQuestions": 50},
    },
    "no-eval-no-secret": {"evaluation": {"enabled": False}, "storage": {}},
}


def _spec(name: str):
    return parse_spec({**BASE, **VARIANTS[name]})


@pytest.fixture(scope="module")
def pytorchjob_schema(shared_schemas: Path) -> dict[str, Any]:
    return json.loads((shared_schemas / "kubeflow.org_pytorchjob_v1.json").read_text())


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would silently prune (jsonschema alone accepts them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                out += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                out += unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None:
                out.append(f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(obj):
            out += unknown_fields(value, schema["items"], f"{path}[{i}]")
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pytorchjob_validates_against_crd_schema(variant: str, pytorchjob_schema: dict[str, Any]) -> None:
    job = render_pytorchjob(_spec(variant), OWNER)
    jsonschema.validate(job, pytorchjob_schema)
    assert unknown_fields(job, pytorchjob_schema) == []
    # the pod templates are core PodTemplateSpecs: validate them against the core schema too
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "t"},
            "template": replica["template"],
        }
        kubernetes_validate.validate(template, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_core_objects_validate_strictly(variant: str) -> None:
    objs = [o for o in render_children(_spec(variant), OWNER) if o["kind"] != "PyTorchJob"]
    assert {o["kind"] for o in objs} >= {"ConfigMap"}
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_pytorchjob_passes_training_operator_webhook_rules() -> None:
    """The rules its admission webhook enforces (docs/architecture.md), checked before a cluster sees it."""
    for variant in VARIANTS:
        job = render_pytorchjob(_spec(variant), OWNER)
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
        replicas = job["spec"]["pytorchReplicaSpecs"]
        assert set(replicas) <= {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
        for spec in replicas.values():
            (container,) = spec["template"]["spec"]["containers"]
            assert container["name"] == "pytorch" and container["image"]
            assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in container[
                "ports"
            ]


def test_pytorchjob_topology_and_resources() -> None:
    job = render_pytorchjob(_spec("3-nodes-tolerations"), OWNER)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Worker"]["replicas"] == 2 and job["spec"]["nprocPerNode"] == "4"
    assert job["spec"]["runPolicy"] == {"backoffLimit": 3, "cleanPodPolicy": "None"}
    pod = replicas["Worker"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [
        "torchrun",
        "--no-python",
        "okvqa-k8s",
        "train",
        "--spec",
        "/etc/okvqa/spec.yaml",
    ]
    assert container["resources"]["limits"] == {"memory": "240Gi", "nvidia.com/gpu": 4}
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 4
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert volumes["scratch"]["emptyDir"] == {"sizeLimit": "200Gi"}
    assert volumes["spec"]["configMap"]["name"] == "llava-other-spec"
    assert "Worker" not in render_pytorchjob(_spec("default-1-node"), OWNER)["spec"]["pytorchReplicaSpecs"]


def test_cpu_training_has_no_gpu_and_selects_cpu_deepspeed() -> None:
    job = render_pytorchjob(_spec("cpu-vllm-s3-base"), OWNER)
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    assert "resources" not in container
    assert {"name": "DS_ACCELERATOR", "value": "cpu"} in container["env"]


def test_credentials_only_as_secret_references() -> None:
    spec = _spec("default-1-node")
    text = to_yaml(render_children(spec, OWNER))
    for obj in render_children(spec, OWNER):
        for _, node in _containers(obj):
            env = {e["name"]: e for e in node.get("env", [])}
            if "AWS_ACCESS_KEY_ID" in env:
                assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
                    "name": "okvqa-s3",
                    "key": "AWS_ACCESS_KEY_ID",
                }
                assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert "AWS_ACCESS_KEY_ID" in text and "okvqa-s3" in text
    no_secret = to_yaml(render_children(_spec("no-eval-no-secret"), OWNER))
    assert "AWS_ACCESS_KEY_ID" not in no_secret and "AWS_ENDPOINT_URL" not in no_secret


def _containers(obj: dict[str, Any]):
    pods = []
    if obj["kind"] == "PyTorchJob":
        pods = [r["template"]["spec"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
    elif obj["kind"] in ("Deployment", "Job"):
        pods = [obj["spec"]["template"]["spec"]]
    for pod in pods:
        for c in pod.get("initContainers", []) + pod["containers"]:
            yield pod, c


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_is_restricted(variant: str) -> None:
    seen = 0
    for obj in render_children(_spec(variant), OWNER):
        for pod, container in _containers(obj):
            seen += 1
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert seen >= 2


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_runs_without_a_token_on_a_read_only_root_with_sized_scratch_space(variant: str) -> None:
    """No service-account token, a read-only root filesystem, and every place the programs write is a
    volume: /tmp (HOME and the torch/Triton/matplotlib caches point there) or the pod's own; every
    emptyDir has a sizeLimit."""
    spec = _spec(variant)
    seen = 0
    for obj in render_children(spec, OWNER):
        for pod, container in _containers(obj):
            seen += 1
            assert pod["automountServiceAccountToken"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp"
            assert len(mounts) == len(container["volumeMounts"]), (
                "the API server refuses a path mounted twice"
            )
            assert len({e["name"] for e in container["env"]}) == len(container["env"])
            env = {e["name"]: e.get("value") for e in container["env"]}
            for name in (
                "HOME",
                "XDG_CACHE_HOME",
                "TRITON_CACHE_DIR",
                "TORCH_EXTENSIONS_DIR",
                "MPLCONFIGDIR",
            ):
                assert env[name] == "/tmp" or env[name].startswith("/tmp/"), (name, container["name"])
            assert env["PYTHONDONTWRITEBYTECODE"] == "1"
            assert env.get("HF_HOME") is None or any(
                env["HF_HOME"].startswith(path + "/") for path in mounts
            ), "the HF cache is on a volume"
            volumes = {v["name"]: v for v in pod["volumes"]}
            for volume in volumes.values():
                if "emptyDir" in volume:
                    assert volume["emptyDir"]["sizeLimit"], volume["name"]
            assert volumes["tmp"]["emptyDir"] == {"sizeLimit": spec.tmp_size}
    assert seen >= 2


def test_volume_sizes_come_from_the_spec() -> None:
    spec = parse_spec(
        {
            **BASE,
            "tmpSize": "1Gi",
            "inference": {"modelVolumeSize": "30Gi"},
            "evaluation": {"workVolumeSize": "5Gi"},
        }
    )
    sizes = {
        (obj["kind"], v["name"]): v["emptyDir"]["sizeLimit"]
        for obj in render_children(spec, OWNER)
        for pod, _ in _containers(obj)
        for v in pod["volumes"]
        if "emptyDir" in v
    }
    assert sizes[("Deployment", "models")] == "30Gi" and sizes[("Job", "work")] == "5Gi"
    assert {size for (_, name), size in sizes.items() if name == "tmp"} == {"1Gi"}


def test_children_are_owned_and_labelled() -> None:
    for obj in render_children(_spec("cpu-vllm-s3-base"), OWNER):
        meta = obj["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["labels"][names.RUN_LABEL] == "llava-other"
        assert meta["labels"]["app.kubernetes.io/instance"] == "llava-other"
        (ref,) = meta["ownerReferences"]
        assert ref == {
            "apiVersion": "okvqa.dev/v1alpha1",
            "kind": "FineTune",
            "name": "llava-other",
            "uid": OWNER.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    dry = render_children(_spec("default-1-node"), Owner("x", "ml"))
    assert all("ownerReferences" not in o["metadata"] for o in dry)


def test_inference_builtin_pulls_merged_model_and_probes() -> None:
    spec = _spec("default-1-node")
    deployment, service = render_server(spec, OWNER)
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == [
        "okvqa-k8s",
        "sync",
        "pull",
        "s3://okvqa/runs/llava-other/merged",
        MODEL_DIR,
    ]
    (server,) = pod["containers"]
    assert server["command"] == ["okvqa-k8s", "serve"] and server["args"][:2] == ["--model", MODEL_DIR]
    # The model is named after the run, as vLLM serves it (clients send that name either way).
    assert server["args"][server["args"].index("--served-model-name") + 1] == "llava-other"
    (base,) = render_server(spec, OWNER, "base")[0]["spec"]["template"]["spec"]["containers"]
    assert base["args"][base["args"].index("--served-model-name") + 1] == "llava-other-base"
    # Probes use the paths that need no API key (/v1/* would answer the kubelet 401).
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"] >= 1800
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "dshm", "mountPath": "/dev/shm"} in server["volumeMounts"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["metadata"]["name"] == "llava-other-serve"


def test_base_variant_serves_hub_id_without_pull_and_s3_with_pull() -> None:
    deployment, _ = render_server(_spec("default-1-node"), OWNER, "base")
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["containers"][0]["args"][:2] == ["--model", "llava-hf/llava-1.5-7b-hf"]
    deployment, service = render_server(_spec("cpu-vllm-s3-base"), OWNER, "base")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"][3] == "s3://okvqa/models/llava-1.5-7b-hf"
    assert service["metadata"]["name"] == "llava-other-base"


def test_vllm_engine() -> None:
    deployment, _ = render_server(_spec("cpu-vllm-s3-base"), OWNER)
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert server["image"].startswith("vllm/vllm-openai:v")
    assert server["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    args = server["args"]
    assert args[args.index("--model") + 1] == MODEL_DIR and args[args.index("--dtype") + 1] == "bfloat16"
    assert "resources" not in server and deployment["spec"]["replicas"] == 2
    # The run's conversation template, inline, with OpenAI content parts (the template places the image),
    # writing BOS itself: vLLM's chat completions add no special tokens.
    assert args[args.index("--chat-template") + 1] == chat_template("llava_v1", with_bos=True)
    assert args[args.index("--chat-template") + 1].endswith(LLAVA_V1_CHAT_TEMPLATE)
    assert args[args.index("--chat-template-content-format") + 1] == "openai"


@pytest.mark.parametrize("engine", ["builtin", "vllm"])
def test_servers_prompt_with_the_runs_template(engine: str) -> None:
    for template in ("llava_v1", "hf"):
        spec = parse_spec({**BASE, "inference": {"engine": engine}, "training": {"promptTemplate": template}})
        for variant in ("finetuned", "base"):  # before and after are asked the same way
            (server,) = render_server(spec, OWNER, variant)[0]["spec"]["template"]["spec"]["containers"]
            args = server["args"]
            if engine == "builtin":
                assert args[args.index("--prompt-template") + 1] == template
            else:  # vLLM: the run's template, or the checkpoint's own for hf
                assert ("--chat-template" in args) == (template == "llava_v1")


def test_eval_job_scores_both_endpoints_then_uploads() -> None:
    spec = _spec("cpu-vllm-s3-base")
    job = render_eval_job(spec, OWNER)
    pod = job["spec"]["template"]["spec"]
    (evaluate,) = pod["initContainers"]
    cmd = evaluate["command"]
    assert cmd[:3] == ["okvqa-k8s", "eval", "run"]
    assert cmd[cmd.index("--endpoint") + 1] == "http://llava-other-serve.ml.svc:8000"
    assert cmd[cmd.index("--compare") + 1] == "http://llava-other-base.ml.svc:8000"
    # the evaluation set beside the dataset, every category, the trained one marked
    assert cmd[cmd.index("--dataset") + 1] == "s3://okvqa/datasets/other/eval"
    assert cmd[cmd.index("--split") + 1] == "val"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--category"] == ["all"]
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--trained-category"] == ["other"]
    assert cmd[cmd.index("--max-questions") + 1] == "50"
    assert cmd[cmd.index("--metric") + 1] == "official"  # named even when it is the default
    (upload,) = pod["containers"]
    out = cmd[cmd.index("--out") + 1]
    assert upload["command"] == ["okvqa-k8s", "sync", "push", out, "s3://okvqa/runs/llava-other/eval"]
    assert pod["restartPolicy"] == "Never"
    assert result_uri(spec, "base") == "s3://okvqa/runs/llava-other/eval/base/results.json"
    no_base = parse_spec({**BASE, "evaluation": {"baseline": False, "metric": "vqaeval-2017"}})
    cmd = render_eval_job(no_base, OWNER)["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert "--compare" not in cmd
    assert cmd[cmd.index("--metric") + 1] == "vqaeval-2017"
    assert result_uri(no_base, "finetuned") == "s3://okvqa/runs/llava-other/eval/results.json"
    chosen = parse_spec(
        {
            **BASE,
            "dataset": {"uri": "s3://okvqa/datasets/other", "categories": ["other", "eight"]},
            "evaluation": {
                "datasetUri": "s3://okvqa/datasets/val-all",
                "categories": ["Weather and Climate"],
            },
        }
    )
    cmd = render_eval_job(chosen, OWNER)["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert cmd[cmd.index("--dataset") + 1] == "s3://okvqa/datasets/val-all"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--category"] == ["ten"]
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--trained-category"] == ["other", "eight"]


def test_children_per_spec() -> None:
    kinds = lambda v: [(o["kind"], o["metadata"]["name"]) for o in render_children(_spec(v), OWNER)]  # noqa: E731
    assert kinds("default-1-node") == [
        ("ConfigMap", "llava-other-spec"),
        ("PyTorchJob", "llava-other"),
        ("NetworkPolicy", "llava-other-inference"),
        ("Deployment", "llava-other-serve"),
        ("Service", "llava-other-serve"),
        ("Deployment", "llava-other-base"),
        ("Service", "llava-other-base"),
        ("Job", "llava-other-eval"),
    ]
    assert kinds("no-eval-no-secret") == [
        ("ConfigMap", "llava-other-spec"),
        ("PyTorchJob", "llava-other"),
        ("NetworkPolicy", "llava-other-inference"),
        ("Deployment", "llava-other-serve"),
        ("Service", "llava-other-serve"),
    ]


def test_configmap_round_trips_the_spec_and_yaml_stream_parses() -> None:
    spec = _spec("3-nodes-tolerations")
    cm = render_configmap(spec, OWNER)
    assert parse_spec(yaml.safe_load(cm["data"]["spec.yaml"])) == spec
    docs = list(yaml.safe_load_all(to_yaml([render_finetune(spec, OWNER), *render_children(spec, OWNER)])))
    assert docs[0]["kind"] == "FineTune" and parse_spec(docs[0]["spec"]) == spec
    assert "spec.yaml: |" in to_yaml([cm])


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize(
    ("variant", "server_var", "ref"),
    [
        ("3-nodes-tolerations", "OKVQA_API_KEY", {"name": "llava-api", "key": "api-key"}),
        ("cpu-vllm-s3-base", "VLLM_API_KEY", {"name": "llava-api", "key": "token"}),
    ],
)
def test_api_key_reaches_servers_and_eval_client_as_secret_reference(
    variant: str, server_var: str, ref: dict[str, str]
) -> None:
    spec = _spec(variant)
    for model in ("finetuned", "base"):
        (server,) = render_server(spec, OWNER, model)[0]["spec"]["template"]["spec"]["containers"]
        assert _env(server)[server_var] == {"name": server_var, "valueFrom": {"secretKeyRef": ref}}
        assert "--api-key" not in server["args"]  # never on the command line (visible in ps, in the object)
        # Probes on paths that need no key: /v1/* would answer the kubelet 401.
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert not server[probe]["httpGet"]["path"].startswith("/v1")
    pod = render_eval_job(spec, OWNER)["spec"]["template"]["spec"]
    assert _env(pod["initContainers"][0])["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == ref
    assert "OPENAI_API_KEY" not in _env(pod["containers"][0])  # the upload talks to S3 only
    (vllm,) = render_server(_spec("cpu-vllm-s3-base"), OWNER)[0]["spec"]["template"]["spec"]["containers"]
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"


def test_without_api_key_secret_no_key_is_mounted() -> None:
    text = to_yaml(render_children(_spec("default-1-node"), OWNER))
    assert "API_KEY" not in text


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector's meaning (matchLabels and In expressions), as the API server applies it."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_network_policy_admits_eval_job_and_allowed_clients_to_both_servers() -> None:
    spec = _spec("cpu-vllm-s3-base")
    policy = render_network_policy(spec, OWNER)
    body = policy["spec"]
    assert body["policyTypes"] == ["Ingress"]
    for model in ("finetuned", "base"):
        labels = render_server(spec, OWNER, model)[0]["spec"]["template"]["metadata"]["labels"]
        assert _matches(body["podSelector"], labels)
    eval_labels = render_eval_job(spec, OWNER)["spec"]["template"]["metadata"]["labels"]
    assert not _matches(body["podSelector"], eval_labels)
    (rule,) = body["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    evaluation, ui, everywhere, cidr = rule["from"]
    assert list(evaluation) == ["podSelector"] and _matches(evaluation["podSelector"], eval_labels)
    assert ui == {
        "podSelector": {"matchLabels": {"app": "chat-ui"}},
        "namespaceSelector": {"matchLabels": {"team": "ml"}},
    }
    assert everywhere == {"namespaceSelector": {"matchLabels": {}}}
    assert cidr == {"ipBlock": {"cidr": "10.0.0.0/8"}}
    other_run = names.labels("llava-another", "evaluation")
    assert not _matches(evaluation["podSelector"], other_run)


def test_network_policy_without_clients_admits_no_one() -> None:
    """An ingress rule with an empty `from` admits every source: no peers must mean no rule."""
    policy = render_network_policy(_spec("no-eval-no-secret"), OWNER)
    assert policy["spec"]["ingress"] == [] and policy["spec"]["policyTypes"] == ["Ingress"]
