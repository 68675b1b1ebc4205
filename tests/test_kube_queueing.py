"""Queueing with Kueue, decided purely: a queued run's PyTorchJob, and what its Workload makes of the run.

The Workloads below carry the conditions and messages Kueue v0.17 writes (its workload controller and
flavor assigner; the cluster tests in test_kube_kueue.py see the same from the real Kueue).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from okvqa_k8s.errors import UserError
from okvqa_k8s.kube import queueing
from okvqa_k8s.kube.decide import Create, Delete, Observed, decide
from okvqa_k8s.kube.pods import seconds_between
from okvqa_k8s.kube.render import Owner, render_configmap, render_pytorchjob
from okvqa_k8s.spec import parse_spec

OWNER = Owner("run", "ns", "uid-1")
NOW = "2025-01-01T00:10:00Z"
EARLIER = "2025-01-01T00:00:00Z"  # ten minutes before NOW
SPEC = {"dataset": {"uri": "s3://bkt/data"}, "outputUri": "s3://bkt/runs/run", "nodes": 2}
QUEUED = {**SPEC, "queue": "team-a", "priorityClass": "low"}
NO_SERVE = {"inference": {"enabled": False}, "evaluation": {"enabled": False}}
PENDING_MSG = (
    "couldn't assign flavors to pod set master: insufficient unused quota for nvidia.com/gpu in flavor "
    "gpu, 8 more needed"
)
NEVER_MSG = (
    "couldn't assign flavors to pod set worker: insufficient quota for nvidia.com/gpu in flavor gpu, "
    "previously considered podsets requests (8) + current podset request (16) > maximum capacity (16)"
)
PREEMPTED_MSG = (
    "Preempted to accommodate a workload (UID: 7d, JobUID: 9a) due to prioritization in the ClusterQueue"
)


def condition(ctype: str, status: str, reason: str, message: str = "", at: str = EARLIER) -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message, "lastTransitionTime": at}


ADMITTED = {"type": "Admitted", "status": "True", "reason": "Admitted", "message": ""}


def workload(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "pytorchjob-run-3c1a2"}, "status": {"conditions": list(conditions)}}


def job(spec_doc: dict[str, Any], *, suspended: bool, running: bool = False) -> dict[str, Any]:
    obj = render_pytorchjob(parse_spec(spec_doc), OWNER)
    obj["metadata"]["uid"] = "job-uid"
    obj["spec"]["runPolicy"]["suspend"] = suspended
    if running:
        obj["status"] = {"conditions": [condition("Running", "True", "Running")]}
    return obj


def observed(spec_doc: dict[str, Any], **kw: Any) -> Observed:
    suspended, running = kw.pop("suspended", True), kw.pop("running", False)
    cm = render_configmap(parse_spec(spec_doc), OWNER)
    return Observed(configmap=cm, job=job(spec_doc, suspended=suspended, running=running), **kw)


def describe(action: Create | Delete) -> str:
    if isinstance(action, Create):
        return f"create {action.obj['kind']}/{action.obj['metadata']['name']}"
    return f"delete {action.kind}/{action.name}"


def admitted_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Admitted")


def test_queued_job_is_labelled_and_created_suspended() -> None:
    obj = render_pytorchjob(parse_spec(QUEUED), OWNER)
    assert obj["metadata"]["labels"][queueing.QUEUE_LABEL] == "team-a"
    assert obj["metadata"]["labels"][queueing.PRIORITY_LABEL] == "low"
    assert obj["spec"]["runPolicy"]["suspend"] is True
    # The Deployment and eval Job are not queued: only the training job is.
    plain = render_pytorchjob(parse_spec(SPEC), OWNER)
    assert "suspend" not in plain["spec"]["runPolicy"]
    assert not {queueing.QUEUE_LABEL, queueing.PRIORITY_LABEL} & set(plain["metadata"]["labels"])


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({**SPEC, "priorityClass": "low"}, "priorityClass requires queue"),
        ({**SPEC, "queue": "Team_A"}, "queue"),
        ({**SPEC, "queue": "a" * 64}, "queue"),
    ],
)
def test_bad_queue_fields_are_refused(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(UserError, match=field):
        parse_spec(doc)


def test_waiting_for_quota_is_queued_with_kueues_reason() -> None:
    seen = observed(QUEUED, workload=workload(condition("QuotaReserved", "False", "Pending", PENDING_MSG)))
    d = decide(OWNER, QUEUED, {"phase": "Pending", "jobName": "run"}, seen, NOW)
    assert d.status["phase"] == "Queued" and d.status["reason"] == "Queued"
    assert d.status["message"] == f"waiting in LocalQueue team-a: {PENDING_MSG}"
    assert d.status["queue"] == {"name": "team-a", "since": NOW, "reason": "Pending"}
    assert admitted_condition(d.status)["status"] == "False"
    assert d.actions == [] and [e.reason for e in d.events] == ["Queued"]
    # Still waiting later: the wait keeps its start, no new event.
    later = decide(OWNER, QUEUED, d.status, seen, "2025-01-01T00:15:00Z")
    assert later.status["queue"]["since"] == NOW and later.events == []


def test_before_kueue_made_the_workload() -> None:
    d = decide(OWNER, QUEUED, {"phase": "Pending", "jobName": "run"}, observed(QUEUED), NOW)
    assert d.status["phase"] == "Queued"
    assert "waiting for Kueue to create the Workload of PyTorchJob run" in d.status["message"]


def test_admitted_run_trains_and_records_the_time_waited() -> None:
    status = {"phase": "Queued", "jobName": "run", "queue": {"name": "team-a", "since": EARLIER}}
    seen = observed(
        QUEUED,
        suspended=False,
        running=True,
        workload=workload(
            condition("QuotaReserved", "True", "QuotaReserved"), condition("Admitted", "True", "Admitted")
        ),
    )
    d = decide(OWNER, QUEUED, status, seen, NOW)
    assert d.status["phase"] == "Training"
    assert d.status["queue"] == {"name": "team-a", "waitedSeconds": 600}
    assert admitted_condition(d.status)["status"] == "True"


def test_preempted_run_goes_back_to_queued_and_adds_up_its_waits() -> None:
    status = {"phase": "Training", "jobName": "run", "queue": {"name": "team-a", "waitedSeconds": 30}}
    seen = observed(
        QUEUED,
        workload=workload(
            condition("Evicted", "True", "Preempted", PREEMPTED_MSG),
            condition("QuotaReserved", "False", "Pending", PENDING_MSG),
        ),
    )
    d = decide(OWNER, QUEUED, status, seen, EARLIER)
    assert d.status["phase"] == "Queued" and d.status["reason"] == "Preempted"
    assert PREEMPTED_MSG in d.status["message"] and PENDING_MSG in d.status["message"]
    assert d.status["queue"] == {
        "name": "team-a",
        "waitedSeconds": 30,
        "since": EARLIER,
        "reason": "Preempted",
    }
    assert d.actions == []  # the job stays: Kueue resumes it, and training resumes from its checkpoint
    resumed = decide(OWNER, QUEUED, d.status, observed(QUEUED, suspended=False, running=True), NOW)
    assert resumed.status["phase"] == "Training" and resumed.status["queue"]["waitedSeconds"] == 630


def test_a_wait_ends_however_the_run_leaves_the_queue() -> None:
    """Admitted and finished between two looks, or failed: no run keeps a `since` (the Waiting column)."""
    status = {
        "phase": "Queued",
        "jobName": "run",
        "queue": {"name": "team-a", "since": EARLIER, "reason": "Pending"},
    }
    finished = observed(QUEUED, suspended=False)
    finished.job["status"] = {"conditions": [condition("Succeeded", "True", "Succeeded")]}
    d = decide(OWNER, {**QUEUED, **NO_SERVE}, status, replace(finished, configmap=None), NOW)
    assert d.status["phase"] == "Succeeded" and d.status["queue"] == {"name": "team-a", "waitedSeconds": 600}
    never = observed(QUEUED, workload=workload(condition("QuotaReserved", "False", "Pending", NEVER_MSG)))
    failed = decide(OWNER, QUEUED, status, never, NOW)
    assert failed.status["phase"] == "Failed" and failed.status["queue"] == {
        "name": "team-a",
        "waitedSeconds": 600,
    }


@pytest.mark.parametrize("how", ["job deleted", "job failed"])
def test_a_wait_ends_when_the_run_fails_for_another_reason(how: str) -> None:
    """Any failure of a waiting run closes its wait, not only the queue's own: no Waiting column that keeps
    growing on a Failed run."""
    status = {
        "phase": "Queued",
        "jobName": "run",
        "queue": {"name": "team-a", "since": EARLIER, "reason": "Pending", "waitedSeconds": 30},
    }
    seen = observed(QUEUED)
    if how == "job deleted":
        seen = replace(seen, job=None)
    else:
        seen.job["status"] = {"conditions": [condition("Failed", "True", "Failed", "boom")]}
    d = decide(OWNER, QUEUED, status, seen, NOW)
    assert d.status["phase"] == "Failed"
    assert d.status["queue"] == {"name": "team-a", "waitedSeconds": 630}


@pytest.mark.parametrize(
    ("kueue_reason", "phase", "reason", "actions"),
    [
        ("Preempted", "Queued", "Preempted", []),
        ("PodsReadyTimeout", "Queued", "Queued", []),
        ("Deactivated", "Failed", "Inadmissible", ["delete PyTorchJob/run"]),
    ],
)
def test_an_eviction_is_named_by_kueues_reason(
    kueue_reason: str, phase: str, reason: str, actions: list[str]
) -> None:
    """Only a preemption is reported as one; a deactivated Workload is never admitted again, so the run
    fails instead of waiting for ever."""
    seen = observed(
        QUEUED,
        workload=workload(
            condition("Evicted", "True", kueue_reason, "why"),
            condition("QuotaReserved", "False", "Pending", PENDING_MSG),
        ),
    )
    d = decide(OWNER, QUEUED, {"phase": "Training", "jobName": "run"}, seen, NOW)
    assert (d.status["phase"], d.status["reason"]) == (phase, reason)
    assert d.status["message"].startswith(f"{kueue_reason} by Kueue (why)")
    assert [describe(a) for a in d.actions] == actions


def test_preemption_under_way_is_not_mistaken_for_admission() -> None:
    """Kueue suspends the job first and clears the admission after: Evicted decides."""
    seen = observed(
        QUEUED,
        workload=workload(
            condition("Evicted", "True", "Preempted", PREEMPTED_MSG),
            condition("Admitted", "True", "Admitted"),
        ),
    )
    d = decide(OWNER, QUEUED, {"phase": "Training", "jobName": "run"}, seen, NOW)
    assert d.status["reason"] == "Preempted"


def test_never_admissible_fails_and_leaves_the_queue() -> None:
    seen = observed(QUEUED, workload=workload(condition("QuotaReserved", "False", "Pending", NEVER_MSG)))
    d = decide(OWNER, QUEUED, {"phase": "Queued", "jobName": "run"}, seen, NOW)
    assert d.status["phase"] == "Failed" and d.status["reason"] == "Inadmissible"
    assert d.status["message"].startswith("LocalQueue team-a can never admit this run: ")
    assert "> maximum capacity (16)" in d.status["message"]
    assert [describe(a) for a in d.actions] == ["delete PyTorchJob/run"]
    assert [e.reason for e in d.events] == ["Inadmissible"]


@pytest.mark.parametrize(
    ("since", "phase", "actions"),
    [("2025-01-01T00:09:30Z", "Queued", []), (EARLIER, "Failed", ["delete PyTorchJob/run"])],
    ids=["within the grace period: a clear condition", "missing for longer: failed"],
)
def test_missing_local_queue(since: str, phase: str, actions: list[str]) -> None:
    missing = condition("QuotaReserved", "False", "Inadmissible", "LocalQueue team-a doesn't exist", since)
    d = decide(
        OWNER,
        QUEUED,
        {"phase": "Queued", "jobName": "run"},
        observed(QUEUED, workload=workload(missing)),
        NOW,
    )
    assert d.status["phase"] == phase and d.status["reason"] == "QueueNotFound"
    assert d.status["message"].startswith("LocalQueue team-a doesn't exist")
    assert admitted_condition(d.status)["reason"] == "QueueNotFound"
    assert [describe(a) for a in d.actions] == actions


def test_queue_without_kueue_fails_at_once() -> None:
    seen = observed(QUEUED, queueing_installed=False)
    d = decide(OWNER, QUEUED, {"phase": "Pending", "jobName": "run"}, seen, NOW)
    assert d.status["phase"] == "Failed" and d.status["reason"] == "QueueingUnavailable"
    assert "Kueue is not installed" in d.status["message"]


def test_run_without_queue_ignores_kueue() -> None:
    """No queue: the decision is today's, whatever the cluster runs."""
    seen = Observed(configmap=render_configmap(parse_spec(SPEC), OWNER), job=job(SPEC, suspended=False))
    d = decide(OWNER, SPEC, {"phase": "Pending", "jobName": "run"}, seen, NOW)
    assert d.status["phase"] == "Pending" and "queue" not in d.status
    assert not [c for c in d.status["conditions"] if c["type"] == "Admitted"]


def test_seconds_between_never_guesses() -> None:
    assert seconds_between(EARLIER, NOW) == 600
    assert seconds_between(NOW, EARLIER) == 0
    assert seconds_between("yesterday", NOW) == 0


def test_local_run_is_not_held(tmp_path: Path) -> None:
    """`submit --local` has no queue: its job runs at once, so the decision goes on as admitted."""
    from okvqa_k8s.kube.backends.local import LocalCluster

    local = LocalCluster(tmp_path)
    local.objects[("PyTorchJob", "run")] = render_pytorchjob(parse_spec(QUEUED), OWNER)
    seen = local.get("kubeflow.org/v1", "PyTorchJob", "ns", "run")
    assert seen is not None and not queueing.suspended(seen)
    d = decide(OWNER, QUEUED, {"phase": "Pending", "jobName": "run"}, Observed(job=seen), NOW)
    assert d.status["phase"] == "Training"
