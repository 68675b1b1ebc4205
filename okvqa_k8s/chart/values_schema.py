"""The chart's `values.schema.json`: every value typed and every object closed, so a misspelt value
fails `helm install`; its FineTune part is `FineTuneSpec`'s own schema, so a FineTune listed in values is
checked by the same rules as `okvqa-k8s submit`."""

from __future__ import annotations

import copy
import json
from typing import Any

DIGEST = r"^(sha256:[a-f0-9]{64})?$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
OPTIONAL_SUBDOMAIN = r"^$|^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


def _closed(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """An object that refuses unknown keys: a misspelt value must fail the install, not be ignored."""
    node: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        node["required"] = required
    node.update(extra)
    return node


def _text(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _image(description: str, *, tag_required: bool) -> dict[str, Any]:
    return _closed(
        {
            "repository": _text("Image repository.", minLength=1),
            "tag": _text(
                "Image tag." + ("" if tag_required else " Empty: the chart's appVersion."),
                **({"minLength": 1} if tag_required else {}),
            ),
            "digest": _text("sha256:<64 hex>; pins the image.", pattern=DIGEST),
            "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
        },
        required=["repository", "tag"],
        description=description,
    )


def _open_object(description: str) -> dict[str, Any]:
    """Kubernetes structures passed through verbatim (affinity, annotations): the API server checks them."""
    return {"type": "object", "description": description}


def _security_context_fields() -> dict[str, Any]:
    """Fields a Pod's and a container's securityContext share (Kubernetes 1.34 core/v1)."""
    user_id = {"type": "integer", "minimum": 0}
    profile = {"type": "string", "enum": ["RuntimeDefault", "Unconfined", "Localhost"]}
    return {
        "runAsNonRoot": {"type": "boolean"},
        "runAsUser": user_id,
        "runAsGroup": user_id,
        "seccompProfile": _closed(
            {"type": profile, "localhostProfile": {"type": "string"}}, required=["type"]
        ),
        "appArmorProfile": _closed(
            {"type": profile, "localhostProfile": {"type": "string"}}, required=["type"]
        ),
        "seLinuxOptions": _closed({key: {"type": "string"} for key in ("level", "role", "type", "user")}),
        "windowsOptions": _open_object("Windows-specific settings, as in a Pod spec."),
    }


def pod_security_context() -> dict[str, Any]:
    """`podSecurityContext`: a core/v1 PodSecurityContext, closed so a misspelt field fails the install."""
    return _closed(
        {
            **_security_context_fields(),
            "fsGroup": {"type": "integer", "minimum": 0},
            "fsGroupChangePolicy": {"type": "string", "enum": ["OnRootMismatch", "Always"]},
            "seLinuxChangePolicy": {"type": "string", "enum": ["MountOption", "Recursive"]},
            "supplementalGroups": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "supplementalGroupsPolicy": {"type": "string", "enum": ["Merge", "Strict"]},
            "sysctls": {
                "type": "array",
                "items": _closed(
                    {"name": {"type": "string"}, "value": {"type": "string"}}, required=["name"]
                ),
            },
        },
        description="Security context of every pod the chart runs (operator, MinIO, bucket Job).",
    )


def container_security_context() -> dict[str, Any]:
    """`securityContext`: a core/v1 SecurityContext, closed so a misspelt field fails the install."""
    capabilities = {"type": "array", "items": {"type": "string", "minLength": 1}}
    return _closed(
        {
            **_security_context_fields(),
            "allowPrivilegeEscalation": {"type": "boolean"},
            "privileged": {"type": "boolean"},
            "readOnlyRootFilesystem": {"type": "boolean"},
            "procMount": {"type": "string", "enum": ["Default", "Unmasked"]},
            "capabilities": _closed({"add": capabilities, "drop": capabilities}),
        },
        description="Security context of every container the chart runs.",
    )


def values_schema(spec_schema: dict[str, Any], max_run_name: int) -> dict[str, Any]:
    """The chart's values schema; FineTune specs, resources and tolerations reuse the spec's own schema."""
    props = spec_schema["properties"]
    resources = copy.deepcopy(props["resources"])
    resources.pop("default", None)
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    operator = _closed(
        {
            "image": _image("The operator image (images/operator.Dockerfile).", tag_required=False),
            "imagePullSecrets": {
                "type": "array",
                "items": _closed({"name": {"type": "string", "minLength": 1}}, required=["name"]),
            },
            "healthPort": {"type": "integer", "minimum": 1, "maximum": 65535},
            "resyncSeconds": {"type": "number", "exclusiveMinimum": 0},
            "resources": resources,
            "podAnnotations": string_map,
            "podLabels": string_map,
            "nodeSelector": copy.deepcopy(props["nodeSelector"]),
            "tolerations": copy.deepcopy(props["tolerations"]),
            "affinity": _open_object("Pod affinity of the operator, as in a Pod spec."),
            "priorityClassName": {"type": "string"},
        },
        required=["image", "healthPort"],
    )
    service_account = _closed(
        {
            "create": {"type": "boolean"},
            "name": _text("ServiceAccount name; required when create is false.", pattern=OPTIONAL_SUBDOMAIN),
            "annotations": string_map,
        }
    )
    rbac = _closed(
        {
            "create": {"type": "boolean"},
            "clusterWide": {"type": "boolean", "description": "ClusterRole and every namespace watched."},
            "watchNamespace": _text(
                "Namespace watched when clusterWide is false; empty: the release namespace.",
                pattern="^$|" + DNS1123_LABEL,
                maxLength=63,
            ),
        }
    )
    s3 = _closed(
        {
            "endpoint": _text(
                "S3 endpoint URL; empty: MinIO (when enabled) or AWS.",
                pattern=r"^$|^https?://[^@/\s]+(/.*)?$",
            ),
            "region": {"type": "string", "minLength": 1},
            "bucket": _text("S3 bucket name.", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
            "existingSecret": _text(
                "Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.", pattern=OPTIONAL_SUBDOMAIN
            ),
            # MinIO refuses root users under 3 and passwords under 8 characters.
            "accessKeyId": _text(
                "Access key of the created Secret; generated when empty.", pattern=r"^$|^.{3,}$"
            ),
            "secretAccessKey": _text(
                "Secret key of the created Secret; generated when empty.", pattern=r"^$|^.{8,}$"
            ),
        },
        required=["region", "bucket"],
    )
    minio = _closed(
        {
            "enabled": {"type": "boolean"},
            "image": _image("MinIO server image (community images stopped in 2025).", tag_required=True),
            "resources": copy.deepcopy(resources),
            "persistence": _closed(
                {
                    "enabled": {"type": "boolean"},
                    "size": copy.deepcopy(props["scratchSize"]) | {"description": "Volume size."},
                    "storageClass": {"type": "string"},
                }
            ),
            "service": _closed(
                {
                    "type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "nodePort": {"type": ["integer", "null"], "minimum": 30000, "maximum": 32767},
                }
            ),
            "bucketJob": _closed(
                {
                    "image": _image("MinIO client image of the bucket Job.", tag_required=True),
                    "waitSeconds": {"type": "integer", "minimum": 10},
                }
            ),
        },
        required=["enabled"],
    )
    quantity = {
        "oneOf": [{"type": "integer"}, {"type": "string", "pattern": props["scratchSize"]["pattern"]}]
    }

    def kueue_name(description: str) -> dict[str, Any]:
        """A Kueue object's name, checked as a FineTune's `queue` is (Kueue puts it in a label)."""
        return {**copy.deepcopy(props["queue"]), "description": description}

    kueue = _closed(
        {
            "enabled": {"type": "boolean"},
            "resourceFlavor": kueue_name("ResourceFlavor name."),
            "nodeLabels": string_map,
            "clusterQueue": kueue_name("ClusterQueue name."),
            "quota": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": quantity,
                "description": "Nominal quota per resource (cpu, memory, nvidia.com/gpu, …).",
            },
            "preemption": {"type": "string", "enum": ["Never", "LowerPriority", "LowerOrNewerEqualPriority"]},
            "localQueue": kueue_name("LocalQueue name: a FineTune's `queue`."),
            "priorityClasses": {
                "type": "array",
                "items": _closed(
                    {
                        "name": kueue_name("A FineTune's `priorityClass`."),
                        "value": {"type": "integer"},
                        "description": {"type": "string"},
                    },
                    required=["name", "value"],
                ),
            },
        },
        required=["enabled"],
    )
    run_name = {
        "type": "string",
        "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
        "maxLength": max_run_name,
        "description": "FineTune name: a DNS-1035 label (its PyTorchJob and pods are named after it).",
    }
    finetune = _closed(
        {
            "name": run_name,
            "spec": copy.deepcopy(spec_schema),
            "nodePort": {
                "type": "integer",
                "minimum": 30000,
                "maximum": 32767,
                "description": "Also expose the served model on this node port (kind maps 30800 to :8000).",
            },
        },
        required=["name", "spec"],
    )
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the okvqa Helm chart",
        "$comment": "Generated by `okvqa-k8s chart generate` (okvqa_k8s/chart/values_schema.py).",
        **_closed(
            {
                "nameOverride": {"type": "string", "maxLength": 40},
                "fullnameOverride": {"type": "string", "maxLength": 48},
                "podSecurityContext": pod_security_context(),
                "securityContext": container_security_context(),
                "operator": operator,
                "serviceAccount": service_account,
                "rbac": rbac,
                "s3": s3,
                "minio": minio,
                "kueue": kueue,
                "finetunes": {"type": "array", "items": finetune, "description": "FineTunes to create."},
                # Helm adds `global` to every chart's values; refusing it would break use as a subchart.
                "global": {"type": "object"},
            },
            required=["operator", "serviceAccount", "rbac", "s3", "minio", "finetunes"],
        ),
    }


def schema_text() -> str:
    from okvqa_k8s.kube.names import MAX_NAME
    from okvqa_k8s.kube.schema import spec_openapi_schema

    return json.dumps(values_schema(spec_openapi_schema("jsonschema"), MAX_NAME), indent=2) + "\n"
