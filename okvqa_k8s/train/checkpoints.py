"""Checkpoints through storage when every node has its own local disk.

DeepSpeed writes, per checkpoint tag, one `zero_pp_rank_<r>_*` file per rank (its ZeRO shard) plus, under
ZeRO-1/2, `mp_rank_00_model_states.pt` from global rank 0. With node-local scratch each node therefore
holds only its own ranks' shards, so each node uploads what it has into the same checkpoint prefix and then
writes its own marker (`layout.node_marker`); a checkpoint counts only when every node's marker is there.
On restart each node downloads the shared files and its own ranks' shards, nothing else.

DeepSpeed loads these files with `torch.load(weights_only=False)`, i.e. unpickles them: each node's
marker records the sha256 of every file it uploaded, and a downloaded file is loaded only if it matches
(anything else in the bucket, or a byte changed there, is refused). A tag saved again (training resumed
from an earlier one) has its old markers deleted first, so it cannot look complete while uploading.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from okvqa_k8s.errors import UserError
from okvqa_k8s.fsutil import sha256_file
from okvqa_k8s.layout import is_marker, node_marker, node_markers
from okvqa_k8s.progress import bar

TRAINER_STATE = "trainer_state.json"
_RANK_FILE = re.compile(r"^zero_pp_rank_(\d+)_")
_STEP = re.compile(r"^checkpoint-(\d+)$")


def tag_for(step: int) -> str:
    return f"checkpoint-{step}"


def step_of(tag: str) -> int:
    match = _STEP.match(tag)
    if not match:
        raise ValueError(f"not a checkpoint tag: {tag!r}")
    return int(match.group(1))


def files_for_node(names: Iterable[str], ranks: range) -> list[str]:
    """The checkpoint files one node needs: shared files plus the shards of its own ranks, no markers."""
    keep = []
    for name in names:
        if is_marker(name) or name.startswith(".okvqa"):
            continue
        match = _RANK_FILE.match(Path(name).name)
        if match and int(match.group(1)) not in ranks:
            continue
        keep.append(name)
    return sorted(keep)


def checkpoints_to_prune(tags: Iterable[str], keep: int) -> list[str]:
    """All but the newest `keep` checkpoint tags (by step)."""
    ordered = sorted((t for t in tags if _STEP.match(t)), key=step_of)
    return ordered[:-keep] if keep > 0 else ordered


def clear_markers(uri: str, nodes: int) -> None:
    """Delete every node's marker of a checkpoint about to be saved again: run once (global rank 0)
    before any node uploads, so no stale marker makes the tag look complete halfway through."""
    from okvqa_k8s.storage import join, store_for

    store = store_for(uri)
    for marker in node_markers(nodes):
        store.delete(join(uri, marker))


def upload_node_checkpoint(local_dir: Path, uri: str, node_rank: int) -> int:
    """Upload this node's files of one checkpoint, then its marker with their sha256 digests (so the
    marker implies the files, and vouches for their bytes)."""
    from okvqa_k8s.storage import mark_complete, sync_up_hashed

    sent, digests = sync_up_hashed(local_dir, uri)
    mark_complete(uri, name=node_marker(node_rank), payload={"node": node_rank, "sha256": digests})
    return sent


def recorded_digests(markers: Iterable[Any]) -> dict[str, set[str]]:
    """File → the sha256 digests the nodes' markers record for it (a file two nodes both hold may
    appear in two markers)."""
    out: dict[str, set[str]] = {}
    for payload in markers:
        digests = payload.get("sha256") if isinstance(payload, dict) else None
        for name, digest in (digests if isinstance(digests, dict) else {}).items():
            out.setdefault(str(name), set()).add(str(digest))
    return out


def download_node_checkpoint(uri: str, local_dir: Path, ranks: range) -> list[str]:
    """Fetch what this node's ranks need of a checkpoint into `local_dir` (existing files are replaced),
    each file verified against the digest its uploader recorded; on any doubt nothing is left to load."""
    from okvqa_k8s.storage import download_file, join, list_objects, read_json

    listing = list_objects(uri)
    recorded = recorded_digests(read_json(join(uri, name)) for name in sorted(listing) if is_marker(name))
    names = files_for_node(listing, ranks)
    local_dir.mkdir(parents=True, exist_ok=True)
    for name in bar(names, desc=f"resume {local_dir.name}", unit="file"):
        download_file(join(uri, name), local_dir / name)
        if name not in recorded or sha256_file(local_dir / name) not in recorded[name]:
            shutil.rmtree(local_dir, ignore_errors=True)
            why = (
                "its sha256 differs from the one recorded when it was uploaded"
                if name in recorded
                else "no node marker records its sha256"
            )
            raise UserError(f"checkpoint file {join(uri, name)}: {why}; refusing to load the checkpoint")
    return names


def prune_local(root: Path, keep: int) -> None:
    if not root.is_dir():
        return
    for tag in checkpoints_to_prune((p.name for p in root.iterdir() if p.is_dir()), keep):
        shutil.rmtree(root / tag, ignore_errors=True)


def prune_remote(prefix_uri: str, complete: list[str], keep: int) -> None:
    """Delete old *complete* checkpoints only: an incomplete newer one must never be all that is left."""
    from okvqa_k8s.storage import delete_prefix, join

    for tag in checkpoints_to_prune(complete, keep):
        delete_prefix(join(prefix_uri, tag))
