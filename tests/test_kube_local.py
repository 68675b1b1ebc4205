"""The local executor's environment contract and path mapping (pure parts); the full run is `slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from okvqa_k8s.kube.backends.pod_env import container_env, localize, operator_env
from okvqa_k8s.kube.render import Owner, render_pytorchjob
from okvqa_k8s.spec import parse_spec

SPEC = {"dataset": {"uri": "/data/ds"}, "outputUri": "/data/out", "nodes": 3, "nprocPerNode": 2}


def test_operator_env_matches_training_operator_contract() -> None:
    job = render_pytorchjob(parse_spec(SPEC), Owner("run"))
    master = operator_env(job, "Master", 0, "run-master-0")
    assert master == {
        "PYTHONUNBUFFERED": "1",
        "MASTER_PORT": "23456",
        "PET_MASTER_PORT": "23456",
        "MASTER_ADDR": "run-master-0",
        "PET_MASTER_ADDR": "run-master-0",
        "WORLD_SIZE": "6",
        "RANK": "0",
        "PET_NODE_RANK": "0",
        "PET_NNODES": "3",
        "PET_NPROC_PER_NODE": "2",
    }
    worker1 = operator_env(job, "Worker", 1, "run-master-0")
    assert worker1["RANK"] == worker1["PET_NODE_RANK"] == "2"
    assert worker1["WORLD_SIZE"] == "6" and worker1["PET_NNODES"] == "3"


def test_container_env_resolves_secret_refs_from_host_only_when_set() -> None:
    container = {
        "env": [
            {"name": "A", "value": "1"},
            {
                "name": "AWS_ACCESS_KEY_ID",
                "valueFrom": {"secretKeyRef": {"name": "s", "key": "AWS_ACCESS_KEY_ID"}},
            },
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "x"}}},
        ]
    }
    env = container_env(container, {"AWS_ACCESS_KEY_ID": "AKIA-local"})
    assert env == {"A": "1", "AWS_ACCESS_KEY_ID": "AKIA-local"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/scratch", "/tmp/w/node-0"),
        ("/scratch/hf-home", "/tmp/w/node-0/hf-home"),
        ("/scratchy", "/scratchy"),
        ("/etc/okvqa/spec.yaml", "/tmp/w/config/spec.yaml"),
        ("http://run-serve.local.svc:8000", "http://127.0.0.1:4321"),
        ("train", "train"),
    ],
)
def test_localize(value: str, expected: str) -> None:
    mounts = {
        "/scratch": "/tmp/w/node-0",
        "/etc/okvqa": "/tmp/w/config",
        "http://run-serve.local.svc:8000": "http://127.0.0.1:4321",
    }
    assert localize(value, mounts) == expected


@pytest.mark.slow
def test_submit_local_runs_rendered_job_then_serves_and_evaluates(
    tmp_path: Path, prepared_dataset: Path, tiny_model: Path
) -> None:
    """The whole run on this machine: 2 "nodes" × 1 process of the rendered PyTorchJob, serve, evaluate."""
    from okvqa_k8s.kube.backends.local import run_local

    model = tiny_model
    doc = {
        "model": {"name": str(model), "dtype": "fp32", "attention": "eager"},
        "dataset": {"uri": str(prepared_dataset)},
        "outputUri": str(tmp_path / "out"),
        "nodes": 2,
        "nprocPerNode": 1,
        "gpusPerNode": 0,
        "training": {
            "maxSteps": 2,
            "perDeviceBatchSize": 2,
            "deepspeed": "zero2",
            "saveSteps": 1,
            "reportTo": "none",
            "dataloaderWorkers": 0,
            "maxLength": 256,
        },
        "inference": {"gpus": 0},
        # every category of the evaluation set `data prepare` wrote to <dataset>/eval (the default),
        # scored with the metric version the spec names rather than the default
        "evaluation": {"concurrency": 2, "metric": "vqaeval-2017"},
    }
    spec = parse_spec(doc)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    lines: list[str] = []
    status = run_local(spec, "tiny", tmp_path / "runs", echo=lines.append, poll_seconds=0.5)
    assert status["phase"] == "Succeeded", (status, lines)
    assert set(status["accuracy"]) == {"base", "finetuned"}
    assert all(0.0 <= v <= 100.0 for v in status["accuracy"].values())
    assert (tmp_path / "out" / "merged").is_dir() and (tmp_path / "out" / "eval" / "compare.json").is_file()
    # each replica ran with its own node scratch
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny" / "scratch").iterdir()) == ["node-0", "node-1"]

    # Trained on Other, scored on all eleven: the status and the report carry the untrained categories'
    # figure, the accuracy of their own questions alone (and the trained one of Other's alone), by the
    # metric of the spec, which the report, both results and the status message name.
    from okvqa_k8s.evaluate.score import load_predictions, load_questions, score_questions

    evalset = prepared_dataset / "eval"
    questions = load_questions(evalset / "val_questions.json", evalset / "val_annotations.json")
    assert len({q.category for q in questions}) == 11
    compare = json.loads((tmp_path / "out" / "eval" / "compare.json").read_text())
    assert compare["metric"] == compare["base"]["metric"] == compare["finetuned"]["metric"] == "vqaeval-2017"
    assert status["message"].startswith("VQA accuracy (vqaeval-2017): ")
    untrained = [q for q in questions if q.category != "other"]
    trained = [q for q in questions if q.category == "other"]
    for variant in ("base", "finetuned"):
        preds = load_predictions(tmp_path / "out" / "eval" / variant / "predictions.jsonl")
        assert set(preds) == {q.question_id for q in questions}
        alone = score_questions(
            {q.question_id: preds[q.question_id] for q in untrained}, untrained, metric="vqaeval-2017"
        )
        assert status["untrainedAccuracy"][variant] == alone["overall"]
        assert compare["groups"]["untrained"][variant] == alone["overall"]
        other = score_questions(
            {q.question_id: preds[q.question_id] for q in trained}, trained, metric="vqaeval-2017"
        )
        assert status["accuracy"][variant] == other["overall"]
    figure = status["untrainedAccuracy"]
    assert figure["questions"] == len(untrained) == compare["groups"]["untrained"]["count"]
    assert figure["delta"] == round(figure["finetuned"] - figure["base"], 2)
    assert compare["summary"]["untrained"].endswith(f" pp on {len(untrained)} questions")
    assert compare["summary"]["untrained"] in status["message"]


def test_local_processes_keep_the_hosts_home_and_caches(tmp_path: Path) -> None:
    """A pod points HOME and its caches at /tmp because its root filesystem is read-only; a local
    replica of the same container keeps this machine's HOME and caches, and the container's own env."""
    import os
    import sys

    from okvqa_k8s.kube.backends.local import LocalCluster

    job = render_pytorchjob(parse_spec(SPEC), Owner("run"))
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    probe = (
        "import os; print(os.environ['HOME'], os.environ.get('TRITON_CACHE_DIR'), os.environ['OKVQA_RUN'])"
    )
    container = {**container, "command": [sys.executable, "-c", probe]}
    host = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "me")}
    local = LocalCluster(root=tmp_path / "run", host_env=host)
    proc = local._spawn("x", "probe", container, container_env(container, host), {})
    assert proc.proc.wait(60) == 0
    assert proc.log.read_text().split() == [str(tmp_path / "me"), "None", "run"]
