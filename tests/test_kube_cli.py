"""The kube CLI commands that need no cluster: render, submit --dry-run, crd, argument errors."""

from __future__ import annotations

import time
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from okvqa_k8s.errors import UserError
from okvqa_k8s.kube.cli import COMMANDS, format_table, status_rows, status_text

SPEC = {"dataset": {"uri": "s3://bkt/ds"}, "outputUri": "s3://bkt/runs/x", "nodes": 2}


def run(args: list[str], **kwargs: object):
    group = click.Group(commands={c.name: c for c in COMMANDS})
    return CliRunner().invoke(group, args, catch_exceptions=False, **kwargs)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "My_Run.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def test_every_command_has_help() -> None:
    for command in COMMANDS:
        assert run([command.name, "--help"]).exit_code == 0


def test_render_prints_every_child_without_owner(spec_file: Path) -> None:
    out = run(["render", str(spec_file), "-n", "ml", "--set", "training.maxSteps=5"])
    docs = list(yaml.safe_load_all(out.output))
    assert [d["kind"] for d in docs] == ["ConfigMap", "PyTorchJob", "NetworkPolicy", "Deployment", "Service",
                                         "Deployment", "Service", "Job"]  # fmt: skip
    assert docs[1]["metadata"]["name"] == "my-run"  # the file name, made DNS-safe
    assert "maxSteps: 5" in docs[0]["data"]["spec.yaml"]
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)
    finetune = yaml.safe_load(run(["render", str(spec_file), "--finetune", "--name", "abc"]).output)
    assert finetune["kind"] == "FineTune" and finetune["metadata"]["name"] == "abc"


def test_submit_dry_run_prints_finetune_and_children(spec_file: Path) -> None:
    out = run(["submit", str(spec_file), "--dry-run", "--name", "dry", "-n", "ns"])
    docs = [d for d in yaml.safe_load_all(out.output) if d]
    assert docs[0]["kind"] == "FineTune" and docs[0]["spec"]["nodes"] == 2
    assert {d["kind"] for d in docs[1:]} == {
        "ConfigMap",
        "PyTorchJob",
        "NetworkPolicy",
        "Deployment",
        "Service",
        "Job",
    }


def test_bad_spec_reports_every_field_before_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "nodes": 0, "lora": {"r": -1}, "noodes": 1}))
    with pytest.raises(UserError) as info:
        run(["submit", str(bad), "--dry-run"])
    message = str(info.value)
    assert "nodes" in message and "lora.r" in message and "noodes" in message
    assert len(message.splitlines()) == 3


@pytest.mark.parametrize("name", ["Bad_Name", "-x", "a" * 41, "9lives"])
def test_bad_run_names_are_refused(spec_file: Path, name: str) -> None:
    with pytest.raises(UserError, match="DNS-1035"):
        run(["submit", str(spec_file), "--dry-run", "--name", name])


def test_local_paths_cannot_go_to_a_cluster(tmp_path: Path) -> None:
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump({"dataset": {"uri": str(tmp_path)}, "outputUri": str(tmp_path / "o")}))
    with pytest.raises(UserError, match="--local"):
        run(["submit", str(local)])


def test_crd_command_prints_and_checks() -> None:
    out = run(["crd"])
    assert yaml.safe_load(out.output.split("\n", 2)[2])["kind"] == "CustomResourceDefinition"
    assert run(["crd", "--check"]).output.strip() == "CRD is up to date"


def test_logs_replica_is_validated() -> None:
    with pytest.raises(UserError, match="master or worker-N"):
        run(["logs", "x", "--replica", "chief"])


def test_status_table() -> None:
    items = [
        {"metadata": {"name": "a"}, "spec": {"nodes": 2},
         "status": {"phase": "Succeeded", "progress": "10/10", "accuracy": {"base": 30.0, "finetuned": 61.5},
                    "endpoint": "http://a-serve.ns.svc:8000"}},
        {"metadata": {"name": "bb"}, "spec": {"nodes": 1}},
        {"metadata": {"name": "c"}, "spec": {"nodes": 1},
         "status": {"accuracy": {"base": 0.0, "finetuned": 65.7},
                    "untrainedAccuracy": {"base": 4.33, "finetuned": 3.1, "delta": -1.23, "questions": 337}}},
    ]  # fmt: skip
    lines = format_table(status_rows(items)).splitlines()
    assert lines[0].split() == [
        "NAME",
        "PHASE",
        "NODES",
        "PROGRESS",
        "ACCURACY",
        "UNTRAINED",
        "ENDPOINT",
        "AGE",
    ]
    assert "30.00% → 61.50%" in lines[1] and "10/10" in lines[1]
    assert lines[2].split() == ["bb", "1"]
    assert "0.00% → 65.70%" in lines[3] and lines[3].endswith("\u22121.2 pp / 337 q")


def _queued_run(status: dict) -> dict:
    """A 2-node FineTune submitted to the LocalQueue team-a, with `status`."""
    return {"metadata": {"name": "q"}, "spec": {"nodes": 2, "queue": "team-a"}, "status": status}


def test_status_explains_a_queued_run() -> None:
    """`status NAME` of a run waiting for Kueue: the phase with its wait, Kueue's message, the queue."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 150))
    message = "waiting in LocalQueue team-a: couldn't assign flavors to pod set master: insufficient quota"
    item = _queued_run(
        {
            "phase": "Queued",
            "reason": "Queued",
            "message": message,
            "queue": {"name": "team-a", "since": since, "reason": "Pending", "waitedSeconds": 40},
            "conditions": [{"type": "Admitted", "status": "False", "reason": "Queued", "message": message}],
        }
    )
    out = status_text(item)
    assert out.splitlines()[1].split()[:3] == ["q", "Queued", "(2m)"]
    assert f"message: {message}" in out
    where = f"queue: LocalQueue team-a, waiting 2m (since {since}), Kueue reason Pending"
    assert f"{where}; waited 40 s before" in out
    assert "Admitted=False (Queued)" in out


@pytest.mark.parametrize(
    ("admitted", "line"), [("False", "left without being admitted"), ("True", "admitted")]
)
def test_status_of_a_run_that_left_the_queue(admitted: str, line: str) -> None:
    """A run that failed in the queue was never admitted; one that failed later was."""
    item = _queued_run(
        {
            "phase": "Failed",
            "reason": "Inadmissible",
            "queue": {"name": "team-a", "waitedSeconds": 600},
            "conditions": [{"type": "Admitted", "status": admitted, "reason": "Admitted"}],
        }
    )
    assert f"queue: LocalQueue team-a, {line} after waiting 600 s" in status_text(item)


@pytest.fixture(scope="module")
def small_dataset(synth_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 'Other' dataset whose evaluation set holds only Other and Plants and Animals."""
    from okvqa_k8s.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("cli-data") / "ds"
    prepare_dataset(synth_raw, out, eval_categories=["other", "eight"])
    return out


def _submit_fails(tmp_path: Path, doc: dict, *args: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError) as info:
        run(["submit", str(path), *args, "--workdir", str(tmp_path / "work")])
    assert not (tmp_path / "work").exists(), "refused before anything ran"
    return str(info.value)


def test_submit_refuses_categories_the_evaluation_set_lacks(small_dataset: Path, tmp_path: Path) -> None:
    local = {"dataset": {"uri": str(small_dataset)}, "outputUri": str(tmp_path / "out")}
    message = _submit_fails(tmp_path, local, "--local")  # evaluation.categories: all (the default)
    assert message.startswith("evaluation.categories: no questions for 'Vehicles and Transportation', ")
    assert f"in the evaluation set {small_dataset / 'eval'} (split val: Plants and Animals " in message
    assert len(message.splitlines()) == 1 and "'Plants and Animals'" not in message
    # the same before staging for a cluster: nothing is uploaded, no FineTune is created
    to_s3 = {**local, "outputUri": "s3://bkt/runs/x"}
    assert _submit_fails(tmp_path, to_s3).startswith("evaluation.categories: no questions for ")
    # the categories it has are fine as far as the check goes (then --local needs no cluster: not run)
    from okvqa_k8s.kube.cli import check_evaluation_set
    from okvqa_k8s.spec import parse_spec

    check_evaluation_set(parse_spec({**local, "evaluation": {"categories": ["other", "Plants and Animals"]}}))


def test_submit_refuses_a_missing_evaluation_set_and_mislabelled_categories(
    small_dataset: Path, tmp_path: Path
) -> None:
    local = {"dataset": {"uri": str(small_dataset)}, "outputUri": str(tmp_path / "out")}
    message = _submit_fails(
        tmp_path, {**local, "evaluation": {"datasetUri": str(tmp_path / "none")}}, "--local"
    )
    assert message.startswith(f"evaluation.datasetUri: no evaluation set at {tmp_path / 'none'} ")
    mislabelled = {
        "dataset": {"uri": str(small_dataset), "categories": ["other", "ten"]},
        "outputUri": str(tmp_path / "o"),
        "evaluation": {"categories": ["other"]},
    }
    message = _submit_fails(tmp_path, mislabelled, "--local")
    assert message.startswith("dataset.categories: Weather and Climate, Other, but ")
    assert "was prepared with Other;" in message
    # no evaluation: no evaluation set needed
    from okvqa_k8s.kube.cli import check_evaluation_set
    from okvqa_k8s.spec import parse_spec

    off = {**local, "evaluation": {"enabled": False, "datasetUri": str(tmp_path / "none")}}
    check_evaluation_set(parse_spec(off))
