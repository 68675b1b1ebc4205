"""Where this process sits in the job: the PyTorchJob + torchrun environment contract, read once.

The Kubeflow operator injects PET_* (torchrun's own arguments), MASTER_*, WORLD_SIZE and RANK (= node
rank!) into each pod; torchrun then starts the processes with RANK/LOCAL_RANK/WORLD_SIZE/GROUP_RANK per
process. One code path serves 1 process, N processes on one node and N nodes: without torchrun the run
is a world of one, and a multi-node environment without torchrun is refused rather than trained wrongly
(every pod would otherwise train alone on the full dataset).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

from okvqa_k8s.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    node_rank: int = 0
    launched: bool = False  # by torchrun (else a single process we initialise ourselves)

    @property
    def nnodes(self) -> int:
        return self.world_size // self.local_world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def node_global_ranks(self) -> range:
        """Global ranks of this node's processes (torchrun assigns them node by node)."""
        start = self.node_rank * self.local_world_size
        return range(start, start + self.local_world_size)


def _count(value: str | None, default: int = 1) -> int:
    """PET_NNODES may be an elastic range `min:max`; the upper bound is the job size."""
    if not value:
        return default
    try:
        return int(value.rsplit(":", 1)[-1])
    except ValueError:
        raise UserError(f"cannot read process count {value!r} from the environment") from None


def dist_env(environ: Mapping[str, str]) -> DistEnv:
    if "LOCAL_RANK" in environ and "RANK" in environ and "WORLD_SIZE" in environ:
        world = int(environ["WORLD_SIZE"])
        local_world = int(environ.get("LOCAL_WORLD_SIZE", "1"))
        rank = int(environ["RANK"])
        node = environ.get("GROUP_RANK") or environ.get("PET_NODE_RANK") or str(rank // local_world)
        if world % local_world:
            raise UserError(f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local_world}")
        return DistEnv(rank, int(environ["LOCAL_RANK"]), world, local_world, int(node), launched=True)
    nodes = _count(environ.get("PET_NNODES"))
    world = _count(environ.get("WORLD_SIZE"))
    if nodes > 1 or world > 1:
        raise UserError(
            f"this is a {max(nodes, world)}-process job (PET_NNODES/WORLD_SIZE) but the process was not "
            "started by torchrun: run `torchrun --no-python okvqa-k8s train --spec ...`"
        )
    return DistEnv()


def single_process_rendezvous(environ: dict[str, str]) -> None:
    """Give a lone process the variables torch.distributed needs, on a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_WORLD_SIZE": "1",
        }
    )


def scratch_dir(environ: Mapping[str, str]) -> str:
    return environ.get("OKVQA_SCRATCH") or "/okvqa/scratch"
