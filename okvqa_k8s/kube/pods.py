"""Pods that can never start, read from their container statuses (pure: `now` is passed in).

Without this a run whose image cannot be pulled waits in Pending or Serving for ever: the PyTorchJob and
the Deployment report nothing wrong while kubelet keeps retrying the pull. Some waiting reasons are final
as things stand (`imagePullPolicy: Never` with no image on the node, a malformed name); the others may be
a registry hiccup, so they fail the run only once they have lasted `GRACE_SECONDS` since the
pod was created. A container kubelet cannot configure (a Secret or key missing) is treated the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

# Kubelet will not get the image however long it tries.
IMAGE_NEVER_PULLS = frozenset({"ErrImageNeverPull", "InvalidImageName"})
# Kubelet retries these with back-off (and CreateContainerConfigError): fail once they last this long.
IMAGE_PULL_RETRIES = frozenset({"ErrImagePull", "ImagePullBackOff"})
GRACE_SECONDS = 120.0
TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"
# Set by the Job controller on the pods of a batch/v1 Job (Kubernetes ≥ 1.27).
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def image_pull_failure(pods: Iterable[Mapping[str, Any]], now: str) -> str | None:
    """Why the first pod (by name) with a container that cannot get its image never starts, or None."""
    for pod, container, waiting in _waiting(pods):
        reason = waiting.get("reason", "")
        if reason in IMAGE_NEVER_PULLS or (reason in IMAGE_PULL_RETRIES and age(pod, now) >= GRACE_SECONDS):
            meta = pod["metadata"]
            image = container.get("image") or _spec_image(pod, container["name"])
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            return (
                f"pod {meta.get('namespace', '')}/{meta['name']} container {container['name']}: "
                f"image {image!r} cannot be pulled ({reason}{detail})"
            )
    return None


def container_config_failure(pods: Iterable[Mapping[str, Any]], now: str) -> tuple[bool, str] | None:
    """(about a Secret?, why) for the first pod whose container kubelet cannot configure (a Secret or
    key, a ConfigMap gone) once that has lasted the grace period, or None.

    The Secrets are checked before anything is created (decide), but one deleted later, or a key
    removed, leaves the pods in CreateContainerConfigError; kubelet retries for ever and neither the
    PyTorchJob, the Deployment nor the Job reports it.
    """
    for pod, container, waiting in _waiting(pods):
        if waiting.get("reason") == "CreateContainerConfigError" and age(pod, now) >= GRACE_SECONDS:
            message = str(waiting.get("message", ""))
            meta = pod["metadata"]
            return "secret" in message.lower(), (
                f"pod {meta.get('namespace', '')}/{meta['name']} container {container['name']}: {message}"
            )
    return None


def waiting_summary(pods: Iterable[Mapping[str, Any]]) -> str:
    """Why the run's pods are not running, one clause per pod (unscheduled, or a container waiting)."""
    parts = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        unscheduled = next(
            (
                c
                for c in status.get("conditions") or []
                if c.get("type") == "PodScheduled" and c.get("status") == "False"
            ),
            None,
        )
        if unscheduled:
            parts.append(
                f"{name}: {unscheduled.get('reason', 'Unschedulable')}: {unscheduled.get('message', '')}"
            )
            continue
        waiting = [f"{c['name']} {w.get('reason', 'waiting')}" for _, c, w in _waiting([pod])]
        if waiting:
            parts.append(f"{name}: {', '.join(waiting)}")
    return "; ".join(parts) or "no pod was created"


def _waiting(
    pods: Iterable[Mapping[str, Any]],
) -> list[tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]]:
    """(pod, container status, its `waiting` state) for every waiting container, pods by name."""
    out = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        for container in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (container.get("state") or {}).get("waiting")
            if waiting:
                out.append((pod, container, waiting))
    return out


def seconds_between(start: str, now: str) -> float:
    """Seconds from one API timestamp (RFC 3339) to a later one; 0 when either is unreadable or the
    order is reversed (never fail on a guess)."""
    try:
        begin, end = (dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, now))
        return max(0.0, (end - begin).total_seconds())
    except (TypeError, ValueError, AttributeError):
        return 0.0


def age(obj: Mapping[str, Any], now: str) -> float:
    """Seconds since an object (pod, PyTorchJob) was created."""
    return seconds_between((obj.get("metadata") or {}).get("creationTimestamp", ""), now)


def _spec_image(pod: Mapping[str, Any], container: str) -> str:
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == container:
            return str(c.get("image", ""))
    return ""
