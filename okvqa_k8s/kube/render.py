"""Pure renderers: a validated `FineTuneSpec` → the Kubernetes objects of its run. No I/O.

The operator, `okvqa-k8s render`, `submit --dry-run`/`--no-operator` and the local executor all read these
objects, so what runs on a laptop is what the cluster would run. Pods are hardened to the `restricted`
Pod Security Standard (non-root, RuntimeDefault seccomp, no privilege escalation, no capabilities).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from okvqa_k8s.kube import names, queueing
from okvqa_k8s.layout import eval_dataset_uri, eval_uri, model_uri
from okvqa_k8s.prompts import chat_template
from okvqa_k8s.spec import ClientPeerSpec, FineTuneSpec, ResourcesSpec

Variant = Literal["finetuned", "base"]
VARIANTS: tuple[Variant, ...] = ("finetuned", "base")

SPEC_DIR = "/etc/okvqa"
SPEC_FILE = "spec.yaml"
# Pod-side paths live under one root that no host path is likely to share, so the local executor can map
# them to local directories without touching a user's own paths (a repo under /work, data under /scratch).
POD_ROOT = "/okvqa"
SCRATCH = f"{POD_ROOT}/scratch"
MODELS = f"{POD_ROOT}/models"
EVAL_WORK = f"{POD_ROOT}/work"
MODEL_DIR = f"{MODELS}/model"
MASTER_PORT = 23456  # the training operator's default, named `pytorchjob-port`
GPU = "nvidia.com/gpu"
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
TRAIN_COMMAND = ["torchrun", "--no-python", "okvqa-k8s", "train", "--spec", f"{SPEC_DIR}/{SPEC_FILE}"]
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# With the root filesystem read-only, everything a pod writes goes to a volume: its own (scratch, models,
# eval work, /dev/shm) or /tmp, an emptyDir of `tmpSize`. HOME and the XDG directories point there for
# whatever writes to ~ (wandb, vLLM, pip, huggingface_hub's token lookup), and the caches torch, DeepSpeed
# (its Triton autotune cache, JIT-built ops) and matplotlib fill are named explicitly, so none of them
# depends on how a library derives its default. Python writes no bytecode.
TMP = "/tmp"
WRITABLE_ENV = {
    "HOME": TMP,
    "XDG_CACHE_HOME": f"{TMP}/.cache",
    "XDG_CONFIG_HOME": f"{TMP}/.config",
    "TRITON_CACHE_DIR": f"{TMP}/.triton",
    "TORCH_EXTENSIONS_DIR": f"{TMP}/torch_extensions",
    "TORCHINDUCTOR_CACHE_DIR": f"{TMP}/torchinductor",
    "MPLCONFIGDIR": f"{TMP}/matplotlib",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass(frozen=True)
class Owner:
    """The FineTune the objects belong to; without a uid (dry runs, `--no-operator`) no ownerReference."""

    name: str
    namespace: str = "default"
    uid: str | None = None


def spec_hash(spec: FineTuneSpec) -> str:
    """Identity of an accepted spec: the canonical wire document, so defaults written or not hash equal."""
    canonical = json.dumps(spec.to_wire(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _metadata(owner: Owner, name: str, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": names.labels(owner.name, component),
    }
    if owner.uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


def _resources(res: ResourcesSpec, gpus: int) -> dict[str, Any]:
    """Requests/limits with the GPU count in both (extended resources must have requests == limits)."""
    out: dict[str, Any] = {}
    requests = dict(res.requests)
    limits = dict(res.limits)
    if gpus:
        limits[GPU] = gpus
        requests[GPU] = gpus
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def storage_env(spec: FineTuneSpec) -> list[dict[str, Any]]:
    """The standard AWS variables okvqa_k8s.storage reads; keys only as Secret references, never values."""
    env: list[dict[str, Any]] = [
        {"name": "AWS_REGION", "value": spec.storage.region},
        {"name": "AWS_DEFAULT_REGION", "value": spec.storage.region},
    ]
    if spec.storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": spec.storage.endpoint})
    if spec.storage.credentials_secret:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            ref = {"name": spec.storage.credentials_secret, "key": key}
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def _hardened(pod: dict[str, Any], spec: FineTuneSpec) -> dict[str, Any]:
    """A pod spec of the run made to need nothing it should not have: no service-account token (nothing
    in it talks to the API) and, the root filesystem being read-only, a /tmp emptyDir in every container
    with the environment pointing every writer there (`WRITABLE_ENV`). Applied to every pod, so a
    container added later gets it too."""
    pod["automountServiceAccountToken"] = False
    pod.setdefault("volumes", []).append({"name": "tmp", "emptyDir": {"sizeLimit": spec.tmp_size}})
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        # New lists: containers built from one another (the eval Job's upload) share theirs.
        container["volumeMounts"] = [*container.get("volumeMounts", []), {"name": "tmp", "mountPath": TMP}]
        own = {item["name"] for item in container.get("env", [])}
        writable = [{"name": k, "value": v} for k, v in WRITABLE_ENV.items() if k not in own]
        container["env"] = [*writable, *container.get("env", [])]
    return pod


def _shm(size: str) -> dict[str, Any]:
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}


def _scheduling(spec: FineTuneSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.node_selector:
        out["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        out["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in spec.tolerations
        ]
    return out


def _pod_metadata(spec: FineTuneSpec, owner: Owner, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": names.labels(owner.name, component)}
    if spec.pod_annotations:
        meta["annotations"] = dict(spec.pod_annotations)
    return meta


def render_configmap(spec: FineTuneSpec, owner: Owner) -> dict[str, Any]:
    """The run's spec as every pod reads it (`okvqa-k8s train --spec /etc/okvqa/spec.yaml`).

    It is also the operator's record of the *accepted* spec: later edits of the FineTune are compared
    with it and refused instead of silently restarting training.
    """
    meta = _metadata(owner, names.configmap_name(owner.name), "config")
    meta["annotations"] = {f"{names.GROUP}/spec-hash": spec_hash(spec)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {SPEC_FILE: yaml.safe_dump(spec.to_wire(), sort_keys=False)},
    }


def _trainer_pod(spec: FineTuneSpec, owner: Owner, role: str) -> dict[str, Any]:
    env = [
        {"name": "OKVQA_SCRATCH", "value": SCRATCH},
        {"name": "HF_HOME", "value": f"{SCRATCH}/hf-home"},
        {"name": "OKVQA_RUN", "value": owner.name},
        *storage_env(spec),
    ]
    if spec.gpus == 0:
        env.append({"name": "DS_ACCELERATOR", "value": "cpu"})
    container: dict[str, Any] = {
        "name": "pytorch",  # the training operator's webhook requires this name
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(TRAIN_COMMAND),
        "env": env,
        "ports": [{"name": "pytorchjob-port", "containerPort": MASTER_PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": SCRATCH},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "securityContext": dict(CONTAINER_SECURITY),
    }
    resources = _resources(spec.resources, spec.gpus)
    if resources:
        container["resources"] = resources
    labels = names.labels(owner.name, "trainer")
    labels[f"{names.GROUP}/role"] = role
    annotations = {**spec.pod_annotations, f"{names.GROUP}/spec-hash": spec_hash(spec)}
    return {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": _hardened(
            {
                "securityContext": dict(POD_SECURITY),
                "enableServiceLinks": False,
                "containers": [container],
                "volumes": [
                    {"name": "spec", "configMap": {"name": names.configmap_name(owner.name)}},
                    {"name": "scratch", "emptyDir": {"sizeLimit": spec.scratch_size}},
                    _shm(spec.shm_size),
                ],
                **_scheduling(spec),
            },
            spec,
        ),
    }


def render_pytorchjob(spec: FineTuneSpec, owner: Owner) -> dict[str, Any]:
    """kubeflow.org/v1 PyTorchJob: one Master and `nodes - 1` Workers, `nprocPerNode` processes each.

    cleanPodPolicy None keeps finished pods so `okvqa-k8s logs` works after the run; they hold no GPU.
    With a `queue` it is created suspended and labelled for Kueue, which admits all replicas at once.
    """
    replicas: dict[str, Any] = {
        "Master": {
            "replicas": 1,
            "restartPolicy": "OnFailure",
            "template": _trainer_pod(spec, owner, "master"),
        }
    }
    if spec.nodes > 1:
        replicas["Worker"] = {
            "replicas": spec.nodes - 1,
            "restartPolicy": "OnFailure",
            "template": _trainer_pod(spec, owner, "worker"),
        }
    metadata = _metadata(owner, names.job_name(owner.name), "trainer")
    metadata["labels"].update(queueing.job_labels(spec))
    run_policy: dict[str, Any] = {"backoffLimit": spec.backoff_limit, "cleanPodPolicy": "None"}
    if spec.queue:
        run_policy["suspend"] = True  # Kueue unsuspends it once the whole job is admitted
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(spec.nproc_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replicas,
        },
    }


def _served_model(spec: FineTuneSpec, variant: Variant) -> tuple[str | None, str]:
    """(URI to pull into the pod or None, path/id the server loads)."""
    source = model_uri(spec) if variant == "finetuned" else spec.model.name
    if "://" in source:
        return source, MODEL_DIR
    return None, source  # a hub id (vLLM/builtin fetch it) or a path baked into the image


# Where each server reads its API key: ours (`okvqa-k8s serve --api-key`) and vLLM's own variable.
API_KEY_ENV = {"builtin": "OKVQA_API_KEY", "vllm": "VLLM_API_KEY"}
# Unauthenticated probe paths: with an API key, /v1/* answers the kubelet 401.
PROBES = {"builtin": ("/readyz", "/healthz"), "vllm": ("/health", "/health")}


def api_key_env(spec: FineTuneSpec, name: str) -> list[dict[str, Any]]:
    """`name` from the run's API-key Secret, as a reference (the key never appears in an object)."""
    ref = spec.inference.api_key_secret
    if ref is None:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def endpoint_url(spec: FineTuneSpec, owner: Owner, variant: Variant = "finetuned") -> str:
    """Cluster-internal base URL of a served model (Service DNS name and port)."""
    return f"http://{names.server_name(owner.name, variant)}.{owner.namespace}.svc:{spec.inference.port}"


def served_model_name(owner: Owner, variant: Variant) -> str:
    """The name clients send: the run's for its fine-tuned model, `<run>-base` for the untouched one."""
    return owner.name if variant == "finetuned" else f"{owner.name}-base"


def _server_container(spec: FineTuneSpec, owner: Owner, model: str, served_name: str) -> dict[str, Any]:
    port = spec.inference.port
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": f"{MODELS}/hf-home"}]
    if spec.inference.gpus == 0:
        env.append({"name": "DS_ACCELERATOR", "value": "cpu"})
    env += api_key_env(spec, API_KEY_ENV[spec.inference.engine])
    if spec.inference.engine == "vllm":
        image = spec.inference.image or VLLM_IMAGE
        command = ["python3", "-m", "vllm.entrypoints.openai.api_server"]
        args = [
            "--model",
            model,
            "--served-model-name",
            served_name,
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--dtype",
            DTYPES[spec.model.dtype],
            "--max-model-len",
            str(spec.training.max_length),
        ]
        # The run's template, inline (vLLM takes a template string as well as a path); `hf` keeps the
        # checkpoint's own. Content as OpenAI parts, so the template places the image itself.
        template = chat_template(spec.training.prompt_template, with_bos=True)
        if template is not None:
            args += ["--chat-template", template, "--chat-template-content-format", "openai"]
    else:
        image = spec.inference.image or spec.image
        command = ["okvqa-k8s", "serve"]
        # Named as vLLM's above: clients address the model the same with either engine.
        args = ["--model", model, "--served-model-name", served_name]
        args += ["--prompt-template", spec.training.prompt_template]
        args += ["--host", "0.0.0.0", "--port", str(port)]
    ready, live = PROBES[spec.inference.engine]
    probe = {"httpGet": {"path": ready, "port": "http"}}
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": command,
        "args": args,
        "env": env,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": live, "port": "http"},
            "periodSeconds": 30,
            "failureThreshold": 5,
            "timeoutSeconds": 10,
        },
        # Loading a 7B model from a cold disk takes minutes: allow up to 30 of them before liveness starts.
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
        "volumeMounts": [{"name": "models", "mountPath": MODELS}, {"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": dict(CONTAINER_SECURITY),
    }
    resources = _resources(spec.inference.resources, spec.inference.gpus)
    if resources:
        container["resources"] = resources
    return container


def render_server(spec: FineTuneSpec, owner: Owner, variant: Variant = "finetuned") -> list[dict[str, Any]]:
    """Deployment + Service of one served model; an init container pulls it from storage first."""
    name = names.server_name(owner.name, variant)
    component = "inference" if variant == "finetuned" else "inference-base"
    pull, model = _served_model(spec, variant)
    pod_spec: dict[str, Any] = {
        "securityContext": dict(POD_SECURITY),
        "enableServiceLinks": False,
        "containers": [_server_container(spec, owner, model, served_model_name(owner, variant))],
        "volumes": [
            {"name": "models", "emptyDir": {"sizeLimit": spec.inference.model_volume_size}},
            _shm(spec.shm_size),
        ],
        **_scheduling(spec),
    }
    if pull:
        pod_spec["initContainers"] = [
            {
                "name": "fetch-model",
                "image": spec.image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": ["okvqa-k8s", "sync", "pull", pull, model],
                "env": storage_env(spec),
                "volumeMounts": [{"name": "models", "mountPath": MODELS}],
                "securityContext": dict(CONTAINER_SECURITY),
            }
        ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, component),
        "spec": {
            "replicas": spec.inference.replicas,
            # Recreate: a rolling update would need a second GPU while the old pod still holds one.
            "strategy": {"type": "Recreate"},
            "progressDeadlineSeconds": 3600,
            "selector": {"matchLabels": names.selector(owner.name, component)},
            "template": {
                "metadata": _pod_metadata(spec, owner, component),
                "spec": _hardened(pod_spec, spec),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, name, component),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector(owner.name, component),
            "ports": [{"name": "http", "port": spec.inference.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def _peer(client: ClientPeerSpec) -> dict[str, Any]:
    if client.cidr is not None:
        return {"ipBlock": {"cidr": client.cidr}}
    peer: dict[str, Any] = {}
    if client.pod_selector is not None:
        peer["podSelector"] = {"matchLabels": dict(client.pod_selector)}
    if client.namespace_selector is not None:
        peer["namespaceSelector"] = {"matchLabels": dict(client.namespace_selector)}
    return peer


def render_network_policy(spec: FineTuneSpec, owner: Owner) -> dict[str, Any]:
    """networking.k8s.io/v1 NetworkPolicy: only the run's evaluation Job and `inference.allowedClients`
    reach the servers' port (both served models). No peer at all means no ingress rule, not an empty
    `from` (which would admit everyone)."""
    peers = [_peer(client) for client in spec.inference.allowed_clients]
    if spec.evaluation.enabled:
        peers.insert(0, {"podSelector": {"matchLabels": names.selector(owner.name, "evaluation")}})
    servers = {
        "matchLabels": {names.RUN_LABEL: owner.name},
        "matchExpressions": [
            {"key": names.COMPONENT_LABEL, "operator": "In", "values": ["inference", "inference-base"]}
        ],
    }
    port = [{"protocol": "TCP", "port": spec.inference.port}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(owner, names.network_policy_name(owner.name), "inference"),
        "spec": {
            "podSelector": servers,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": port}] if peers else [],
        },
    }


def eval_command(
    spec: FineTuneSpec, endpoint: str, out_dir: str, base_endpoint: str | None = None
) -> list[str]:
    """The evaluation CLI call, shared by the in-cluster Job and the local executor: the evaluation
    set's split, the categories asked for, and the categories trained on marked in the report."""
    cmd = [
        "okvqa-k8s",
        "eval",
        "run",
        "--endpoint",
        endpoint,
        "--dataset",
        eval_dataset_uri(spec),
        "--split",
        spec.dataset.eval_split,
        *(arg for code in spec.evaluation.categories for arg in ("--category", code)),
        *(arg for code in spec.dataset.categories for arg in ("--trained-category", code)),
        "--out",
        out_dir,
        "--concurrency",
        str(spec.evaluation.concurrency),
        "--wait",
        "1800",
    ]
    cmd += ["--metric", spec.evaluation.metric]
    if spec.evaluation.max_questions:
        cmd += ["--max-questions", str(spec.evaluation.max_questions)]
    if base_endpoint:
        cmd += ["--compare", base_endpoint]
    return cmd


def render_eval_job(spec: FineTuneSpec, owner: Owner) -> dict[str, Any]:
    """batch/v1 Job scoring the served model(s) into <outputUri>/eval.

    `eval run` writes a local directory, so it runs as the init container into an emptyDir and the main
    container uploads that directory: the Job completes only once the results are in storage.
    """
    component = "evaluation"
    work = EVAL_WORK
    base = endpoint_url(spec, owner, "base") if "base" in variants(spec) else None
    evaluate = {
        "name": "eval",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": [
            *eval_command(spec, endpoint_url(spec, owner), f"{work}/eval", base),
            "--cache-dir",
            f"{work}/cache",
        ],
        "env": storage_env(spec),
        "volumeMounts": [{"name": "work", "mountPath": work}],
        "securityContext": dict(CONTAINER_SECURITY),
    }
    upload = {
        **evaluate,
        "name": "upload",
        "command": ["okvqa-k8s", "sync", "push", f"{work}/eval", eval_uri(spec)],
    }
    # The eval client (and the openai SDK) send OPENAI_API_KEY as `Authorization: Bearer`.
    evaluate["env"] = [*evaluate["env"], *api_key_env(spec, "OPENAI_API_KEY")]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, names.eval_job_name(owner.name), component),
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": _pod_metadata(spec, owner, component),
                "spec": _hardened(
                    {
                        "restartPolicy": "Never",
                        "securityContext": dict(POD_SECURITY),
                        "enableServiceLinks": False,
                        "initContainers": [evaluate],
                        "containers": [upload],
                        "volumes": [
                            {"name": "work", "emptyDir": {"sizeLimit": spec.evaluation.work_volume_size}}
                        ],
                    },
                    spec,
                ),
            },
        },
    }


def secret_references(spec: FineTuneSpec) -> dict[str, frozenset[str]]:
    """Every Secret the run's pods read and the keys read from each (secretKeyRef env, not optional).

    Read off the rendered objects rather than the spec fields, so a Secret a new field mounts is checked
    without anyone remembering to list it: a missing one would leave the pods in
    CreateContainerConfigError and the run waiting for ever.
    """
    found: dict[str, set[str]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("secretKeyRef")
            if isinstance(ref, dict) and not ref.get("optional"):
                found.setdefault(ref["name"], set()).add(ref["key"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(render_children(spec, Owner("run")))
    return {name: frozenset(keys) for name, keys in sorted(found.items())}


def variants(spec: FineTuneSpec) -> tuple[Variant, ...]:
    """Served models: the fine-tuned one, plus the base checkpoint when a before/after score is wanted."""
    return VARIANTS if spec.evaluation.enabled and spec.evaluation.baseline else ("finetuned",)


def render_finetune(spec: FineTuneSpec, owner: Owner) -> dict[str, Any]:
    """The FineTune custom resource itself (what `okvqa-k8s submit` creates)."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {
            "name": owner.name,
            "namespace": owner.namespace,
            "labels": {names.RUN_LABEL: owner.name},
        },
        "spec": spec.to_wire(),
    }


def render_children(spec: FineTuneSpec, owner: Owner) -> list[dict[str, Any]]:
    """Every object the run creates over its life, in the order the operator creates them."""
    objs = [render_configmap(spec, owner), render_pytorchjob(spec, owner)]
    if spec.inference.enabled:
        objs.append(render_network_policy(spec, owner))
        for variant in variants(spec):
            objs += render_server(spec, owner, variant)
        if spec.evaluation.enabled:
            objs.append(render_eval_job(spec, owner))
    return objs


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMap's spec.yaml) as `|` blocks, readable in a GitOps diff."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def to_yaml(objs: list[dict[str, Any]]) -> str:
    """A multi-document stream for `kubectl apply -f -` / GitOps."""
    return yaml.dump_all(objs, Dumper=_BlockDumper, sort_keys=False, width=110)
