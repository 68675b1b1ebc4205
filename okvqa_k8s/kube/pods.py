"""Pods that can never start, read from their container statuses (pure: `now` is passed in).

Without this a run whose image cannot be pulled waits in Pending or Serving for ever: the PyTorchJob and
the Deployment report nothing wrong while kubelet keeps retrying the pull. Some waiting reasons are final
as things stand (`imagePullPolicy: Never` with no image on the node, a malformed name); the others may be
a registry hiccup, so they fail the run only once they have lasted `IMAGE_PULL_GRACE_SECONDS` since the
pod was created.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

# Kubelet will not get the image however long it tries.
IMAGE_NEVER_PULLS = frozenset({"ErrImageNeverPull", "InvalidImageName"})
# Kubelet retries these with back-off: fail only once they have lasted the grace period.
IMAGE_PULL_RETRIES = frozenset({"ErrImagePull", "ImagePullBackOff"})
IMAGE_PULL_GRACE_SECONDS = 120.0
TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"


def image_pull_failure(pods: Iterable[Mapping[str, Any]], now: str) -> str | None:
    """Why the first pod (by name) with a container that cannot get its image never starts, or None."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        for container in statuses:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in IMAGE_NEVER_PULLS or (
                reason in IMAGE_PULL_RETRIES and _age(pod, now) >= IMAGE_PULL_GRACE_SECONDS
            ):
                meta = pod["metadata"]
                image = container.get("image") or _spec_image(pod, container["name"])
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                return (
                    f"pod {meta.get('namespace', '')}/{meta['name']} container {container['name']}: "
                    f"image {image!r} cannot be pulled ({reason}{detail})"
                )
    return None


def _age(pod: Mapping[str, Any], now: str) -> float:
    """Seconds since the pod was created; 0 when either time is unreadable (never fail on a guess)."""
    try:
        created = dt.datetime.strptime(pod["metadata"]["creationTimestamp"], TIMESTAMP)
        return (dt.datetime.strptime(now, TIMESTAMP) - created).total_seconds()
    except (KeyError, TypeError, ValueError):
        return 0.0


def _spec_image(pod: Mapping[str, Any], container: str) -> str:
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == container:
            return str(c.get("image", ""))
    return ""
