"""What a container of a rendered pod sees, reproduced outside a cluster.

The local backend starts each replica with exactly these variables; the cluster test compares them with
the pods the real Kubeflow training operator creates, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def operator_env(job: Mapping[str, Any], replica_type: str, index: int, master_addr: str) -> dict[str, str]:
    """The variables the Kubeflow training operator (v1) injects into replica `replica_type`[index].

    Mirrors its setPodEnv: WORLD_SIZE = replicas × nprocPerNode, RANK = PET_NODE_RANK = node rank
    (Master 0, Worker i → i+1), PET_NNODES = replicas, MASTER_*/PET_MASTER_* from the Master's
    `pytorchjob-port`, and PYTHONUNBUFFERED=1 (checked against the real operator in test_kube_cluster).
    """
    spec = job["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    total = sum(int(r.get("replicas", 1)) for r in replicas.values())
    nproc = spec.get("nprocPerNode")
    per_node = int(nproc) if nproc and str(nproc).isdigit() else 1
    rank = index + 1 if replica_type == "Worker" else index
    port = next(
        p["containerPort"]
        for c in replicas["Master"]["template"]["spec"]["containers"]
        if c["name"] == "pytorch"
        for p in c.get("ports", [])
        if p.get("name") == "pytorchjob-port"
    )
    env = {
        "PYTHONUNBUFFERED": "1",
        "MASTER_PORT": str(port),
        "PET_MASTER_PORT": str(port),
        "MASTER_ADDR": master_addr,
        "PET_MASTER_ADDR": master_addr,
        "WORLD_SIZE": str(total * per_node),
        "RANK": str(rank),
        "PET_NODE_RANK": str(rank),
        "PET_NNODES": str(total),
    }
    if nproc:
        env["PET_NPROC_PER_NODE"] = str(nproc)
    return env


def container_env(container: Mapping[str, Any], host_env: Mapping[str, str]) -> dict[str, str]:
    """A container's own env; Secret/field references resolve from the host environment when set there."""
    out: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            out[item["name"]] = str(item["value"])
        elif item["name"] in host_env:
            out[item["name"]] = host_env[item["name"]]
    return out


def localize(value: str, mounts: Mapping[str, str]) -> str:
    """Map a pod path (`/scratch/x`) or URL prefix to its local counterpart; other text is unchanged."""
    for prefix, local in mounts.items():
        if value == prefix or value.startswith(prefix.rstrip("/") + "/"):
            return local + value[len(prefix) :]
        if "://" in prefix and prefix in value:
            return value.replace(prefix, local)
    return value
