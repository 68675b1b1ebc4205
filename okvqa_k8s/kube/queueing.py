"""Kueue: how a queued run's PyTorchJob is labelled, and what its Workload says about the wait (pure).

Kueue admits a whole job at once against a ClusterQueue's quota: the job is created suspended
(`runPolicy.suspend`) with the LocalQueue in the label `kueue.x-k8s.io/queue-name`; Kueue makes a
Workload for it (labelled with the job's uid), and unsuspends the job once it is admitted, or suspends it
again when it is preempted. The Workload's conditions carry Kueue's reason and message ("couldn't assign
flavors to pod set master: insufficient unused quota …"); this module turns them into what the run shows
and decides when waiting is hopeless:

- the LocalQueue (or its ClusterQueue) does not exist: a clear `QueueNotFound` at once, Failed once it
  has been missing for `MISSING_QUEUE_GRACE_S` (a chart may create the queue and the run together);
- the job asks for more than the ClusterQueue can ever give ("… > maximum capacity"): Failed at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from okvqa_k8s.kube.pods import seconds_between
from okvqa_k8s.kube.states import Reason
from okvqa_k8s.spec import FineTuneSpec

GROUP = "kueue.x-k8s.io"
WORKLOAD_API = f"{GROUP}/v1beta2"
QUEUE_LABEL = f"{GROUP}/queue-name"
PRIORITY_LABEL = f"{GROUP}/priority-class"
JOB_UID_LABEL = f"{GROUP}/job-uid"
MISSING_QUEUE_GRACE_S = 60.0
# Kueue's words (pkg/controller/core/workload_controller.go, pkg/scheduler/flavorassigner).
_MISSING = re.compile(r"\b(LocalQueue|ClusterQueue) \S+ doesn't exist")
_NEVER_FITS = "> maximum capacity"
# Evicted reasons after which Kueue never admits the Workload again by itself (its `spec.active` is false:
# e.g. requeued more often than `waitForPodsReady.requeuingStrategy.backoffLimitCount` allows).
_DEACTIVATED = frozenset({"Deactivated", "InactiveWorkload"})


def job_labels(spec: FineTuneSpec) -> dict[str, str]:
    """The labels that put the PyTorchJob in Kueue's hands (none without a queue)."""
    labels = {QUEUE_LABEL: spec.queue} if spec.queue else {}
    if spec.priority_class:
        labels[PRIORITY_LABEL] = spec.priority_class
    return labels


def suspended(job: Mapping[str, Any]) -> bool:
    """Whether the job is held: not yet admitted, or preempted and waiting to be admitted again."""
    return bool(((job.get("spec") or {}).get("runPolicy") or {}).get("suspend"))


@dataclass(frozen=True)
class Wait:
    """Why a suspended job waits: `reason`/`message` for the run's status (Kueue's message inside),
    `kueue_reason` as Kueue wrote it, and `fatal` when waiting can never end."""

    reason: Reason
    message: str
    kueue_reason: str
    fatal: bool = False


def wait(queue: str, job_name: str, workload: Mapping[str, Any] | None, installed: bool, now: str) -> Wait:
    """What keeps the suspended job `job_name` waiting in LocalQueue `queue`, from its Workload."""
    if not installed:
        msg = (
            f"spec.queue is {queue!r} but Kueue is not installed (no {WORKLOAD_API} Workload API): "
            f"nothing would ever admit PyTorchJob {job_name}; install Kueue or remove spec.queue"
        )
        return Wait(Reason.QUEUEING_UNAVAILABLE, msg, "", fatal=True)
    if workload is None:
        return Wait(Reason.QUEUED, f"waiting for Kueue to create the Workload of PyTorchJob {job_name}", "")
    conditions = {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []}
    evicted = conditions.get("Evicted") or {}
    reserved = conditions.get("QuotaReserved") or {}
    admitted = conditions.get("Admitted") or {}
    was_evicted = evicted.get("status") == "True"
    if admitted.get("status") == "True" and not was_evicted:
        return Wait(Reason.QUEUED, f"admitted by Kueue in LocalQueue {queue}; starting", "Admitted")
    pending = reserved if reserved.get("status") == "False" else {}
    text = pending.get("message") or "waiting for quota"
    kueue_reason = pending.get("reason") or ""
    if _NEVER_FITS in text:
        msg = f"LocalQueue {queue} can never admit this run: {text}; lower nodes/resources or raise the quota"
        return Wait(Reason.INADMISSIBLE, msg, kueue_reason, fatal=True)
    if missing := _MISSING.search(text):
        waited = seconds_between(pending.get("lastTransitionTime") or now, now)
        fatal = waited >= MISSING_QUEUE_GRACE_S
        hint = f"gave up after {waited:.0f} s" if fatal else "create it, or delete the FineTune"
        msg = f"{missing.group(0)} (Kueue: {text}); {hint}"
        return Wait(Reason.QUEUE_NOT_FOUND, msg, kueue_reason, fatal)
    if was_evicted:
        kueue_reason = evicted.get("reason") or "Evicted"
        why = f"{kueue_reason} by Kueue ({evicted.get('message', '')})"
        if kueue_reason in _DEACTIVATED:
            msg = f"{why}: the Workload is never admitted again; resubmit the run"
            return Wait(Reason.INADMISSIBLE, msg, kueue_reason, fatal=True)
        # Preempted, or evicted otherwise (pods not ready in time, a stopped queue): suspended again until
        # Kueue re-admits it.
        reason = Reason.PREEMPTED if kueue_reason == "Preempted" else Reason.QUEUED
        return Wait(reason, f"{why}; waiting in LocalQueue {queue}: {text}", kueue_reason)
    return Wait(Reason.QUEUED, f"waiting in LocalQueue {queue}: {text}", kueue_reason)
