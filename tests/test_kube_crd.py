"""The CRD and the spec schema are generated from FineTuneSpec; the checked-in copy must not drift."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from okvqa_k8s.kube import crd, names
from okvqa_k8s.kube.schema import spec_openapi_schema
from okvqa_k8s.spec import FineTuneSpec
from tests.conftest import CHART_DIR

MINIMAL = {"dataset": {"uri": "s3://bucket/datasets/okvqa"}, "outputUri": "s3://bucket/runs/a"}


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_checked_in_crd_matches_generated() -> None:
    checked_in = crd.crd_file(CHART_DIR)
    assert crd.drift(checked_in) is None, crd.drift(checked_in)


def test_drift_is_detected(tmp_path) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text(crd.crd_yaml().replace("LoRA rank.", "LoRA rank (old)."))
    assert "out of date" in crd.drift(stale)
    assert "missing" in crd.drift(tmp_path / "absent.yaml")


def test_schema_is_structural() -> None:
    """The API server's structural rules: no $ref, typed nodes, anyOf only for int-or-string."""
    schema = spec_openapi_schema()
    for path, node in _walk(schema):
        assert "$ref" not in node and "$defs" not in node and "title" not in node, path
        if path.endswith("/properties") or path.endswith("x-kubernetes-validations"):
            continue
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        elif isinstance(node.get("type"), str) or path.endswith(("/anyOf", "/enum")):
            pass
        elif set(node) & {"properties", "items", "additionalProperties", "enum", "minimum"}:
            pytest.fail(f"{path}: schema node without a type: {node}")
        if node.get("properties") is not None:
            assert "additionalProperties" not in node, f"{path}: properties and additionalProperties"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_schema_keeps_descriptions_and_defaults() -> None:
    props = spec_openapi_schema()["properties"]
    assert props["lora"]["properties"]["r"]["default"] == 128
    assert props["lora"]["properties"]["r"]["description"] == "LoRA rank."
    assert props["training"]["properties"]["deepspeed"] == {
        "default": "zero3",
        "description": "DeepSpeed ZeRO stage.",
        "enum": ["zero2", "zero3"],
        "type": "string",
    }
    assert props["dataset"]["properties"]["categories"]["default"] == ["other"]
    assert props["model"]["default"] == {}  # nested defaults apply when the block is omitted
    # An optional block is described by its field (what it is for), not by the model it refers to.
    api_key = props["inference"]["properties"]["apiKeySecret"]
    assert api_key["description"].startswith("Secret key holding the API key the servers require")
    assert api_key["required"] == ["name"] and "nullable" not in api_key
    assert spec_openapi_schema()["required"] == ["dataset", "outputUri"]
    # every field of the model appears, camelCase
    assert set(props) == {f.alias or k for k, f in FineTuneSpec.model_fields.items()}


def test_defaults_in_schema_equal_pydantic_defaults() -> None:
    """Server-side defaulting must produce the same document pydantic would: apply schema defaults."""

    def apply_defaults(schema: dict[str, Any], doc: Any) -> Any:
        if schema.get("type") != "object" or not isinstance(doc, dict):
            return doc
        for name, sub in schema.get("properties", {}).items():
            if name not in doc and "default" in sub:
                doc[name] = json.loads(json.dumps(sub["default"]))
            if name in doc:
                doc[name] = apply_defaults(sub, doc[name])
        return doc

    defaulted = apply_defaults(spec_openapi_schema(), json.loads(json.dumps(MINIMAL)))
    expected = FineTuneSpec.model_validate(MINIMAL).to_wire()

    def drop_empty(d: Any) -> Any:
        if isinstance(d, dict):
            cleaned = {k: drop_empty(v) for k, v in d.items()}
            return {k: v for k, v in cleaned.items() if v not in ({}, [])}
        return d

    assert drop_empty(defaulted) == drop_empty(expected)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"nodes": 0}, "nodes"),
        ({"lora": {"dropout": 1.0}}, "dropout"),
        ({"training": {"deepspeed": "zero4"}}, "deepspeed"),
        ({"resources": {"limits": {"cpu": "lots"}}}, "cpu"),
        ({"training": {"learningRate": 0}}, "learningRate"),
    ],
)
def test_jsonschema_dialect_rejects_what_pydantic_rejects(patch: dict, field: str) -> None:
    doc = {**MINIMAL, **patch}
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        FineTuneSpec.model_validate(doc)
    with pytest.raises(jsonschema.ValidationError) as info:
        jsonschema.Draft7Validator(spec_openapi_schema("jsonschema")).validate(doc)
    assert field in json.dumps(list(info.value.absolute_path)) + str(info.value.message)


def test_jsonschema_dialect_closes_objects_and_accepts_valid_specs() -> None:
    schema = spec_openapi_schema("jsonschema")
    validator = jsonschema.Draft7Validator(schema)
    validator.validate(FineTuneSpec.model_validate(MINIMAL).to_wire())
    validator.validate({**MINIMAL, "resources": {"limits": {"cpu": 4, "memory": "16Gi"}}})
    with pytest.raises(jsonschema.ValidationError, match="noodes"):
        validator.validate({**MINIMAL, "noodes": 2})
    assert not [p for p, n in _walk(schema) if any(k.startswith("x-kubernetes") for k in n)]


def test_crd_shape() -> None:
    obj = yaml.safe_load(crd.crd_file(CHART_DIR).read_text())
    assert obj["metadata"]["name"] == "finetunes.okvqa.dev"
    (version,) = obj["spec"]["versions"]
    assert version["name"] == names.VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "Nodes",
        "Progress",
        "Accuracy",
        "Untrained-Delta",
        "Endpoint",
        "Waiting",
        "Queue",
        "Age",
    ]
    # `kubectl get` keeps its columns; the change on the untrained categories shows with -o wide
    wide = {c["name"]: c.get("priority", 0) for c in version["additionalPrinterColumns"]}
    assert wide["Untrained-Delta"] == 1 and wide["Accuracy"] == 0
    assert wide["Queue"] == 1 and wide["Waiting"] == 1  # the Phase column says Queued; -o wide how long
    assert obj["spec"]["scope"] == "Namespaced"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {
        "phase",
        "conditions",
        "jobName",
        "progress",
        "checkpointUri",
        "modelUri",
        "endpoint",
        "accuracy",
        "untrainedAccuracy",
    } <= set(status)


def test_crd_validates_as_kubernetes_object() -> None:
    import kubernetes_validate

    kubernetes_validate.validate(crd.crd_manifest(), "1.34.0", strict=True)


def test_quantity_pattern_is_a_valid_regex() -> None:
    pattern = spec_openapi_schema()["properties"]["resources"]["properties"]["limits"]["additionalProperties"]
    assert re.match(pattern["pattern"], "16Gi") and not re.match(pattern["pattern"], "lots")
