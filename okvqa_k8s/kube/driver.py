"""The one observe → decide → apply → publish loop, for every backend.

`step` is one level-triggered pass (what the operator's kopf handlers and its resync run for a FineTune);
`until_terminal` repeats it until the run succeeds or fails (what `submit --no-operator`, `submit --local`
and the demo run in the foreground). Failures are told apart by class, as kopf does: an object the API
refuses for good (`PermanentError`) fails the run with the reason; a `TemporaryError` is tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from okvqa_k8s.errors import PermanentError, TemporaryError
from okvqa_k8s.kube.cluster import Cluster, Run
from okvqa_k8s.kube.decide import Create, Decision, decide, fail
from okvqa_k8s.kube.states import TERMINAL, Reason

log = logging.getLogger("okvqa.driver")


def utcnow() -> str:
    """The time as Kubernetes writes it in a status (RFC 3339, seconds, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def step(cluster: Cluster, run: Run, now: str) -> Run:
    """Bring `run` one step further; returns it with its new status.

    A repeated step decides the same thing and creates nothing twice (decide is level-triggered and
    creating an existing object is not an error), so a crash anywhere in here is safe to retry.
    """
    observed = cluster.observe(run)
    decision = decide(run.owner, run.spec, run.status, observed, now, run.generation)
    decision = _apply(cluster, run, decision, now)
    if cluster.publish(run, decision.status):
        for event in decision.events:
            cluster.record(run, event)
    return replace(run, status=decision.status)


def _apply(cluster: Cluster, run: Run, decision: Decision, now: str) -> Decision:
    """Create/delete as decided; the first object refused for good fails the run with the API's reason."""
    for action in decision.actions:
        try:
            cluster.apply(run, action)
        except PermanentError as exc:
            if isinstance(action, Create):
                reason, what = Reason.CREATE_FAILED, f"{action.obj['kind']} {action.obj['metadata']['name']}"
            else:
                reason, what = Reason.DELETE_FAILED, f"{action.kind} {action.name}"
            failure = fail(decision.status, reason, f"{what}: {exc}", now, run.generation)
            failure.events[:0] = decision.events
            return failure
    return decision


def until_terminal(
    cluster: Cluster,
    run: Run,
    *,
    poll_seconds: float,
    clock: Callable[[], str] = utcnow,
    sleep: Callable[[float], None] = time.sleep,
) -> Run:
    """Step `run` every `poll_seconds` until it succeeds or fails; a temporary failure waits its delay."""
    while True:
        try:
            run = step(cluster, run, clock())
        except TemporaryError as exc:
            log.warning("%s: %s; trying again in %.0f s", run.owner.name, exc, exc.delay)
            sleep(exc.delay)
            continue
        if run.status.get("phase") in TERMINAL:
            return run
        sleep(poll_seconds)
