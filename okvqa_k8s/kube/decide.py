"""The reconcile decision: (FineTune spec + status, observed children) → actions, new status, events.

Pure and level-triggered: it looks only at what exists now, never at which event woke it, so a repeated
event or an operator restart decides the same thing and creates nothing twice. Every backend gathers
`Observed` the same way (observe.py) and `driver.step` applies the actions and publishes the status.

Phases: Pending (PyTorchJob created, pods not running) → Queued (a run with `spec.queue` whose job Kueue
has not admitted, or has preempted: queueing.py) → Training → Serving (Deployments becoming
available) → Evaluating (Jobs scoring the endpoints) → Succeeded; Failed from anywhere, with a reason
(a pod whose image cannot be pulled among them: pods.py).
The ConfigMap written at the start records the *accepted* spec; a later spec edit is refused with a
`SpecAccepted=False` condition and the run carries on with the accepted one (no silent restarts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from okvqa_k8s.errors import UserError
from okvqa_k8s.evaluate.evalset import evaluation_problems
from okvqa_k8s.evaluate.metric import result_metric
from okvqa_k8s.evaluate.report import group_line
from okvqa_k8s.kube import names, queueing
from okvqa_k8s.kube.pods import (
    JOB_NAME_LABEL,
    age,
    container_config_failure,
    image_pull_failure,
    seconds_between,
    waiting_summary,
)
from okvqa_k8s.kube.render import (
    SPEC_FILE,
    Owner,
    endpoint_url,
    render_configmap,
    render_eval_job,
    render_network_policy,
    render_pytorchjob,
    render_server,
    secret_references,
    spec_hash,
    variants,
)
from okvqa_k8s.kube.states import ACTIVE, TERMINAL, Condition, EventType, Phase, Reason
from okvqa_k8s.layout import eval_dataset_uri, model_uri, result_uri
from okvqa_k8s.spec import FineTuneSpec, parse_spec


@dataclass(frozen=True)
class Foreign:
    """A child found by its name that this run does not own: another FineTune's, or nobody's."""

    kind: str
    name: str
    owner_kind: str | None = None  # None: no ownerReference at all
    owner_name: str | None = None


@dataclass(frozen=True)
class Observed:
    """What exists now: children by variant (`finetuned`/`base`), the run's pods (by name) and files
    read from the run's storage.

    `eval_results` holds results.json per variant, read only once the evaluation Job has completed, so
    a stale result left in storage by an earlier run can never finish this one. `eval_set` and
    `dataset_manifest` are the `data prepare` manifests of the evaluation set and of the training set,
    read only before the PyTorchJob exists (None: not read, or not readable from here). `secret_keys`
    maps each Secret the pods read (render.secret_references) that exists to its key names, never its
    values, read at the same time (None: not read; a Secret absent from the mapping does not exist).
    `foreign` lists same-named objects that are not this run's: they are neither adopted nor replaced.
    `workload` is Kueue's Workload of a queued run's PyTorchJob; `queueing_installed` False when the
    cluster has no Workload API at all.
    """

    configmap: dict[str, Any] | None = None
    job: dict[str, Any] | None = None
    deployments: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    services: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    network_policy: dict[str, Any] | None = None
    eval_job: dict[str, Any] | None = None
    pods: tuple[dict[str, Any], ...] = ()
    progress: dict[str, Any] | None = None
    checkpoint_uri: str | None = None
    eval_results: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    eval_set: Mapping[str, Any] | None = None
    dataset_manifest: Mapping[str, Any] | None = None
    secret_keys: Mapping[str, frozenset[str]] | None = None
    foreign: tuple[Foreign, ...] = ()
    workload: Mapping[str, Any] | None = None
    queueing_installed: bool = True


@dataclass(frozen=True)
class Create:
    obj: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str  # a Reason, or the Phase entered
    message: str


Action = Create | Delete


@dataclass
class Decision:
    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


def set_condition(
    status: dict[str, Any],
    ctype: Condition,
    value: bool,
    reason: Reason,
    message: str,
    now: str,
    generation: int | None,
) -> None:
    """Upsert a condition; lastTransitionTime moves only when the status flips (Kubernetes convention)."""
    conditions = [dict(c) for c in status.get("conditions", [])]
    text = "True" if value else "False"
    old = next((c for c in conditions if c.get("type") == ctype), None)
    new = {"type": ctype, "status": text, "reason": reason, "message": message}
    new["lastTransitionTime"] = old["lastTransitionTime"] if old and old.get("status") == text else now
    if generation is not None:
        new["observedGeneration"] = generation
    conditions = [new if c is old else c for c in conditions] if old else [*conditions, new]
    status["conditions"] = conditions


def condition_true(obj: Mapping[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    """The `ctype` condition of an object's status when it is True (PyTorchJob, Job, Deployment alike)."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return cond
    return None


def _condition_false(obj: Mapping[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "False":
            return cond
    return None


def _available(deployment: Mapping[str, Any]) -> bool:
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    return int((deployment.get("status") or {}).get("availableReplicas") or 0) >= wanted


def fail(status: dict[str, Any], reason: Reason, message: str, now: str, generation: int | None) -> Decision:
    """Move to Failed with a reason (also used by the driver when the API refuses an object)."""
    new = dict(status)
    new.update(phase=Phase.FAILED, reason=reason, message=message)
    if (queue := new.get("queue")) and "since" in queue:  # a failed run waits no more, whatever failed it
        new["queue"] = _end_wait(dict(queue), now)
    set_condition(new, Condition.READY, False, reason, message, now, generation)
    events = [] if status.get("phase") == Phase.FAILED else [Event(EventType.WARNING, reason, message)]
    return Decision(status=new, events=events)


def accepted_spec(configmap: Mapping[str, Any] | None) -> FineTuneSpec | None:
    """The spec the run started with (recorded in its ConfigMap), or None when there is none yet."""
    if not configmap:
        return None
    text = (configmap.get("data") or {}).get(SPEC_FILE, "")
    try:
        return parse_spec(yaml.safe_load(text), source=f"ConfigMap {configmap['metadata']['name']}")
    except (UserError, yaml.YAMLError):
        return None


def decide(
    owner: Owner,
    spec_doc: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    observed: Observed,
    now: str,
    generation: int | None = None,
) -> Decision:
    """The whole reconcile decision for one FineTune. `now` is passed in so the function stays pure."""
    old = dict(status or {})
    st: dict[str, Any] = {k: v for k, v in old.items()}
    if generation is not None:
        st["observedGeneration"] = generation

    current: FineTuneSpec | None = None
    problem = ""
    try:
        current = parse_spec(dict(spec_doc), source="spec")
    except UserError as exc:
        problem = str(exc).replace("\n", "; ")

    accepted = accepted_spec(observed.configmap)
    fresh = accepted is None
    if fresh and old.get("phase") == Phase.FAILED and old.get("reason") == Reason.INVALID_SPEC:
        st.pop("phase")  # nothing was created: a corrected spec simply starts the run
    if fresh:
        accepted = current
    if accepted is None:
        set_condition(st, Condition.SPEC_ACCEPTED, False, Reason.INVALID_SPEC, problem, now, generation)
        return _finish(old, fail(st, Reason.INVALID_SPEC, problem, now, generation))

    decision = Decision(status=st)
    _spec_condition(decision, old, current, accepted, problem, now, generation)
    if old.get("phase") in TERMINAL and st.get("phase") in TERMINAL:
        return _finish(old, decision)

    st["specHash"] = spec_hash(accepted)
    st["jobName"] = names.job_name(owner.name)
    if observed.foreign:
        return _finish(old, _not_owned(st, owner, observed.foreign, now, generation))
    if observed.configmap is None:
        decision.actions.append(Create(render_configmap(accepted, owner)))
    _progress(st, observed)
    if stuck := image_pull_failure(observed.pods, now):
        return _finish(old, fail(st, Reason.IMAGE_PULL_FAILED, stuck, now, generation))
    if unconfigured := container_config_failure(observed.pods, now):
        about_secret, why = unconfigured
        reason = Reason.SECRET_NOT_FOUND if about_secret else Reason.CONTAINER_CONFIG_ERROR
        return _finish(old, fail(st, reason, why, now, generation))

    job = observed.job
    if job is None:
        if old.get("phase") in ACTIVE and old.get("jobName"):
            msg = f"PyTorchJob {st['jobName']} disappeared; delete and resubmit the FineTune to train again"
            return _finish(old, fail(st, Reason.JOB_DELETED, msg, now, generation))
        if missing := _missing_secrets(accepted, owner, observed):
            return _finish(old, fail(st, Reason.SECRET_NOT_FOUND, "; ".join(missing), now, generation))
        if problems := _evaluation_set_problems(accepted, observed):
            return _finish(old, fail(st, Reason.INVALID_EVALUATION_SET, "; ".join(problems), now, generation))
        decision.actions.append(Create(render_pytorchjob(accepted, owner)))
        _phase(
            st, Phase.PENDING, Reason.JOB_CREATED, f"created PyTorchJob {st['jobName']}; waiting for its pods"
        )
        set_condition(st, Condition.TRAINED, False, Reason.PENDING, "PyTorchJob created", now, generation)
        return _finish(old, decision)

    if failed := condition_true(job, "Failed"):
        msg = f"PyTorchJob {st['jobName']} failed: {failed.get('reason', '')}: {failed.get('message', '')}"
        set_condition(st, Condition.TRAINED, False, Reason.JOB_FAILED, msg, now, generation)
        return _finish(old, fail(st, Reason.TRAINING_FAILED, msg, now, generation))
    if (held := _queued(decision, accepted, job, observed, now, generation)) is not None:
        return _finish(old, held)
    if not condition_true(job, "Succeeded"):
        if condition_true(job, "Running") or condition_true(job, "Restarting"):
            _phase(st, Phase.TRAINING, Reason.JOB_RUNNING, f"PyTorchJob {st['jobName']} is running")
            set_condition(
                st, Condition.TRAINED, False, Reason.RUNNING, "training in progress", now, generation
            )
        else:
            if late := _pending_too_long(accepted, job, observed, now):
                return _finish(old, fail(st, Reason.PENDING_DEADLINE_EXCEEDED, late, now, generation))
            _phase(
                st, Phase.PENDING, Reason.JOB_CREATED, f"waiting for the pods of PyTorchJob {st['jobName']}"
            )
        return _finish(old, decision)

    st["modelUri"] = model_uri(accepted)
    set_condition(
        st,
        Condition.TRAINED,
        True,
        Reason.JOB_SUCCEEDED,
        f"merged model at {st['modelUri']}",
        now,
        generation,
    )
    if not accepted.inference.enabled:
        _phase(st, Phase.SUCCEEDED, Reason.TRAINED, "training succeeded (inference disabled)")
        set_condition(st, Condition.READY, True, Reason.TRAINED, "training succeeded", now, generation)
        return _finish(old, decision)
    _serve_and_evaluate(decision, owner, accepted, observed, now, generation)
    return _finish(old, decision)


def _missing_secrets(spec: FineTuneSpec, owner: Owner, observed: Observed) -> list[str]:
    """Secrets (or keys) the pods read that do not exist: without them every pod would sit in
    CreateContainerConfigError and the run would never leave Pending. Names only, never values."""
    if observed.secret_keys is None:
        return []
    out = []
    for name, keys in secret_references(spec).items():
        field_name = "storage.credentialsSecret: " if name == spec.storage.credentials_secret else ""
        where = f"Secret {owner.namespace}/{name}"
        if name not in observed.secret_keys:
            out.append(f"{field_name}{where} not found (the pods read {', '.join(sorted(keys))} from it)")
        elif absent := sorted(keys - observed.secret_keys[name]):
            out.append(f"{field_name}{where} has no key {', '.join(absent)}")
    return out


def _pending_too_long(spec: FineTuneSpec, job: Mapping[str, Any], observed: Observed, now: str) -> str | None:
    """Why the run has waited past `pendingDeadlineSeconds` for its PyTorchJob to run, or None.

    Counted from the job's creation, or from its resumption when a queue (Kueue) held it suspended:
    time spent waiting for quota is not a stall.
    """
    deadline = spec.pending_deadline_seconds
    run_policy = (job.get("spec") or {}).get("runPolicy") or {}
    if not deadline or run_policy.get("suspend") or condition_true(job, "Suspended"):
        return None
    since, what = str(job["metadata"].get("creationTimestamp", "")), "created"
    resumed = _condition_false(job, "Suspended")
    if resumed and str(resumed.get("lastTransitionTime", "")) > since:
        since, what = str(resumed["lastTransitionTime"]), "resumed"
    waited = seconds_between(since, now)
    if waited < deadline:
        return None
    return (
        f"PyTorchJob {job['metadata']['name']} is not running {waited:.0f} s after it was {what} "
        f"(pendingDeadlineSeconds {deadline}): {waiting_summary(observed.pods)}"
    )


def _eval_pending_too_long(
    spec: FineTuneSpec, job: Mapping[str, Any], pods: tuple[dict[str, Any], ...], now: str
) -> str | None:
    """Why the evaluation Job has started no pod `pendingDeadlineSeconds` after it was created, or None.

    A Job whose pod cannot be scheduled (no node with its CPU or memory) reports nothing itself; without
    this the run would stay Evaluating for ever. A pod that ran once (even one that failed) is progress.
    """
    deadline, name = spec.pending_deadline_seconds, job["metadata"]["name"]
    mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(JOB_NAME_LABEL) == name]
    started = any((p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed") for p in mine)
    if not deadline or started or (waited := age(job, now)) < deadline:
        return None
    return (
        f"Job {name} has started no pod {waited:.0f} s after it was created "
        f"(pendingDeadlineSeconds {deadline}): {waiting_summary(mine)}"
    )


def _not_owned(
    st: dict[str, Any], owner: Owner, foreign: tuple[Foreign, ...], now: str, generation: int | None
) -> Decision:
    """Same-named objects that are not this run's are never adopted. Those of a deleted FineTune of
    the same name are being garbage-collected: wait for them. Any other is refused: the run fails."""
    described = "; ".join(
        f"{f.kind} {owner.namespace}/{f.name} is owned by "
        + (f"{f.owner_kind} {f.owner_name}" if f.owner_kind else "nobody")
        for f in foreign
    )
    if owner.uid and all(f.owner_kind == names.KIND and f.owner_name == owner.name for f in foreign):
        msg = f"{described} (a deleted FineTune of the same name): waiting for the garbage collector"
        _phase(st, Phase.PENDING, Reason.NOT_OWNED, msg)
        set_condition(st, Condition.READY, False, Reason.NOT_OWNED, msg, now, generation)
        return Decision(status=st)
    msg = (
        f"{described}, not by this run: it is neither adopted nor replaced; delete it, or submit the "
        "run under another name"
    )
    return fail(st, Reason.NOT_OWNED, msg, now, generation)


def _queued(
    decision: Decision,
    spec: FineTuneSpec,
    job: Mapping[str, Any],
    observed: Observed,
    now: str,
    generation: int | None,
) -> Decision | None:
    """A run with a queue: `decision` in phase Queued while Kueue holds its job, a failure when waiting
    is hopeless, None once admitted or finished (it goes on as any run). `status.queue` keeps the time
    waited, all waits (preemptions included) together; `since` only while the run waits."""
    queue, st = spec.queue, decision.status
    if not queue:
        return None
    record = {**(st.get("queue") or {}), "name": queue}
    if condition_true(job, "Succeeded") or not queueing.suspended(job):
        st["queue"] = _end_wait(record, now)
        msg = f"admitted by Kueue in LocalQueue {queue}"
        set_condition(st, Condition.ADMITTED, True, Reason.ADMITTED, msg, now, generation)
        return None
    wait = queueing.wait(queue, st["jobName"], observed.workload, observed.queueing_installed, now)
    set_condition(st, Condition.ADMITTED, False, wait.reason, wait.message, now, generation)
    if wait.fatal:
        st["queue"] = record
        failure = fail(st, wait.reason, wait.message, now, generation)
        # Out of the queue, so it holds no place there (a suspended job holds no quota or pod).
        failure.actions.append(Delete("kubeflow.org/v1", "PyTorchJob", st["jobName"]))
        return failure
    record.setdefault("since", now)
    record["reason"] = wait.kueue_reason
    st["queue"] = {k: v for k, v in record.items() if v != ""}
    _phase(st, Phase.QUEUED, wait.reason, wait.message)
    return decision


def _end_wait(record: dict[str, Any], now: str) -> dict[str, Any]:
    """`status.queue` once the run no longer waits: the time of this wait added to the earlier ones."""
    record.pop("reason", None)
    if since := record.pop("since", None):
        record["waitedSeconds"] = int(record.get("waitedSeconds", 0) + seconds_between(since, now))
    return record


def _evaluation_set_problems(spec: FineTuneSpec, observed: Observed) -> list[str]:
    """What keeps the evaluation from scoring what the spec asks, from the manifests observed: found
    before training starts rather than in a failed evaluation Job hours later."""
    if not spec.evaluation.enabled:
        return []
    return evaluation_problems(
        evaluated=spec.evaluated_categories,
        trained=spec.trained_categories,
        split=spec.dataset.eval_split,
        eval_uri=eval_dataset_uri(spec),
        eval_manifest=observed.eval_set,
        train_uri=spec.dataset.uri,
        train_manifest=observed.dataset_manifest,
    )


def _spec_condition(
    decision: Decision,
    old: Mapping[str, Any],
    current: FineTuneSpec | None,
    accepted: FineTuneSpec,
    problem: str,
    now: str,
    generation: int | None,
) -> None:
    st = decision.status
    if current is not None and spec_hash(current) == spec_hash(accepted):
        set_condition(
            st, Condition.SPEC_ACCEPTED, True, Reason.ACCEPTED, "the run uses this spec", now, generation
        )
        return
    reason = Reason.INVALID_SPEC if current is None else Reason.CHANGE_REFUSED
    msg = (problem + "; " if problem else "") + (
        "the spec changed after the run started; it keeps the accepted spec (no silent restart). "
        "Revert the change, or delete and resubmit the FineTune to run the new spec"
    )
    was = next((c for c in old.get("conditions", []) if c.get("type") == Condition.SPEC_ACCEPTED), None)
    if not was or was.get("status") != "False" or was.get("reason") != reason:
        decision.events.append(Event(EventType.WARNING, Reason.SPEC_CHANGE_REFUSED, msg))
    set_condition(st, Condition.SPEC_ACCEPTED, False, reason, msg, now, generation)


def _progress(st: dict[str, Any], observed: Observed) -> None:
    progress = observed.progress or {}
    if "step" in progress and progress.get("total_steps"):
        st["progress"] = f"{int(progress['step'])}/{int(progress['total_steps'])}"
        if isinstance(progress.get("loss"), int | float):
            st["loss"] = float(progress["loss"])
    if observed.checkpoint_uri:
        st["checkpointUri"] = observed.checkpoint_uri


def _phase(st: dict[str, Any], phase: Phase, reason: Reason, message: str) -> None:
    st.update(phase=phase, reason=reason, message=message)


def _serve_and_evaluate(
    decision: Decision, owner: Owner, spec: FineTuneSpec, observed: Observed, now: str, generation: int | None
) -> None:
    st = decision.status
    wanted = variants(spec)
    waiting = []
    if observed.network_policy is None:  # first, so no server is ever reachable by everyone
        decision.actions.append(Create(render_network_policy(spec, owner)))
    for variant in wanted:
        deployment, service = render_server(spec, owner, variant)
        if variant not in observed.deployments:
            decision.actions.append(Create(deployment))
            waiting.append(deployment["metadata"]["name"])
        else:
            stuck = _condition_false(observed.deployments[variant], "Progressing")
            if stuck and stuck.get("reason") == "ProgressDeadlineExceeded":
                msg = f"Deployment {deployment['metadata']['name']}: {stuck.get('message', 'not available')}"
                _absorb(decision, fail(st, Reason.SERVING_FAILED, msg, now, generation))
                return
            if not _available(observed.deployments[variant]):
                waiting.append(deployment["metadata"]["name"])
        if variant not in observed.services:
            decision.actions.append(Create(service))
    if waiting:
        _phase(
            st,
            Phase.SERVING,
            Reason.WAITING_FOR_SERVER,
            f"waiting for {', '.join(waiting)} to become available",
        )
        return
    st["endpoint"] = endpoint_url(spec, owner)
    set_condition(
        st, Condition.SERVED, True, Reason.AVAILABLE, f"serving at {st['endpoint']}/v1", now, generation
    )
    if not spec.evaluation.enabled:
        _phase(st, Phase.SUCCEEDED, Reason.SERVING, f"model served at {st['endpoint']}")
        set_condition(st, Condition.READY, True, Reason.SERVING, "trained and serving", now, generation)
        return

    job = observed.eval_job
    rendered = render_eval_job(spec, owner)
    job_name = rendered["metadata"]["name"]
    if job is None:
        decision.actions.append(Create(rendered))
        _phase(st, Phase.EVALUATING, Reason.EVALUATING, f"created Job {job_name}")
        return
    if failed := condition_true(job, "Failed"):
        why = failed.get("message") or failed.get("reason", "")
        _absorb(
            decision, fail(st, Reason.EVALUATION_FAILED, f"Job {job_name} failed: {why}", now, generation)
        )
        return
    if not condition_true(job, "Complete"):
        if late := _eval_pending_too_long(spec, job, observed.pods, now):
            _absorb(decision, fail(st, Reason.PENDING_DEADLINE_EXCEEDED, late, now, generation))
            return
        _phase(st, Phase.EVALUATING, Reason.EVALUATING, f"waiting for Job {job_name}")
        return
    results = {}
    for variant in wanted:
        result = observed.eval_results.get(variant) or {}
        if not isinstance(result.get("overall"), int | float):
            msg = f"Job {job_name} completed but {result_uri(spec, variant)} has no 'overall' accuracy"
            _absorb(decision, fail(st, Reason.EVALUATION_FAILED, msg, now, generation))
            return
        results[variant] = result
    st["accuracy"] = {variant: _group_accuracy(result, "trained") for variant, result in results.items()}
    summary = ", ".join(f"{k} {v:.2f}%" for k, v in sorted(st["accuracy"].items()))
    untrained = _untrained(results)
    if untrained:
        st["untrainedAccuracy"] = untrained
        line = group_line("untrained", {**untrained, "count": untrained["questions"]})
        summary += f" on the trained categories; {line}"
    if "base" in wanted:
        # The base model was only needed for the "before" score: give its GPU back.
        decision.actions += [
            Delete("apps/v1", "Deployment", names.server_name(owner.name, "base")),
            Delete("v1", "Service", names.server_name(owner.name, "base")),
        ]
    metric = result_metric(results["finetuned"])
    _phase(
        st,
        Phase.SUCCEEDED,
        Reason.EVALUATED,
        f"VQA accuracy ({metric}): {summary}; serving at {st['endpoint']}",
    )
    set_condition(st, Condition.EVALUATED, True, Reason.COMPLETE, summary, now, generation)
    set_condition(
        st, Condition.READY, True, Reason.EVALUATED, "trained, evaluated and serving", now, generation
    )


def _group_accuracy(result: Mapping[str, Any], group: str) -> float:
    """A result's accuracy on the trained categories (the printer column); its overall accuracy when it
    marks no trained category or none of them was evaluated."""
    figures = (result.get("groups") or {}).get(group) or {}
    value = figures.get("accuracy") if figures.get("count") else None
    return round(float(value if isinstance(value, int | float) else result["overall"]), 2)


def _untrained(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """`status.untrainedAccuracy`: each model's accuracy on the evaluated categories not trained on,
    pooled over their questions, the change in percentage points and how many questions it rests on."""
    groups = {k: (r.get("groups") or {}).get("untrained") or {} for k, r in results.items()}
    if not all(g.get("count") and isinstance(g.get("accuracy"), int | float) for g in groups.values()):
        return None
    out: dict[str, Any] = {k: round(float(g["accuracy"]), 2) for k, g in groups.items()}
    out["questions"] = int(groups["finetuned"]["count"])
    out["delta"] = round(out["finetuned"] - out["base"], 2) if "base" in out else None
    return {k: v for k, v in out.items() if v is not None}


def _absorb(decision: Decision, failure: Decision) -> None:
    """A failed run creates nothing more: drop the actions decided so far, take the failure's status."""
    decision.actions.clear()
    decision.status = failure.status
    decision.events += failure.events


def _finish(old: Mapping[str, Any], decision: Decision) -> Decision:
    """One event per phase transition, so `kubectl describe` tells the run's story once."""
    new_phase = decision.status.get("phase")
    if new_phase and new_phase != old.get("phase") and new_phase != Phase.FAILED:
        decision.events.append(Event(EventType.NORMAL, new_phase, decision.status.get("message", new_phase)))
    return decision
