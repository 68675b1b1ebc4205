"""The `finetunes.okvqa.dev` CustomResourceDefinition, generated from the spec and checked in for Helm.

The chart installs `crds/finetunes.okvqa.dev.yaml` verbatim; `okvqa-k8s crd --check` and a test compare
it with what this module generates, so the CRD can never lag behind `FineTuneSpec`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from okvqa_k8s.kube import names
from okvqa_k8s.kube.schema import spec_openapi_schema, status_openapi_schema

CRD_NAME = f"{names.PLURAL}.{names.GROUP}"
HEADER = (
    "# Generated from okvqa_k8s/spec.py by `okvqa-k8s crd`; do not edit by hand.\n"
    "# Regenerate: okvqa-k8s crd > charts/okvqa/crds/finetunes.okvqa.dev.yaml\n"
)

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Nodes", "type": "integer", "jsonPath": ".spec.nodes"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
    {
        "name": "Accuracy",
        "type": "number",
        "description": "Fine-tuned VQA accuracy (%) on the categories trained on.",
        "jsonPath": ".status.accuracy.finetuned",
    },
    {
        "name": "Untrained-Delta",
        "type": "number",
        "description": "Change of VQA accuracy (percentage points) on the categories not trained on.",
        "jsonPath": ".status.untrainedAccuracy.delta",
        "priority": 1,
    },
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
    {
        "name": "Waiting",
        "type": "date",
        "description": "How long the run has been waiting in its Kueue LocalQueue (empty once admitted).",
        "jsonPath": ".status.queue.since",
        "priority": 1,
    },
    {"name": "Queue", "type": "string", "jsonPath": ".spec.queue", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd_manifest() -> dict[str, Any]:
    """The CRD object: one served+stored version, status subresource, printer columns."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "okvqa", "app.kubernetes.io/part-of": "okvqa-k8s"},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": ["okvqa"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A LoRA + DeepSpeed fine-tuning run of LLaVA-1.5 on OK-VQA, "
                            "served and evaluated when done.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_openapi_schema("kubernetes"),
                                "status": status_openapi_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    """Deterministic YAML (key order as built), so the checked-in file diffs cleanly."""
    return HEADER + yaml.safe_dump(crd_manifest(), sort_keys=False, width=110, allow_unicode=True)


def crd_file(chart_dir: Path) -> Path:
    """Where a chart keeps the CRD (Helm installs `crds/` before the templates)."""
    return chart_dir / "crds" / f"{CRD_NAME}.yaml"


def drift(path: Path) -> str | None:
    """Why the checked-in CRD differs from the generated one, or None when it is current."""
    if not path.is_file():
        return f"{path} is missing; generate it with `okvqa-k8s crd > {path}`"
    if path.read_text(encoding="utf-8") != crd_yaml():
        return f"{path} is out of date with okvqa_k8s/spec.py; regenerate it with `okvqa-k8s crd > {path}`"
    return None
