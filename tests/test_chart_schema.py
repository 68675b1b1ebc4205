"""The chart's generated files stay equal to their Python sources, and the values schema means what it says.

No helm needed: values.yaml and examples/ are checked with jsonschema against values.schema.json, which is
what helm itself does before rendering.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from okvqa_k8s.chart import files, readme
from okvqa_k8s.chart.cli import chart as chart_command
from okvqa_k8s.spec import load_document, load_spec
from tests.conftest import CHART_DIR, REPO

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def values_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((CHART_DIR / files.SCHEMA_FILE).read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def default_values() -> dict[str, Any]:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))


def errors(values: dict[str, Any]) -> list[str]:
    return sorted(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in values_validator().iter_errors(values)
    )


def test_generated_files_are_current() -> None:
    assert files.drift(CHART_DIR) == [], "run `okvqa-k8s chart generate` and commit the result"


def test_check_reports_drift_and_generate_repairs_it(tmp_path: Path) -> None:
    chart = tmp_path / "okvqa"
    shutil.copytree(CHART_DIR, chart)
    schema = chart / files.SCHEMA_FILE
    schema.write_text(schema.read_text(encoding="utf-8").replace('"maxLength": 40', '"maxLength": 41', 1))
    (chart / files.RULES_FILE).unlink()

    runner = CliRunner()
    stale = runner.invoke(chart_command, ["generate", "--check", "--chart-dir", str(chart)])
    assert stale.exit_code != 0
    assert "values.schema.json: out of date" in str(stale.exception)
    assert "operator-rules.yaml: missing" in str(stale.exception)

    done = runner.invoke(chart_command, ["generate", "--chart-dir", str(chart)])
    assert done.exit_code == 0, done.output
    assert files.drift(chart) == []
    assert not [p for p in chart.rglob("*") if p.name.endswith(".tmp")], "writes are atomic"


def test_generate_refuses_a_non_chart(tmp_path: Path) -> None:
    result = CliRunner().invoke(chart_command, ["generate", "--chart-dir", str(tmp_path)])
    assert result.exit_code != 0 and "no Chart.yaml" in str(result.exception)
    assert list(tmp_path.iterdir()) == []


def test_default_values_validate() -> None:
    assert errors(default_values()) == []


def test_finetune_part_is_the_spec_schema() -> None:
    from okvqa_k8s.kube.schema import spec_openapi_schema

    schema = json.loads((CHART_DIR / files.SCHEMA_FILE).read_text(encoding="utf-8"))
    assert schema["properties"]["finetunes"]["items"]["properties"]["spec"] == spec_openapi_schema(
        "jsonschema"
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid_finetunes(path: Path) -> None:
    spec = load_spec(path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert doc["apiVersion"] == "okvqa.dev/v1alpha1" and doc["kind"] == "FineTune"
    values = default_values() | {
        "finetunes": [{"name": doc["metadata"]["name"], "spec": load_document(path)}]
    }
    assert errors(values) == []
    assert spec.nodes == 2, "both examples are multi-node"


def test_example_shapes() -> None:
    tiny = load_spec(REPO / "examples" / "tiny-cpu.yaml")
    assert (tiny.gpus, tiny.inference.gpus, tiny.nproc_per_node) == (0, 0, 1)
    assert tiny.model.name.startswith("/opt/okvqa/models/"), "the tiny model is baked into the trainer image"
    big = load_spec(REPO / "examples" / "llava-1.5-7b-okvqa-other.yaml")
    assert (big.nodes, big.nproc_per_node, big.gpus, big.world_size) == (2, 8, 8, 16)
    assert big.model.name == "llava-hf/llava-1.5-7b-hf" and big.dataset.categories == ["other"]
    assert (big.lora.r, big.lora.alpha, big.training.learning_rate, big.training.mm_projector_lr) == (
        128,
        256,
        2e-4,
        2e-5,
    )
    assert big.training.deepspeed == "zero3" and big.model.dtype == "bf16"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"operator": {"healthPort": 0}}, "operator/healthPort"),
        (
            {"operator": {"image": {"repository": "x", "tag": "", "pullPolicy": "Sometimes"}}},
            "operator/image/pullPolicy",
        ),
        ({"rbac": {"watchNamespace": "Bad_NS"}}, "rbac/watchNamespace"),
        (
            {"s3": {"region": "us-east-1", "bucket": "okvqa", "secretAccessKey": "short"}},
            "s3/secretAccessKey",
        ),
        (
            {"s3": {"region": "us-east-1", "bucket": "okvqa", "endpoint": "http://key:secret@minio:9000"}},
            "s3/endpoint",
        ),
        (
            {"minio": {"enabled": True, "resources": {"requests": {"memory": "lots"}}}},
            "minio/resources/requests/memory",
        ),
        (
            {"finetunes": [{"name": "x" * 41, "spec": {"dataset": {"uri": "d"}, "outputUri": "o"}}]},
            "finetunes/0/name",
        ),
        (
            {
                "finetunes": [
                    {"name": "ok", "spec": {"dataset": {"uri": "d"}, "outputUri": "o", "nodes": "2"}}
                ]
            },
            "finetunes/0/spec/nodes",
        ),
        ({"podSecurityContext": {"runAsUsr": 1000}}, "podSecurityContext"),
        (
            {"podSecurityContext": {"seccompProfile": {"type": "Default"}}},
            "podSecurityContext/seccompProfile/type",
        ),
        ({"securityContext": {"privileged": "no"}}, "securityContext/privileged"),
        ({"securityContext": {"capabilities": {"drop": "ALL"}}}, "securityContext/capabilities/drop"),
    ],
)
def test_schema_refuses(change: dict[str, Any], where: str) -> None:
    values = default_values() | change
    found = errors(values)
    assert any(line.startswith(where + ":") for line in found), found


def test_values_schema_closes_every_object() -> None:
    """Every object with named properties refuses unknown keys, except Kubernetes pass-through ones."""
    schema = json.loads((CHART_DIR / files.SCHEMA_FILE).read_text(encoding="utf-8"))
    open_objects = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema, "")
    assert open_objects == []


def test_readme_documents_every_value_from_its_comment() -> None:
    """README.md is generated from values.yaml's `# --` comments; every value must have one."""
    values = (CHART_DIR / "values.yaml").read_text(encoding="utf-8")
    schema = json.loads((CHART_DIR / files.SCHEMA_FILE).read_text(encoding="utf-8"))
    table = readme.rows(values, schema)
    assert [row.key for row in table if not row.description] == []
    keys = [row.key for row in table]
    assert keys[:4] == ["nameOverride", "fullnameOverride", "podSecurityContext", "securityContext"]
    assert "operator.resources" in keys and "operator.resources.requests.cpu" not in keys  # documented map
    assert "minio.persistence.size" in keys and "minio.persistence" not in keys  # undocumented map: opened
    text = (CHART_DIR / readme.README_FILE).read_text(encoding="utf-8")
    assert "| rbac.clusterWide | bool | `false` | false: a Role + RoleBinding" in text
    assert "| minio.service.nodePort | int or null | `null` |" in text


def test_readme_drift_is_detected(tmp_path: Path) -> None:
    chart = tmp_path / "okvqa"
    shutil.copytree(CHART_DIR, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text(encoding="utf-8").replace("# -- S3 region.", "# -- The S3 region."))
    assert files.drift(chart) == [
        f"{chart / readme.README_FILE}: out of date with its sources; run `okvqa-k8s chart generate`"
    ]


def test_descriptions_follow_helm_docs_comments() -> None:
    text = """# header, not a description
# -- top
a: 1
b:
  # a plain comment is no description
  c: x
  # -- first line
  # second line
  d:
    e: []

# -- after a blank line
f: null
"""
    assert readme.descriptions(text) == {
        "a": "top",
        "b.d": "first line second line",
        "f": "after a blank line",
    }
    table = readme.rows(text, {"properties": {"f": {"type": ["integer", "null"]}}})
    assert [(r.key, r.type) for r in table] == [
        ("a", "int"),
        ("b.c", "string"),
        ("b.d", "object"),
        ("f", "int or null"),
    ]
