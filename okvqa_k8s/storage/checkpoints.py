"""Completion markers and resume selection for checkpoints kept in a store.

A checkpoint counts only when every expected marker exists (one per node in multi-node training, each
written after that node's files), so a run never resumes from a half-uploaded checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from okvqa_k8s.storage.objects import write_json
from okvqa_k8s.storage.registry import store_for
from okvqa_k8s.storage.uri import join

_STEP = re.compile(r"(\d+)$")


def complete_checkpoints(keys: Iterable[str], markers: Sequence[str]) -> list[str]:
    """Child directories holding all `markers` directly, oldest first by their integer suffix.

    Children without an integer suffix (e.g. `final`) are not checkpoints and are left out.
    """
    if not markers:
        raise ValueError("at least one marker name is required")
    children: dict[str, set[str]] = {}
    for key in keys:
        child, sep, rest = key.partition("/")
        if sep and _STEP.search(child):
            children.setdefault(child, set()).add(rest)
    complete = [child for child, names in children.items() if all(m in names for m in markers)]
    return sorted(complete, key=lambda child: (int(_STEP.search(child).group(1)), child))  # type: ignore[union-attr]


def mark_complete(uri: str, name: str = "_COMPLETE", payload: dict[str, Any] | None = None) -> None:
    """Write the marker object; call it after everything else under `uri` is uploaded."""
    write_json(join(uri, name), payload if payload is not None else {})


def list_complete_checkpoints(prefix_uri: str, markers: Sequence[str] = ("_COMPLETE",)) -> list[str]:
    """Names (e.g. `checkpoint-20`) under `prefix_uri`; `join(prefix_uri, name)` is the checkpoint URI."""
    return complete_checkpoints(store_for(prefix_uri).list(prefix_uri), markers)


def latest_complete_checkpoint(prefix_uri: str, markers: Sequence[str] = ("_COMPLETE",)) -> str | None:
    """The newest complete checkpoint's name, or None when there is none to resume from."""
    complete = list_complete_checkpoints(prefix_uri, markers)
    return complete[-1] if complete else None
