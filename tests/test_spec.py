"""FineTuneSpec: seed defaults, camelCase wire format, every error at once, --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from okvqa_k8s.errors import UserError
from okvqa_k8s.spec import apply_overrides, load_document, load_spec, parse_spec

MINIMAL = {"dataset": {"uri": "s3://bkt/ds"}, "outputUri": "s3://bkt/out"}


def test_defaults_reproduce_the_seed_run() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.model.name == "llava-hf/llava-1.5-7b-hf"
    assert (spec.lora.r, spec.lora.alpha) == (128, 256)
    t = spec.training
    assert (t.learning_rate, t.mm_projector_lr, t.epochs, t.per_device_batch_size) == (2e-4, 2e-5, 20, 16)
    assert (t.deepspeed, t.lr_scheduler, t.warmup_ratio, t.max_length) == ("zero3", "cosine", 0.03, 2048)
    assert spec.model.dtype == "bf16" and t.gradient_checkpointing
    assert spec.dataset.categories == ["other"]
    assert spec.gpus == 8 and spec.world_size == 8
    assert t.prompt_template == "llava_v1"  # LLaVA's vicuna_v1, what the seed trained with


def test_prompt_template_is_one_of_two() -> None:
    spec = parse_spec({**MINIMAL, "training": {"promptTemplate": "hf"}})
    assert spec.training.prompt_template == "hf" and spec.to_wire()["training"]["promptTemplate"] == "hf"
    with pytest.raises(UserError, match=r"training\.promptTemplate: .*'llava_v1' or 'hf'"):
        parse_spec({**MINIMAL, "training": {"promptTemplate": "vicuna"}}, "f.yaml")


def test_wire_format_is_camel_case_and_round_trips() -> None:
    spec = parse_spec({**MINIMAL, "nprocPerNode": 2, "training": {"perDeviceBatchSize": 4}})
    wire = spec.to_wire()
    assert wire["nprocPerNode"] == 2 and wire["training"]["perDeviceBatchSize"] == 4
    assert "nproc_per_node" not in wire and "maxSteps" not in wire["training"]  # None left out
    assert parse_spec(wire) == spec


def test_every_problem_reported_at_once_naming_fields() -> None:
    with pytest.raises(UserError) as info:
        parse_spec({"outputUri": "", "nodes": 0, "tolerations": [{"operator": "Maybe"}], "typo": 1}, "f.yaml")
    lines = str(info.value).splitlines()
    fields = {line.split(": ")[1] for line in lines}
    assert {"dataset", "outputUri", "nodes", "tolerations[0].operator", "typo"} <= fields
    assert all(line.startswith("f.yaml: ") for line in lines)


def test_credentials_never_in_spec_and_evaluation_needs_inference() -> None:
    with pytest.raises(UserError, match="credentialsSecret"):
        parse_spec({**MINIMAL, "storage": {"endpoint": "http://key:secret@minio:9000"}})
    with pytest.raises(UserError, match="requires inference.enabled"):
        parse_spec({**MINIMAL, "inference": {"enabled": False}})


def test_overrides_are_typed_yaml_scalars() -> None:
    doc = apply_overrides(MINIMAL, ["nodes=3", "training.maxSteps=10", "inference.enabled=false", "image="])
    assert doc["nodes"] == 3 and doc["training"]["maxSteps"] == 10 and doc["inference"]["enabled"] is False
    assert doc["image"] == "" and "nodes" not in MINIMAL  # the input is not modified
    with pytest.raises(UserError, match="key.path=value"):
        apply_overrides(MINIMAL, ["nodes"])
    with pytest.raises(UserError, match="not a mapping"):
        apply_overrides(MINIMAL, ["outputUri.x=1"])


def test_a_finetune_object_file_is_the_same_document(tmp_path: Path) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(MINIMAL))
    wrapped = tmp_path / "ft.yaml"
    wrapped.write_text(yaml.safe_dump({"apiVersion": "okvqa.dev/v1alpha1", "kind": "FineTune",
                                       "metadata": {"name": "x"}, "spec": MINIMAL}))  # fmt: skip
    assert load_spec(bare) == load_spec(wrapped)
    assert load_spec(bare, ["nodes=2"]).nodes == 2


@pytest.mark.parametrize(("text", "match"), [("a: [", "not valid YAML"), ("- 1\n", "mapping")])
def test_unreadable_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        load_document(path)
    with pytest.raises(UserError, match="cannot read"):
        load_document(tmp_path / "missing.yaml")


def test_evaluation_scores_every_category_of_a_set_beside_the_dataset() -> None:
    from okvqa_k8s.layout import eval_dataset_uri

    spec = parse_spec(MINIMAL)
    assert spec.evaluation.categories == ["all"] and spec.evaluation.dataset_uri is None
    assert spec.trained_categories == ["other"]
    assert spec.evaluated_categories == [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "other"
    ]  # fmt: skip
    assert eval_dataset_uri(spec) == "s3://bkt/ds/eval"
    assert eval_dataset_uri(parse_spec({**MINIMAL, "dataset": {"uri": "/data/ds"}})) == "/data/ds/eval"
    explicit = parse_spec(
        {**MINIMAL, "evaluation": {"datasetUri": "s3://bkt/all-val", "categories": ["Other"]}}
    )
    assert eval_dataset_uri(explicit) == "s3://bkt/all-val" and explicit.evaluated_categories == ["other"]
    # `--set` gives one string: comma-separated spellings, which become the codes the CRD enumerates
    doc = apply_overrides(MINIMAL, ["evaluation.categories=plants and animals,ten", "dataset.categories=all"])
    spec = parse_spec(doc)
    assert spec.to_wire()["evaluation"]["categories"] == ["eight", "ten"]
    assert spec.to_wire()["dataset"]["categories"] == ["all"] and len(spec.trained_categories) == 11
    assert parse_spec(spec.to_wire()) == spec


def test_category_codes_of_the_schema_are_the_okvqa_codes() -> None:
    from typing import get_args

    from okvqa_k8s.data.categories import CATEGORIES
    from okvqa_k8s.kube.schema import spec_openapi_schema
    from okvqa_k8s.spec import Category

    assert list(get_args(Category)) == [*CATEGORIES, "all"]
    props = spec_openapi_schema()["properties"]
    for field in (
        props["dataset"]["properties"]["categories"],
        props["evaluation"]["properties"]["categories"],
    ):
        assert field["items"]["enum"] == [*CATEGORIES, "all"]


def test_unknown_categories_name_the_field() -> None:
    bad = {**MINIMAL, "dataset": {"uri": "s3://bkt/ds", "categories": ["sport"]},
           "evaluation": {"categories": ["other", "eleven"], "datasetUri": ""}}  # fmt: skip
    with pytest.raises(UserError) as info:
        parse_spec(bad, "f.yaml")
    lines = str(info.value).splitlines()
    assert (
        "f.yaml: dataset.categories: 'sport': unknown category (expected a code one..ten/other, " in lines[0]
    )
    assert any(line.startswith("f.yaml: evaluation.categories: 'eleven': unknown category") for line in lines)
    assert any(line.startswith("f.yaml: evaluation.datasetUri: ") for line in lines)
    with pytest.raises(UserError, match="evaluation.categories: List should have at least 1 item"):
        parse_spec({**MINIMAL, "evaluation": {"categories": []}})


def test_evaluation_metric_is_the_official_one_unless_chosen() -> None:
    assert parse_spec(MINIMAL).evaluation.metric == "official"
    chosen = parse_spec(apply_overrides(MINIMAL, ["evaluation.metric=vqaeval-2017"]))
    assert chosen.to_wire()["evaluation"]["metric"] == "vqaeval-2017"
    with pytest.raises(
        UserError, match="f.yaml: evaluation.metric: Input should be 'official' or 'vqaeval-2017'"
    ):
        parse_spec({**MINIMAL, "evaluation": {"metric": "vqa"}}, "f.yaml")


@pytest.mark.parametrize(
    ("inference", "message"),
    [
        ({"apiKeySecret": {"name": "Bad_Name"}}, "inference.apiKeySecret.name: String should match pattern"),
        ({"apiKeySecret": {"name": "api", "key": "a/b"}}, "inference.apiKeySecret.key: String should match"),
        ({"allowedClients": [{}]}, "inference.allowedClients[0]: expected podSelector and/or"),
        (
            {"allowedClients": [{"cidr": "10.0.0.0/8", "podSelector": {"app": "ui"}}]},
            "inference.allowedClients[0]: expected podSelector and/or namespaceSelector, or cidr",
        ),
        ({"allowedClients": [{"cidr": "10.0.0.300/8"}]}, "cidr '10.0.0.300/8': expected an IP network"),
    ],
)
def test_inference_access_fields_are_checked(inference: dict, message: str) -> None:
    with pytest.raises(UserError) as exc:
        parse_spec({**MINIMAL, "inference": inference})
    assert message in str(exc.value)


def test_inference_access_fields_round_trip() -> None:
    inference = {
        "apiKeySecret": {"name": "llava-api"},
        "allowedClients": [{"namespaceSelector": {}}, {"podSelector": {"app": "ui"}}, {"cidr": "fd00::/8"}],
    }
    spec = parse_spec({**MINIMAL, "inference": inference})
    assert spec.inference.api_key_secret is not None and spec.inference.api_key_secret.key == "api-key"
    assert parse_spec(spec.to_wire()) == spec
    assert spec.to_wire()["inference"]["allowedClients"][0] == {"namespaceSelector": {}}


@pytest.mark.parametrize(
    ("field", "uri", "problem"),
    [
        ("dataset.uri", "s3://bad!bucket/x", "may hold only lowercase letters, digits, '.' and '-'"),
        ("outputUri", "s3://Okvqa/runs", "may hold only lowercase letters"),
        ("outputUri", "s3://ab/runs", "must be 3 to 63 characters long"),
        ("outputUri", "s3://" + "a" * 64 + "/runs", "must be 3 to 63 characters long"),
        ("evaluation.datasetUri", "s3://a..b/eval", "must not contain two adjacent periods"),
        ("evaluation.datasetUri", "s3://-okvqa/eval", "must begin and end with a letter or digit"),
        ("model.name", "s3://192.168.5.4/model", "must not be formatted as an IP address"),
        ("model.name", "s3://xn--okvqa/model", "uses a prefix or suffix S3 reserves"),
        ("outputUri", "s3://okvqa-s3alias/x", "uses a prefix or suffix S3 reserves"),
        ("outputUri", "gs://okvqa/x", "unsupported storage URI"),
    ],
)
def test_bucket_names_follow_the_s3_rules(field: str, uri: str, problem: str) -> None:
    """A bucket S3 refuses is refused with the spec, naming the field, not by botocore on every call."""
    doc = apply_overrides(MINIMAL, [f"{field}={uri}"])
    with pytest.raises(UserError) as err:
        parse_spec(doc)
    assert str(err.value).startswith(
        f"spec: {field}: bad S3 URI {uri!r}: " if uri.startswith("s3") else "spec: "
    )
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_valid_bucket_names_and_paths_pass() -> None:
    for uri in ("s3://okvqa/x", "s3://my.bucket-2/x/y", "s3://" + "a" * 63, "/data/runs", "file:///data/x"):
        assert parse_spec({**MINIMAL, "outputUri": uri}).output_uri == uri
