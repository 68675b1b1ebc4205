"""The generated files of the Helm chart, and the command that keeps them current.

Two files of `charts/okvqa/` must never be edited by hand, because each copies a Python source of truth:
`values.schema.json` (its FineTune part is `FineTuneSpec`'s schema, so a FineTune listed in values is
checked by the same rules as `okvqa-k8s submit`) and `files/operator-rules.yaml` (the RBAC rules the
operator needs, `okvqa_k8s.kube.rbac.OPERATOR_RULES`, which the chart's Role/ClusterRole grant verbatim).
`okvqa-k8s chart generate --check` and a test fail when either has drifted.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import click
import yaml

from okvqa_k8s.errors import UserError
from okvqa_k8s.fsutil import atomic_write_text

CHART_DIR = Path(__file__).resolve().parents[1] / "charts" / "okvqa"
SCHEMA_FILE = "values.schema.json"
RULES_FILE = "files/operator-rules.yaml"
RULES_HEADER = (
    "# Generated from okvqa_k8s/kube/rbac.py by `okvqa-k8s chart generate`; do not edit by hand.\n"
    "# The operator's Role (or ClusterRole with rbac.clusterWide) grants exactly these rules.\n"
)
DIGEST = r"^(sha256:[a-f0-9]{64})?$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
OPTIONAL_SUBDOMAIN = r"^$|^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


# --- values.schema.json ------------------------------------------------------------------------------


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
        "$comment": "Generated by `okvqa-k8s chart generate` (okvqa_k8s/chartgen.py, okvqa_k8s/spec.py).",
        **_closed(
            {
                "nameOverride": {"type": "string", "maxLength": 40},
                "fullnameOverride": {"type": "string", "maxLength": 48},
                "operator": operator,
                "serviceAccount": service_account,
                "rbac": rbac,
                "s3": s3,
                "minio": minio,
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


# --- files/operator-rules.yaml -----------------------------------------------------------------------


def rules_text() -> str:
    try:
        from okvqa_k8s.kube.rbac import OPERATOR_RULES
    except ImportError as exc:
        raise UserError(f"okvqa_k8s.kube.rbac.OPERATOR_RULES is not available ({exc})") from None
    return RULES_HEADER + yaml.safe_dump(list(OPERATOR_RULES), sort_keys=False, default_flow_style=False)


def generated_files() -> dict[str, str]:
    """Relative path in the chart → the exact text it must have."""
    return {SCHEMA_FILE: schema_text(), RULES_FILE: rules_text()}


def drift(chart_dir: Path = CHART_DIR) -> list[str]:
    """One line per generated file that is missing or differs from what the sources generate."""
    problems = []
    for rel, text in generated_files().items():
        path = chart_dir / rel
        if not path.is_file():
            problems.append(f"{path}: missing; run `okvqa-k8s chart generate`")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: out of date with its Python source; run `okvqa-k8s chart generate`")
    return problems


@click.group()
def chart() -> None:
    """The Helm chart (charts/okvqa): files generated from the spec and the operator's RBAC rules."""


@chart.command()
@click.option("--check", is_flag=True, help="Write nothing; exit non-zero when a generated file is stale.")
@click.option(
    "--chart-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=CHART_DIR,
    show_default=True,
    help="Chart directory.",
)
def generate(check: bool, chart_dir: Path) -> None:
    """Regenerate values.schema.json and files/operator-rules.yaml of the chart."""
    if not (chart_dir / "Chart.yaml").is_file():
        raise UserError(f"{chart_dir}: not a chart directory (no Chart.yaml)")
    if check:
        problems = drift(chart_dir)
        if problems:
            raise UserError("; ".join(problems))
        click.echo(f"{chart_dir}: generated files are current")
        return
    for rel, text in generated_files().items():
        atomic_write_text(chart_dir / rel, text)
        click.echo(f"wrote {chart_dir / rel}")
