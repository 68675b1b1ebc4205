"""Names and labels of a run's objects, derived from the FineTune name alone.

Every child is found again by name (not by listing), which is what makes a reconcile after an operator
restart create nothing twice; so the names are a pure function of the FineTune's name.
"""

from __future__ import annotations

import re

from okvqa_k8s.errors import UserError

GROUP = "okvqa.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTune"
PLURAL = "finetunes"
SINGULAR = "finetune"
SHORT_NAMES = ["ft"]
RUN_LABEL = f"{GROUP}/run"
COMPONENT_LABEL = "app.kubernetes.io/component"
# The Kubeflow training operator labels every pod of a PyTorchJob with the job's name.
TRAINING_JOB_LABEL = "training.kubeflow.org/job-name"

# The training operator names pods `<job>-worker-<i>` and Services after them (DNS-1035, 63 chars);
# 40 leaves room for the longest suffix we add plus `-worker-NNN`.
MAX_NAME = 40
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_name(name: str) -> str:
    """Refuse names the training operator's webhook or Service naming would reject later."""
    if not name or len(name) > MAX_NAME or not _DNS1035.match(name):
        raise UserError(
            f"run name {name!r}: expected a DNS-1035 label (lower-case letters, digits and '-', starting "
            f"with a letter, ending with a letter or digit) of at most {MAX_NAME} characters"
        )
    return name


def job_name(run: str) -> str:
    return run


def configmap_name(run: str) -> str:
    return f"{run}-spec"


def server_name(run: str, variant: str = "finetuned") -> str:
    """Deployment and Service of one served model; `base` serves the untouched checkpoint."""
    return f"{run}-serve" if variant == "finetuned" else f"{run}-base"


def network_policy_name(run: str) -> str:
    """The NetworkPolicy admitting the run's clients to both served models."""
    return f"{run}-inference"


def eval_job_name(run: str) -> str:
    return f"{run}-eval"


def labels(run: str, component: str) -> dict[str, str]:
    """Recommended `app.kubernetes.io/*` labels plus the run label every child is selected by."""
    return {
        "app.kubernetes.io/name": "okvqa",
        "app.kubernetes.io/instance": run,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/part-of": "okvqa-k8s",
        "app.kubernetes.io/managed-by": "okvqa-k8s",
        RUN_LABEL: run,
    }


def selector(run: str, component: str) -> dict[str, str]:
    """The immutable subset used in Deployment selectors (labels may grow, selectors must not)."""
    return {"app.kubernetes.io/instance": run, COMPONENT_LABEL: component, RUN_LABEL: run}
