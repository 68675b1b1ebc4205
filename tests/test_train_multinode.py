"""Two 'nodes' x 1 process on 127.0.0.1, each started exactly as the PyTorchJob starts a pod.

Every node runs `torchrun --no-python okvqa-k8s train --spec ...` with the environment the Kubeflow
training operator injects, its own scratch directory (node-local disk) and S3 (moto) for the dataset,
the base model, checkpoints and outputs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.s3server import S3Bucket
from tests.test_train_single import tiny_spec

pytestmark = pytest.mark.slow
NODES = 2
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def operator_env(node: int, port: int) -> dict[str, str]:
    """What the training operator sets on replica `node` (Master 0, Worker i -> i+1), nprocPerNode 1."""
    return {
        "PET_NNODES": str(NODES),
        "PET_NODE_RANK": str(node),
        "PET_NPROC_PER_NODE": "1",
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": str(port),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(NODES),
        "RANK": str(node),
        "PYTHONUNBUFFERED": "0",
    }


class Job:
    """The two node processes of one attempt; logs go to files so a failure shows what each node said."""

    def __init__(self, root: Path, spec_file: Path, s3_env: dict[str, str], attempt: str) -> None:
        port = _free_port()
        self.logs = [root / f"{attempt}-node-{n}.log" for n in range(NODES)]
        self.scratch = [root / f"{attempt}-scratch-{n}" for n in range(NODES)]
        self.procs = []
        for node in range(NODES):
            env = {
                **{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
                **s3_env,
                **operator_env(node, port),
                "PATH": f"{os.environ.get('PATH', '')}{os.pathsep}{BIN}",
                "OKVQA_SCRATCH": str(self.scratch[node]),
                "OKVQA_PROGRESS": "0",
                "DS_ACCELERATOR": "cpu",
                "OMP_NUM_THREADS": "1",
            }
            cmd = ["torchrun", "--no-python", "okvqa-k8s", "train", "--spec", str(spec_file)]
            with self.logs[node].open("w") as log:
                self.procs.append(
                    subprocess.Popen(
                        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )

    def wait(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"training did not finish in {timeout}s:\n{self.tails()}")
        return codes

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-25:]) for p in self.logs)

    def samples(self, node: int) -> list[dict]:
        lines = []
        for path in self.scratch[node].glob("okvqa-*/samples-rank-*.jsonl"):
            lines += [json.loads(line) for line in path.read_text().splitlines()]
        return lines


@pytest.fixture
def s3_run(
    s3_bucket: S3Bucket,
    prepared_dataset: Path,
    tiny_model: Path,
    tmp_path: Path,
) -> Iterator[tuple[S3Bucket, str, str]]:
    """Dataset staged and base model uploaded to the bucket, as a cluster run has them."""
    from okvqa_k8s.storage import stage_dataset, sync_up

    dataset_uri = s3_bucket.uri("datasets/synth")
    model_uri = s3_bucket.uri("models/tiny")
    stage_dataset(prepared_dataset, dataset_uri, shard_size=1 << 20, workers=4, verify=True)
    sync_up(tiny_model, model_uri)
    yield s3_bucket, dataset_uri, model_uri


def _write_spec(path: Path, model_uri: str, dataset_uri: str, output_uri: str, **training: object) -> Path:
    doc = tiny_spec(Path("unused"), dataset_uri, output_uri, **training)
    doc["model"]["name"] = model_uri
    doc["nodes"] = NODES
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_two_nodes_train_on_disjoint_shards_with_checkpoints_in_s3(
    s3_run: tuple[S3Bucket, str, str], tmp_path: Path, stage: str
) -> None:
    from okvqa_k8s.storage import exists, list_complete_checkpoints, list_objects, read_json

    bucket, dataset_uri, model_uri = s3_run
    out = bucket.uri(f"runs/{stage}")
    spec = _write_spec(
        tmp_path / "spec.yaml", model_uri, dataset_uri, out,
        deepspeed=stage, perDeviceBatchSize=2, maxSteps=6, saveSteps=3, saveTotalLimit=2,
    )  # fmt: skip
    job = Job(tmp_path, spec, bucket.env, "a")
    assert job.wait(timeout=540) == [0, 0], job.tails()

    assert exists(f"{out}/_COMPLETE")
    metrics = read_json(f"{out}/metrics.json")
    assert (metrics["world_size"], metrics["nnodes"], metrics["zero_stage"]) == (2, 2, int(stage[-1]))
    assert [r["step"] for r in metrics["log_history"]] == list(range(1, 7))
    markers = ("_COMPLETE.node-0", "_COMPLETE.node-1")
    assert list_complete_checkpoints(f"{out}/checkpoints", markers) == ["checkpoint-3", "checkpoint-6"]
    in_s3 = set(list_objects(f"{out}/checkpoints/checkpoint-6"))
    for rank in range(NODES):
        assert any(k.startswith(f"zero_pp_rank_{rank}_") for k in in_s3), in_s3
    # Node-local disks: each node wrote (and keeps) only its own rank's ZeRO shards.
    for node in range(NODES):
        local = [p.name for p in job.scratch[node].glob("okvqa-*/checkpoints/checkpoint-6/zero_pp_rank_*")]
        assert local and all(name.startswith(f"zero_pp_rank_{node}_") for name in local), local
    assert exists(f"{out}/merged/model.safetensors") and exists(f"{out}/adapter/adapter_model.safetensors")

    # Ranks saw disjoint data: per step, and over the whole (single-epoch) run.
    seen = [job.samples(node) for node in range(NODES)]
    assert [s["step"] for s in seen[0]] == [s["step"] for s in seen[1]] == list(range(1, 7))
    ids0 = [i for s in seen[0] for i in s["ids"]]
    ids1 = [i for s in seen[1] for i in s["ids"]]
    assert len(ids0) == len(ids1) == 12
    assert not set(ids0) & set(ids1), "ranks trained on the same samples"
    assert len(set(ids0)) == 12 and len(set(ids1)) == 12


def test_killed_rank_resumes_from_the_last_complete_checkpoint(
    s3_run: tuple[S3Bucket, str, str], tmp_path: Path
) -> None:
    import psutil

    from okvqa_k8s.storage import exists, list_complete_checkpoints, read_json

    bucket, dataset_uri, model_uri = s3_run
    out = bucket.uri("runs/resume")
    total = 40
    spec = _write_spec(
        tmp_path / "spec.yaml", model_uri, dataset_uri, out,
        deepspeed="zero2", perDeviceBatchSize=2, maxSteps=total, saveSteps=4, saveTotalLimit=3,
    )  # fmt: skip
    markers = ("_COMPLETE.node-0", "_COMPLETE.node-1")
    first = Job(tmp_path, spec, bucket.env, "first")
    deadline = time.monotonic() + 400
    while not list_complete_checkpoints(f"{out}/checkpoints", markers):
        if time.monotonic() > deadline or any(p.poll() is not None for p in first.procs):
            first.kill()
            pytest.fail(f"no checkpoint before the deadline:\n{first.tails()}")
        time.sleep(0.2)
    workers = psutil.Process(first.procs[1].pid).children(recursive=True)
    assert workers, "torchrun of node 1 has no worker process"
    for worker in workers:
        worker.kill()  # SIGKILL, like an OOM kill or a node failure
    codes = first.wait(timeout=180)
    assert codes[1] != 0, first.tails()
    assert not exists(f"{out}/_COMPLETE"), "training finished before the kill; make it longer"
    resume_from = list_complete_checkpoints(f"{out}/checkpoints", markers)[-1]
    resume_step = int(resume_from.split("-")[1])

    # The operator restarts the pods; new pods get fresh node-local disks.
    second = Job(tmp_path, spec, bucket.env, "second")
    assert second.wait(timeout=540) == [0, 0], second.tails()
    metrics = read_json(f"{out}/metrics.json")
    assert metrics["resumed_from"] == resume_from and metrics["global_step"] == total
    assert [r["step"] for r in metrics["log_history"]] == list(range(1, total + 1)), "loss curve broken"
    for node in range(NODES):
        again = second.samples(node)
        assert again[0]["step"] == resume_step + 1, "steps before the checkpoint were trained again"
        assert [s["step"] for s in again] == list(range(resume_step + 1, total + 1))
        # The resumed run continues the very same sample stream the first attempt was on.
        replayed = {s["step"]: s["ids"] for s in again}
        lost = [s for s in first.samples(node) if s["step"] > resume_step]
        assert all(replayed[s["step"]] == s["ids"] for s in lost)
