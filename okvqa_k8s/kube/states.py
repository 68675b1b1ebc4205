"""The vocabulary of a FineTune's status: phases, reasons, condition types and event types.

Each is a `StrEnum`, so a member *is* its string: the status JSON, the Events and `kubectl get` read
exactly as before, while a misspelt reason in the code is an AttributeError instead of a silent new word.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a run is: Pending → (Queued →) Training → Serving → Evaluating → Succeeded, or Failed from
    anywhere. Queued: a run with `spec.queue` waits for Kueue to admit its PyTorchJob (also after a
    preemption)."""

    PENDING = "Pending"
    QUEUED = "Queued"
    TRAINING = "Training"
    SERVING = "Serving"
    EVALUATING = "Evaluating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED})
ACTIVE = frozenset(Phase) - TERMINAL


class Reason(StrEnum):
    """Machine-readable causes: of the current phase (`status.reason`), of a condition, of an Event."""

    # why the run is in its phase
    JOB_CREATED = "JobCreated"
    JOB_RUNNING = "JobRunning"
    QUEUED = "Queued"
    PREEMPTED = "Preempted"
    TRAINED = "Trained"
    WAITING_FOR_SERVER = "WaitingForServer"
    SERVING = "Serving"
    EVALUATING = "Evaluating"
    EVALUATED = "Evaluated"
    # why it failed
    INVALID_SPEC = "InvalidSpec"
    INVALID_EVALUATION_SET = "InvalidEvaluationSet"
    SECRET_NOT_FOUND = "SecretNotFound"
    PENDING_DEADLINE_EXCEEDED = "PendingDeadlineExceeded"
    CONTAINER_CONFIG_ERROR = "ContainerConfigError"
    NOT_OWNED = "NotOwned"
    JOB_DELETED = "JobDeleted"
    TRAINING_FAILED = "TrainingFailed"
    IMAGE_PULL_FAILED = "ImagePullFailed"
    SERVING_FAILED = "ServingFailed"
    EVALUATION_FAILED = "EvaluationFailed"
    CREATE_FAILED = "CreateFailed"
    DELETE_FAILED = "DeleteFailed"
    QUEUE_NOT_FOUND = "QueueNotFound"
    INADMISSIBLE = "Inadmissible"
    QUEUEING_UNAVAILABLE = "QueueingUnavailable"
    # conditions
    ACCEPTED = "Accepted"
    CHANGE_REFUSED = "ChangeRefused"
    PENDING = "Pending"
    RUNNING = "Running"
    JOB_FAILED = "JobFailed"
    JOB_SUCCEEDED = "JobSucceeded"
    ADMITTED = "Admitted"
    AVAILABLE = "Available"
    COMPLETE = "Complete"
    # an Event without a phase change
    SPEC_CHANGE_REFUSED = "SpecChangeRefused"


class Condition(StrEnum):
    """The condition types of `status.conditions` (Ready summarises the others)."""

    SPEC_ACCEPTED = "SpecAccepted"
    ADMITTED = "Admitted"
    TRAINED = "Trained"
    SERVED = "Served"
    EVALUATED = "Evaluated"
    READY = "Ready"


class EventType(StrEnum):
    """core/v1 Event types."""

    NORMAL = "Normal"
    WARNING = "Warning"
