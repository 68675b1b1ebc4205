"""kwok: the fake Nodes of the test cluster and the Stages that play their pods.

kwok plays pods through Stages: every pod becomes Running and Ready; pods of Jobs and of PyTorchJob
replicas then succeed (exit code 0) after about two seconds, and such pods annotated
`okvqa.dev/kwok-fail: "true"` fail with exit code 1 instead. Such pods annotated
`okvqa.dev/kwok-hold: "true"` keep running until the annotation goes (a run holding its quota while a
test looks at the queue behind it). Only Nodes annotated
`kwok.x-k8s.io/node: fake` are kwok's; a real node beside them runs its pods for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FAIL_ANNOTATION = "okvqa.dev/kwok-fail"
HOLD_ANNOTATION = "okvqa.dev/kwok-hold"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
# kwok's own default Stages, copied from the kwok module that was built, so they match its version.
KWOK_STAGES = (
    "kwok-stages/node-initialize.yaml",
    "kwok-stages/node-heartbeat-with-lease.yaml",
    "kwok-stages/pod-ready.yaml",
    "kwok-stages/pod-delete.yaml",
)


@dataclass(frozen=True)
class FakeNode:
    """A Node that kwok plays: what the scheduler sees of a machine."""

    name: str
    capacity: dict[str, str]
    labels: dict[str, str]

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    **self.labels,
                },
            },
            "status": {"capacity": self.capacity, "allocatable": self.capacity},
        }


NODES = (
    FakeNode(
        "kwok-gpu-0",
        {"cpu": "32", "memory": "256Gi", "pods": "110", GPU_RESOURCE: "8"},
        {"okvqa.dev/pool": "gpu", "nvidia.com/gpu.present": "true"},
    ),
    FakeNode(
        "kwok-gpu-1",
        {"cpu": "32", "memory": "256Gi", "pods": "110", GPU_RESOURCE: "8"},
        {"okvqa.dev/pool": "gpu", "nvidia.com/gpu.present": "true"},
    ),
    FakeNode("kwok-cpu-0", {"cpu": "16", "memory": "64Gi", "pods": "110"}, {"okvqa.dev/pool": "cpu"}),
)

_POD_COMPLETE_TEMPLATE = """\
{{ $now := Now }}
{{ $root := . }}
containerStatuses:
{{ range $index, $item := .spec.containers }}
- image: {{ $item.image | Quote }}
  name: {{ $item.name | Quote }}
  ready: false
  restartCount: 0
  started: false
  state:
    terminated:
      exitCode: %(exit_code)d
      finishedAt: {{ $now | Quote }}
      reason: %(reason)s
      startedAt: {{ $now | Quote }}
{{ end }}
phase: %(phase)s
"""

_RUNNING = {"key": ".status.phase", "operator": "In", "values": ["Running"]}
_NOT_DELETED = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
_JOB_OWNED = {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]}
_NOT_JOB_OWNED = {"key": ".metadata.ownerReferences.[].kind", "operator": "NotIn", "values": ["Job"]}
_TRAINING_REPLICA = {"key": '.metadata.labels["training.kubeflow.org/job-name"]', "operator": "Exists"}
_MARKED_FAIL = {"key": f'.metadata.annotations["{FAIL_ANNOTATION}"]', "operator": "In", "values": ["true"]}
_NOT_MARKED_FAIL = {**_MARKED_FAIL, "operator": "NotIn"}
_NOT_HELD = {"key": f'.metadata.annotations["{HOLD_ANNOTATION}"]', "operator": "NotIn", "values": ["true"]}


def _finish_stage(name: str, expressions: list[dict[str, Any]], *, failed: bool) -> dict[str, Any]:
    """A Stage ending a running pod two seconds in, like a short training or evaluation run."""
    template = _POD_COMPLETE_TEMPLATE % (
        {"exit_code": 1, "reason": "Error", "phase": "Failed"}
        if failed
        else {"exit_code": 0, "reason": "Completed", "phase": "Succeeded"}
    )
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": [_NOT_DELETED, _RUNNING, _NOT_HELD, *expressions]},
            "delay": {"durationMilliseconds": 2000},
            "next": {"statusTemplate": template},
        },
    }


# The selectors are mutually exclusive, so kwok never has to pick between two matching stages.
POD_FINISH_STAGES = (
    _finish_stage("okvqa-job-pod-complete", [_JOB_OWNED, _NOT_MARKED_FAIL], failed=False),
    _finish_stage(
        "okvqa-training-pod-complete", [_TRAINING_REPLICA, _NOT_JOB_OWNED, _NOT_MARKED_FAIL], failed=False
    ),
    _finish_stage("okvqa-job-pod-fail", [_JOB_OWNED, _MARKED_FAIL], failed=True),
    _finish_stage("okvqa-training-pod-fail", [_TRAINING_REPLICA, _NOT_JOB_OWNED, _MARKED_FAIL], failed=True),
)


def write_config(binaries: Path, path: Path) -> Path:
    """kwok's configuration: its default Stages of the built release plus ours, one YAML stream."""
    documents = [(binaries / stage).read_text().strip() for stage in KWOK_STAGES]
    documents += [yaml.safe_dump(stage, sort_keys=False).strip() for stage in POD_FINISH_STAGES]
    path.write_text("\n---\n".join(documents) + "\n")
    return path
