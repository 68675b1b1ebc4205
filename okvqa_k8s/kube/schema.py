"""The FineTune spec's schema, generated from `FineTuneSpec` so the CRD and the chart cannot drift from it.

pydantic emits JSON Schema 2020-12 with `$ref`, `anyOf: [X, null]` and numeric `exclusiveMinimum`; the
API server only accepts a *structural* OpenAPI v3 schema (no `$ref`, no type inside `anyOf` except the
int-or-string pattern, boolean `exclusiveMinimum`, no `additionalProperties` beside `properties`).
One walk produces both dialects: `kubernetes` for the CRD and `jsonschema` (draft 7) for Helm's
`values.schema.json`, which also closes objects so a typo in values fails `helm install`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault

from okvqa_k8s.kube.states import Phase
from okvqa_k8s.spec import FineTuneSpec

Dialect = Literal["kubernetes", "jsonschema"]

# Cross-field rule of FineTuneSpec (`_evaluation_needs_inference`), enforced by the API server via CEL.
# Server-side defaulting runs first, so both fields are always present when it is evaluated.
CROSS_FIELD_RULES = [
    {
        "rule": "!self.evaluation.enabled || self.inference.enabled",
        "message": "evaluation.enabled requires inference.enabled (it queries the endpoint)",
    },
    {
        "rule": "!has(self.priorityClass) || has(self.queue)",
        "message": "priorityClass requires queue (Kueue only orders jobs waiting in a queue)",
    },
]


class _WithFactoryDefaults(GenerateJsonSchema):
    """Emit `default_factory` values too: the API server then shows a complete spec after defaulting.

    A nested model's factory becomes `{}` so the API server applies the nested fields' own defaults; empty
    lists and maps are left out because "absent" already means empty.
    """

    def get_default_value(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()
        if isinstance(value, BaseModel):
            return {}
        return value if value else NoDefault


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a `$ref` (pydantic may also wrap it as `allOf: [{$ref}]`), keeping sibling keys."""
    ref = node.get("$ref")
    if ref is None and len(node.get("allOf", [])) == 1 and "$ref" in node["allOf"][0]:
        ref = node["allOf"][0]["$ref"]
    if ref is None:
        return node
    target = copy.deepcopy(defs[ref.rsplit("/", 1)[-1]])
    siblings = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
    target.update(siblings)
    return target


def _is_int_or_string(branches: list[dict[str, Any]]) -> bool:
    return sorted(b.get("type", "") for b in branches) == ["integer", "string"]


def _convert(node: dict[str, Any], defs: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    branches = [b for b in node.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        merged = {k: v for k, v in node.items() if k != "anyOf"}
        for key, value in _resolve(branches[0], defs).items():
            # The field's own keys (its description) win over those of the model it refers to.
            merged.setdefault(key, value)
        node = merged
    elif branches and _is_int_or_string(branches):
        # Kubernetes quantities: the API server's one permitted anyOf, with the pattern outside it.
        pattern = next((b["pattern"] for b in branches if "pattern" in b), None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if pattern:
            out["pattern"] = pattern
        if dialect == "kubernetes":
            out["x-kubernetes-int-or-string"] = True
        node = {k: v for k, v in node.items() if k != "anyOf"}
    elif branches:
        raise ValueError(f"cannot express anyOf {branches} in a structural schema")

    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out["properties"] = {name: _convert(sub, defs, dialect) for name, sub in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs, dialect)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out["additionalProperties"] = _convert(value, defs, dialect)
            elif dialect == "jsonschema":
                out["additionalProperties"] = value
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and dialect == "kubernetes":
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = copy.deepcopy(value)
    return out


def spec_openapi_schema(dialect: Dialect = "kubernetes") -> dict[str, Any]:
    """Schema of a FineTune `.spec`, with descriptions and defaults.

    `kubernetes`: structural OpenAPI v3 for the CRD (unknown fields are pruned by the API server and
    refused by `kubectl apply`'s strict field validation; the cross-field rule is a CEL validation).
    `jsonschema`: draft-7 JSON Schema for Helm values, objects closed with `additionalProperties: false`.
    """
    raw = FineTuneSpec.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults)
    schema = _convert(raw, raw.get("$defs", {}), dialect)
    if dialect == "kubernetes":
        schema["x-kubernetes-validations"] = copy.deepcopy(CROSS_FIELD_RULES)
    return schema


def status_openapi_schema() -> dict[str, Any]:
    """Schema of `.status`, written only by the operator; typed for printer columns and clients."""
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }
    text = {"type": "string"}
    return {
        "type": "object",
        "properties": {
            "phase": {
                "type": "string",
                "enum": [phase.value for phase in Phase],
            },
            "reason": {**text, "description": "Machine-readable cause of the current phase (Failed: why)."},
            "message": {**text, "description": "Human-readable detail of the current phase."},
            "observedGeneration": {"type": "integer"},
            "specHash": {**text, "description": "sha256 of the accepted spec; other specs are refused."},
            "jobName": {**text, "description": "The PyTorchJob of this run."},
            "progress": {
                **text,
                "description": "Optimiser steps done/total (<outputUri>/progress.json).",
            },
            "loss": {"type": "number"},
            "checkpointUri": {**text, "description": "Latest checkpoint complete on every node."},
            "modelUri": {**text, "description": "Merged model served by the inference Deployment."},
            "endpoint": {**text, "description": "OpenAI-compatible base URL of the served model."},
            "accuracy": {
                "type": "object",
                "description": "VQA accuracy (percent) before and after on the categories trained on "
                "(dataset.categories), pooled over their questions; every evaluated question when none "
                "of them was evaluated.",
                "properties": {"base": {"type": "number"}, "finetuned": {"type": "number"}},
            },
            "untrainedAccuracy": {
                "type": "object",
                "description": "VQA accuracy (percent) before and after on the evaluated categories not "
                "trained on, pooled over their questions: what fine-tuning did to them.",
                "properties": {
                    "base": {"type": "number"},
                    "finetuned": {"type": "number"},
                    "delta": {"type": "number", "description": "finetuned - base, percentage points."},
                    "questions": {"type": "integer", "description": "Questions behind the figures."},
                },
            },
            "queue": {
                "type": "object",
                "description": "Waiting for Kueue (spec.queue): the LocalQueue, Kueue's reason, since when "
                "the run waits (absent once admitted) and the seconds waited before, all waits together.",
                "properties": {
                    "name": text,
                    "reason": {**text, "description": "The reason on Kueue's Workload."},
                    "since": {"type": "string", "format": "date-time"},
                    "waitedSeconds": {"type": "integer"},
                },
            },
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }
