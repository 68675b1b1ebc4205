"""The reconcile decision, table-driven: (spec, status, observed children) → actions, phase, events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from okvqa_k8s.data.categories import CATEGORIES
from okvqa_k8s.kube.decide import Create, Delete, Foreign, Observed, decide, fail
from okvqa_k8s.kube.pods import JOB_NAME_LABEL, TIMESTAMP
from okvqa_k8s.kube.render import (
    Owner,
    render_configmap,
    render_eval_job,
    render_network_policy,
    render_pytorchjob,
    render_server,
)
from okvqa_k8s.spec import parse_spec

OWNER = Owner("run", "ns", "uid-1")
NOW = "2025-01-01T00:00:00Z"
SPEC = {"dataset": {"uri": "s3://bkt/data"}, "outputUri": "s3://bkt/runs/run"}
NO_BASE = {**SPEC, "evaluation": {"baseline": False}}
NO_EVAL = {**SPEC, "evaluation": {"enabled": False}}
NO_SERVE = {**SPEC, "inference": {"enabled": False}, "evaluation": {"enabled": False}}


def with_conditions(obj: dict[str, Any], **conds: str) -> dict[str, Any]:
    out = {
        **obj,
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": t, "message": m} for t, m in conds.items()]
        },
    }
    return out


def children(
    spec_doc: dict[str, Any],
    *,
    job: str | None = None,
    served: bool | None = None,
    evals: str | None = None,
    results: dict[str, float] | None = None,
) -> Observed:
    """Observed state of a run whose spec is `spec_doc`: job condition, servers ready?, eval jobs state."""
    spec = parse_spec(spec_doc)
    cm = render_configmap(spec, OWNER)
    pj = render_pytorchjob(spec, OWNER)
    if job:
        pj = with_conditions(pj, **{job: f"job {job}"})
    deployments, services, eval_job, policy = {}, {}, None, None
    wanted = ("finetuned", "base") if spec.evaluation.enabled and spec.evaluation.baseline else ("finetuned",)
    if served is not None:
        policy = render_network_policy(spec, OWNER)
        for v in wanted:
            d, s = render_server(spec, OWNER, v)
            d["status"] = {"availableReplicas": 1 if served else 0}
            deployments[v], services[v] = d, s
    if evals:
        j = render_eval_job(spec, OWNER)
        eval_job = with_conditions(j, **{evals: "eval " + evals}) if evals != "running" else j
    return Observed(
        configmap=cm,
        job=pj,
        deployments=deployments,
        services=services,
        network_policy=policy,
        eval_job=eval_job,
        eval_results={k: {"overall": v} for k, v in (results or {}).items()},
    )


def pod(
    name: str, reason: str, *, age: int = 0, container: str = "pytorch", init: bool = False
) -> dict[str, Any]:
    """A pod created `age` seconds before NOW whose container waits with `reason`."""
    created = (dt.datetime.strptime(NOW, TIMESTAMP) - dt.timedelta(seconds=age)).strftime(TIMESTAMP)
    waiting = {"reason": reason, "message": f"{reason} for the image"}
    status = {"name": container, "image": "registry.local/okvqa:x", "state": {"waiting": waiting}}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
        "spec": {"containers": [{"name": container, "image": "registry.local/okvqa:x"}]},
        "status": {key: [status]},
    }


def manifest(split: str = "val", **per_category: int) -> dict[str, Any]:
    """The part of a `data prepare` manifest.json the decision reads: questions per category name."""
    return {"counts": {split: {"questions": sum(per_category.values()), "per_category": per_category}}}


EVERY_CATEGORY = manifest(**{name: 3 for name in CATEGORIES.values()})
OTHER_DATASET = {"options": {"category_codes": ["other"]}, **manifest(Other=5)}


def with_pods(observed: Observed, *pods: dict[str, Any]) -> Observed:
    return replace(observed, pods=pods)


@dataclass
class Case:
    id: str
    spec: dict[str, Any]
    phase: str | None
    observed: Observed
    want_phase: str
    want_actions: list[str] = field(default_factory=list)  # "create Kind/name" | "delete Kind/name"
    want_events: list[str] = field(default_factory=list)  # reasons
    status: dict[str, Any] = field(default_factory=dict)


def describe(action: Create | Delete) -> str:
    if isinstance(action, Create):
        return f"create {action.obj['kind']}/{action.obj['metadata']['name']}"
    return f"delete {action.kind}/{action.name}"


CASES = [
    Case(
        "new run creates config and job",
        SPEC,
        None,
        Observed(),
        "Pending",
        ["create ConfigMap/run-spec", "create PyTorchJob/run"],
        ["Pending"],
    ),
    Case(
        "new run with its evaluation set and dataset read",
        SPEC,
        None,
        Observed(eval_set=EVERY_CATEGORY, dataset_manifest=OTHER_DATASET),
        "Pending",
        ["create ConfigMap/run-spec", "create PyTorchJob/run"],
        ["Pending"],
    ),
    Case(
        "a category asked for has no question: fail before any Job",
        SPEC,
        None,
        Observed(eval_set=manifest(Other=5, **{"Plants and Animals": 2})),
        "Failed",
        [],
        ["InvalidEvaluationSet"],
    ),
    Case(
        "the categories asked for are there",
        {**SPEC, "evaluation": {"categories": ["other", "eight"]}},
        None,
        Observed(eval_set=manifest(Other=5, **{"Plants and Animals": 2})),
        "Pending",
        ["create ConfigMap/run-spec", "create PyTorchJob/run"],
        ["Pending"],
    ),
    Case(
        "the evaluation set lacks the evaluation split",
        SPEC,
        None,
        Observed(eval_set=manifest("test", Other=5)),
        "Failed",
        [],
        ["InvalidEvaluationSet"],
    ),
    Case(
        "dataset prepared with other categories than marked trained",
        {**SPEC, "dataset": {"uri": "s3://bkt/data", "categories": ["eight"]}},
        None,
        Observed(eval_set=EVERY_CATEGORY, dataset_manifest=OTHER_DATASET),
        "Failed",
        [],
        ["InvalidEvaluationSet"],
    ),
    Case(
        "no evaluation, no evaluation set needed",
        NO_EVAL,
        None,
        Observed(eval_set=manifest(Other=5)),
        "Pending",
        ["create ConfigMap/run-spec", "create PyTorchJob/run"],
        ["Pending"],
    ),
    Case("crash after create: nothing twice", SPEC, None, children(SPEC), "Pending", [], ["Pending"]),
    Case("job running", SPEC, "Pending", children(SPEC, job="Running"), "Training", [], ["Training"]),
    Case("operator restart mid-training", SPEC, "Training", children(SPEC, job="Running"), "Training"),
    Case("job restarting stays training", SPEC, "Training", children(SPEC, job="Restarting"), "Training"),
    Case("job failed", SPEC, "Training", children(SPEC, job="Failed"), "Failed", [], ["TrainingFailed"]),
    Case(
        "job deleted under us",
        SPEC,
        "Training",
        replace(children(SPEC), job=None),
        "Failed",
        [],
        ["JobDeleted"],
        {"jobName": "run"},
    ),
    Case(
        "trained: serve both models",
        SPEC,
        "Training",
        children(SPEC, job="Succeeded"),
        "Serving",
        [
            "create NetworkPolicy/run-inference",
            "create Deployment/run-serve",
            "create Service/run-serve",
            "create Deployment/run-base",
            "create Service/run-base",
        ],
        ["Serving"],
    ),
    Case(
        "trained, no baseline",
        NO_BASE,
        "Training",
        children(NO_BASE, job="Succeeded"),
        "Serving",
        ["create NetworkPolicy/run-inference", "create Deployment/run-serve", "create Service/run-serve"],
        ["Serving"],
    ),
    Case("servers not ready yet", SPEC, "Serving", children(SPEC, job="Succeeded", served=False), "Serving"),
    Case(
        "servers ready: evaluate both",
        SPEC,
        "Serving",
        children(SPEC, job="Succeeded", served=True),
        "Evaluating",
        ["create Job/run-eval"],
        ["Evaluating"],
    ),
    Case(
        "evaluation running",
        SPEC,
        "Evaluating",
        children(SPEC, job="Succeeded", served=True, evals="running"),
        "Evaluating",
    ),
    Case(
        "evaluated: free the base model",
        SPEC,
        "Evaluating",
        children(
            SPEC, job="Succeeded", served=True, evals="Complete", results={"finetuned": 61.234, "base": 40}
        ),
        "Succeeded",
        ["delete Deployment/run-base", "delete Service/run-base"],
        ["Succeeded"],
    ),
    Case(
        "eval complete without result",
        SPEC,
        "Evaluating",
        children(SPEC, job="Succeeded", served=True, evals="Complete"),
        "Failed",
        [],
        ["EvaluationFailed"],
    ),
    Case(
        "eval job failed",
        SPEC,
        "Evaluating",
        children(SPEC, job="Succeeded", served=True, evals="Failed"),
        "Failed",
        [],
        ["EvaluationFailed"],
    ),
    Case(
        "no evaluation: serving is success",
        NO_EVAL,
        "Serving",
        children(NO_EVAL, job="Succeeded", served=True),
        "Succeeded",
        [],
        ["Succeeded"],
    ),
    Case(
        "no inference: trained is success",
        NO_SERVE,
        "Training",
        children(NO_SERVE, job="Succeeded"),
        "Succeeded",
        [],
        ["Succeeded"],
    ),
    Case("terminal stays put", SPEC, "Succeeded", children(SPEC, job="Succeeded"), "Succeeded"),
    Case(
        "server deleted while serving is recreated",
        NO_BASE,
        "Serving",
        replace(children(NO_BASE, job="Succeeded", served=True), deployments={}),
        "Serving",
        ["create Deployment/run-serve"],
    ),
    Case(
        "network policy deleted while serving is recreated",
        NO_EVAL,
        "Serving",
        replace(children(NO_EVAL, job="Succeeded", served=True), network_policy=None),
        "Succeeded",
        ["create NetworkPolicy/run-inference"],
        ["Succeeded"],
    ),
    Case(
        "config map deleted is recreated, job kept",
        SPEC,
        "Training",
        replace(children(SPEC, job="Running"), configmap=None),
        "Training",
        ["create ConfigMap/run-spec"],
    ),
    # pods that can never start: some waiting reasons are final, the others only after a grace period
    Case(
        "image never pulled: fail at once",
        SPEC,
        "Pending",
        with_pods(children(SPEC), pod("run-master-0", "ErrImageNeverPull")),
        "Failed",
        [],
        ["ImagePullFailed"],
    ),
    Case(
        "invalid image name: fail at once",
        SPEC,
        "Pending",
        with_pods(children(SPEC), pod("run-worker-0", "InvalidImageName")),
        "Failed",
        [],
        ["ImagePullFailed"],
    ),
    Case(
        "pull error within the grace period: keep waiting",
        SPEC,
        "Pending",
        with_pods(children(SPEC), pod("run-master-0", "ErrImagePull", age=60)),
        "Pending",
    ),
    Case(
        "back-off within the grace period: keep waiting",
        SPEC,
        "Pending",
        with_pods(children(SPEC), pod("run-master-0", "ImagePullBackOff", age=119)),
        "Pending",
    ),
    Case(
        "back-off past the grace period: fail",
        SPEC,
        "Pending",
        with_pods(children(SPEC), pod("run-master-0", "ImagePullBackOff", age=120)),
        "Failed",
        [],
        ["ImagePullFailed"],
    ),
    Case(
        "pull error past the grace period: fail",
        SPEC,
        "Training",
        with_pods(children(SPEC, job="Running"), pod("run-worker-0", "ErrImagePull", age=600)),
        "Failed",
        [],
        ["ImagePullFailed"],
    ),
    Case(
        "server's init container cannot pull: fail, create nothing more",
        NO_BASE,
        "Training",
        with_pods(
            children(NO_BASE, job="Succeeded"),
            pod("run-serve-5d8f-x", "ErrImageNeverPull", container="fetch-model", init=True),
        ),
        "Failed",
        [],
        ["ImagePullFailed"],
    ),
    Case(
        "other waiting reasons are not pull failures",
        SPEC,
        "Pending",
        with_pods(children(SPEC), pod("run-master-0", "ContainerCreating", age=600)),
        "Pending",
    ),
    Case(
        "a finished run ignores its pods",
        SPEC,
        "Succeeded",
        with_pods(children(SPEC, job="Succeeded"), pod("run-serve-x", "ErrImageNeverPull")),
        "Succeeded",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    status = {**case.status, **({"phase": case.phase} if case.phase else {})}
    decision = decide(OWNER, case.spec, status, case.observed, NOW, generation=1)
    assert decision.status["phase"] == case.want_phase, decision.status.get("message")
    assert [describe(a) for a in decision.actions] == case.want_actions
    assert [e.reason for e in decision.events] == case.want_events
    if case.want_phase == "Failed":
        assert decision.status["reason"] in case.want_events and decision.status["message"]
        assert all(e.type == "Warning" for e in decision.events)


def test_decision_is_idempotent() -> None:
    """Applying a decision and deciding again yields no actions and no events (level-triggered)."""
    observed = children(SPEC, job="Running")
    first = decide(OWNER, SPEC, {"phase": "Pending"}, observed, NOW, 1)
    again = decide(OWNER, SPEC, first.status, observed, "2025-01-01T00:05:00Z", 1)
    assert again.actions == [] and again.events == [] and again.status == first.status


def test_success_status_has_accuracy_endpoint_model() -> None:
    observed = children(
        SPEC, job="Succeeded", served=True, evals="Complete", results={"finetuned": 61.234, "base": 40.0}
    )
    st = decide(OWNER, SPEC, {"phase": "Evaluating"}, observed, NOW, 3).status
    assert st["accuracy"] == {"finetuned": 61.23, "base": 40.0}
    assert st["endpoint"] == "http://run-serve.ns.svc:8000"
    assert st["modelUri"] == "s3://bkt/runs/run/merged" and st["jobName"] == "run"
    assert st["observedGeneration"] == 3
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {
        "SpecAccepted": "True",
        "Trained": "True",
        "Served": "True",
        "Evaluated": "True",
        "Ready": "True",
    }


def test_a_missing_category_is_named_in_the_failure() -> None:
    observed = Observed(eval_set=manifest(Other=5, **{"Plants and Animals": 2}))
    spec = {**SPEC, "evaluation": {"categories": ["other", "ten", "Science and Technology"]}}
    st = decide(OWNER, spec, None, observed, NOW, 1).status
    assert st["phase"] == "Failed" and st["reason"] == "InvalidEvaluationSet"
    assert st["message"] == (
        "evaluation.categories: no questions for 'Science and Technology', 'Weather and Climate' in the "
        "evaluation set s3://bkt/data/eval (split val: Plants and Animals 2, Other 5); prepare it with those "
        "categories (`data prepare --eval-category`) or evaluate only the categories it has"
    )


def _results(overall: float, trained: tuple[float, int], untrained: tuple[float, int]) -> dict[str, Any]:
    return {
        "metric": "official",
        "overall": overall,
        "trained_categories": ["Other"],
        "groups": {
            "trained": {"accuracy": trained[0], "count": trained[1], "categories": ["Other"]},
            "untrained": {
                "accuracy": untrained[0],
                "count": untrained[1],
                "categories": ["Cooking and Food"],
            },
        },
    }


def test_status_carries_trained_and_untrained_accuracy() -> None:
    observed = replace(
        children(SPEC, job="Succeeded", served=True, evals="Complete"),
        eval_results={"finetuned": _results(50.0, (65.7, 263), (3.1, 337)),
                      "base": _results(2.0, (0.0, 263), (4.33, 337))},
    )  # fmt: skip
    st = decide(OWNER, SPEC, {"phase": "Evaluating"}, observed, NOW, 3).status
    # the printer column keeps showing the trained categories' accuracy
    assert st["accuracy"] == {"finetuned": 65.7, "base": 0.0}
    assert st["untrainedAccuracy"] == {"finetuned": 3.1, "base": 4.33, "delta": -1.23, "questions": 337}
    assert st["message"] == (
        "VQA accuracy (official): base 0.00%, finetuned 65.70% on the trained categories; "
        "untrained categories: Δ \u22121.2 pp on 337 questions; serving at http://run-serve.ns.svc:8000"
    )
    # without a baseline: the fine-tuned figure alone
    observed = replace(
        children(NO_BASE, job="Succeeded", served=True, evals="Complete"),
        eval_results={"finetuned": _results(50.0, (65.7, 263), (3.1, 337))},
    )
    st = decide(OWNER, NO_BASE, {"phase": "Evaluating"}, observed, NOW, 3).status
    assert st["untrainedAccuracy"] == {"finetuned": 3.1, "questions": 337}
    assert "untrained categories: 3.10% on 337 questions" in st["message"]


def test_progress_and_checkpoint_from_storage() -> None:
    observed = replace(
        children(SPEC, job="Running"),
        progress={"step": 7, "total_steps": 40, "loss": 1.25},
        checkpoint_uri="s3://bkt/runs/run/checkpoints/checkpoint-5",
    )
    st = decide(OWNER, SPEC, {"phase": "Training"}, observed, NOW).status
    assert st["progress"] == "7/40" and st["loss"] == 1.25
    assert st["checkpointUri"].endswith("checkpoint-5")


def test_spec_change_during_training_is_refused_once_and_run_keeps_accepted_spec() -> None:
    observed = children(SPEC, job="Running")
    changed = {**SPEC, "nodes": 4}
    first = decide(OWNER, changed, {"phase": "Training"}, observed, NOW, 2)
    assert first.actions == []  # nothing deleted or re-created: no silent restart
    cond = next(c for c in first.status["conditions"] if c["type"] == "SpecAccepted")
    assert cond["status"] == "False" and cond["reason"] == "ChangeRefused" and "resubmit" in cond["message"]
    assert [e.reason for e in first.events] == ["SpecChangeRefused"]
    assert first.status["specHash"] == decide(OWNER, SPEC, {}, observed, NOW).status["specHash"]
    second = decide(OWNER, changed, first.status, observed, NOW, 2)
    assert second.events == []
    # serving after the refused change uses the accepted spec (1 node), not the edited one
    done = children(SPEC, job="Succeeded")
    serving = decide(OWNER, {**SPEC, "inference": {"port": 9999}}, first.status, done, NOW, 3)
    deployment = next(a.obj for a in serving.actions if a.obj["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 8000
    # reverting the edit clears the refusal
    reverted = decide(OWNER, SPEC, first.status, observed, NOW, 4)
    assert next(c for c in reverted.status["conditions"] if c["type"] == "SpecAccepted")["status"] == "True"


def test_invalid_spec_fails_with_every_field_and_recovers_when_fixed() -> None:
    bad = {**SPEC, "nodes": 0, "lora": {"r": 0}}
    failed = decide(OWNER, bad, {}, Observed(), NOW)
    assert failed.status["phase"] == "Failed" and failed.status["reason"] == "InvalidSpec"
    assert "nodes" in failed.status["message"] and "lora.r" in failed.status["message"]
    assert failed.actions == []
    fixed = decide(OWNER, SPEC, failed.status, Observed(), NOW)
    assert fixed.status["phase"] == "Pending" and len(fixed.actions) == 2


def test_condition_transition_time_moves_only_on_flip() -> None:
    observed = children(SPEC, job="Running")
    first = decide(OWNER, SPEC, {}, observed, "t1").status
    second = decide(OWNER, SPEC, first, observed, "t2").status
    assert {c["type"]: c["lastTransitionTime"] for c in second["conditions"]} == {
        "SpecAccepted": "t1",
        "Trained": "t1",
    }


def test_fail_helper_for_refused_objects() -> None:
    d = fail({"phase": "Training"}, "CreateFailed", "PyTorchJob run: forbidden", NOW, 1)
    assert d.status["phase"] == "Failed" and [e.type for e in d.events] == ["Warning"]
    assert fail(d.status, "CreateFailed", "again", NOW, 1).events == []


def test_image_pull_failure_names_pod_container_and_image() -> None:
    observed = with_pods(
        children(SPEC, job="Running"),
        pod("run-worker-0", "ContainerCreating"),
        pod("run-master-0", "ImagePullBackOff", age=300),
    )
    st = decide(OWNER, SPEC, {"phase": "Training"}, observed, NOW, 1).status
    assert st["phase"] == "Failed" and st["reason"] == "ImagePullFailed"
    assert st["message"] == (
        "pod ns/run-master-0 container pytorch: image 'registry.local/okvqa:x' cannot be pulled "
        "(ImagePullBackOff: ImagePullBackOff for the image)"
    )
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ImagePullFailed"


SECRET_SPEC = {**SPEC, "storage": {"credentialsSecret": "s3-keys"}}
BOTH_KEYS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})


@pytest.mark.parametrize(
    ("secret_keys", "want_phase", "want_message"),
    [
        (None, "Pending", None),  # not readable from here: nothing refused
        ({"s3-keys": BOTH_KEYS | {"extra"}}, "Pending", None),
        (
            {},
            "Failed",
            "storage.credentialsSecret: Secret ns/s3-keys not found "
            "(the pods read AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY from it)",
        ),
        (
            {"s3-keys": frozenset({"AWS_ACCESS_KEY_ID"})},
            "Failed",
            "storage.credentialsSecret: Secret ns/s3-keys has no key AWS_SECRET_ACCESS_KEY",
        ),
    ],
)
def test_a_missing_secret_or_key_fails_the_run_before_anything_is_created(
    secret_keys: dict[str, frozenset[str]] | None, want_phase: str, want_message: str | None
) -> None:
    decision = decide(OWNER, SECRET_SPEC, None, Observed(secret_keys=secret_keys), NOW, 1)
    assert decision.status["phase"] == want_phase
    if want_message is None:
        assert [describe(a) for a in decision.actions] == [
            "create ConfigMap/run-spec",
            "create PyTorchJob/run",
        ]
        return
    assert decision.actions == []
    assert decision.status["reason"] == "SecretNotFound" and decision.status["message"] == want_message
    assert [e.reason for e in decision.events] == ["SecretNotFound"]


def test_a_pod_that_kubelet_cannot_configure_fails_the_run_after_the_grace_period() -> None:
    """A Secret deleted after the run started: CreateContainerConfigError is retried by kubelet for ever."""
    stuck = pod("run-serve-abc", "CreateContainerConfigError", age=30, container="server")
    stuck["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = 'secret "s3-keys" not found'
    observed = with_pods(children(SPEC, job="Succeeded", served=False), stuck)
    assert decide(OWNER, SPEC, {"phase": "Serving"}, observed, NOW, 1).status["phase"] == "Serving"
    stuck["metadata"]["creationTimestamp"] = "2024-12-31T23:50:00Z"
    st = decide(OWNER, SPEC, {"phase": "Serving"}, observed, NOW, 1).status
    assert (st["phase"], st["reason"]) == ("Failed", "SecretNotFound")
    assert st["message"] == 'pod ns/run-serve-abc container server: secret "s3-keys" not found'
    stuck["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = 'configmap "x" not found'
    assert (
        decide(OWNER, SPEC, {"phase": "Serving"}, observed, NOW, 1).status["reason"] == "ContainerConfigError"
    )


def pending_job(created: str, spec_doc: dict[str, Any] = SPEC, **extra: Any) -> Observed:
    observed = children(spec_doc)
    job = {**observed.job, "metadata": {**observed.job["metadata"], "creationTimestamp": created}, **extra}
    unscheduled = {
        "metadata": {"name": "run-master-0", "namespace": "ns"},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ]
        },
    }
    return replace(observed, job=job, pods=(unscheduled,))


def test_a_run_pending_past_its_deadline_fails_naming_why_its_pods_wait() -> None:
    just_in_time = decide(OWNER, SPEC, {"phase": "Pending"}, pending_job("2024-12-31T23:00:01Z"), NOW, 1)
    assert just_in_time.status["phase"] == "Pending"
    late = decide(OWNER, SPEC, {"phase": "Pending"}, pending_job("2024-12-31T23:00:00Z"), NOW, 1)
    assert (late.status["phase"], late.status["reason"]) == ("Failed", "PendingDeadlineExceeded")
    assert late.status["message"] == (
        "PyTorchJob run is not running 3600 s after it was created (pendingDeadlineSeconds 3600): "
        "run-master-0: Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    )
    never = {**SPEC, "pendingDeadlineSeconds": 0}
    assert (
        decide(OWNER, never, {"phase": "Pending"}, pending_job("2024-01-01T00:00:00Z", never), NOW, 1).status[
            "phase"
        ]
        == "Pending"
    )


def test_an_evaluation_job_that_never_starts_a_pod_fails_at_the_deadline() -> None:
    """An eval Job whose pod cannot be scheduled reports nothing itself: the run would stay Evaluating."""
    observed = children(SPEC, job="Succeeded", served=True, evals="running")
    job_name = observed.eval_job["metadata"]["name"]
    unscheduled = {
        "metadata": {"name": f"{job_name}-x7k", "namespace": "ns", "labels": {JOB_NAME_LABEL: job_name}},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
            ],
        },
    }
    training_pod = pod("run-master-0", "ErrImagePull")  # another component's pod: not the Job's

    def at(created: str, *pods: dict[str, Any]) -> dict[str, Any]:
        job = {
            **observed.eval_job,
            "metadata": {**observed.eval_job["metadata"], "creationTimestamp": created},
        }
        return decide(
            OWNER, SPEC, {"phase": "Evaluating"}, replace(observed, eval_job=job, pods=pods), NOW, 1
        ).status

    assert at("2024-12-31T23:00:01Z", unscheduled)["phase"] == "Evaluating"
    late = at("2024-12-31T23:00:00Z", unscheduled)
    assert (late["phase"], late["reason"]) == ("Failed", "PendingDeadlineExceeded")
    assert late["message"] == (
        f"Job {job_name} has started no pod 3600 s after it was created (pendingDeadlineSeconds 3600): "
        f"{job_name}-x7k: Unschedulable: 0/3 nodes"
    )
    assert "no pod was created" in at("2024-12-31T23:00:00Z", training_pod)["message"]
    ran = {**unscheduled, "status": {"phase": "Failed"}}  # a pod that ran once is progress
    assert at("2024-12-01T00:00:00Z", ran, unscheduled)["phase"] == "Evaluating"


def test_time_held_by_a_queue_does_not_count_towards_the_pending_deadline() -> None:
    """Kueue suspends a PyTorchJob until it has quota: waiting then is not a stall; the clock starts
    when the job is resumed."""
    old = "2024-12-01T00:00:00Z"
    suspended = pending_job(old, spec={"runPolicy": {"suspend": True}})
    assert decide(OWNER, SPEC, {"phase": "Pending"}, suspended, NOW, 1).status["phase"] == "Pending"
    resumed_cond = {"type": "Suspended", "status": "False", "lastTransitionTime": "2024-12-31T23:30:00Z"}
    resumed = pending_job(old, status={"conditions": [resumed_cond]})
    assert decide(OWNER, SPEC, {"phase": "Pending"}, resumed, NOW, 1).status["phase"] == "Pending"
    resumed_cond["lastTransitionTime"] = "2024-12-31T22:00:00Z"
    st = decide(OWNER, SPEC, {"phase": "Pending"}, resumed, NOW, 1).status
    assert st["reason"] == "PendingDeadlineExceeded" and "7200 s after it was resumed" in st["message"]


def test_children_owned_by_someone_else_are_refused_not_adopted() -> None:
    leftover = Foreign("PyTorchJob", "run", "FineTune", "run")
    waiting = decide(OWNER, SPEC, None, Observed(foreign=(leftover,)), NOW, 1)
    assert waiting.actions == [] and waiting.status["phase"] == "Pending"
    assert (
        waiting.status["reason"] == "NotOwned"
        and "waiting for the garbage collector" in waiting.status["message"]
    )
    ready = next(c for c in waiting.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NotOwned")

    for stranger, owned_by in [
        (Foreign("Deployment", "run-serve"), "nobody"),
        (Foreign("PyTorchJob", "run", "FineTune", "another"), "FineTune another"),
    ]:
        refused = decide(OWNER, SPEC, {"phase": "Training"}, Observed(foreign=(leftover, stranger)), NOW, 1)
        assert refused.actions == [] and refused.status["phase"] == "Failed"
        assert refused.status["reason"] == "NotOwned" and [e.reason for e in refused.events] == ["NotOwned"]
        assert f"{stranger.kind} ns/{stranger.name} is owned by {owned_by}" in refused.status["message"]
    # a run without a FineTune (--no-operator) never waits for a FineTune's objects: it refuses them
    no_operator = decide(Owner("run", "ns"), SPEC, None, Observed(foreign=(leftover,)), NOW, 1)
    assert no_operator.status["reason"] == "NotOwned" and no_operator.status["phase"] == "Failed"
