"""`Cluster` on the Kubernetes API: children are API objects, a FineTune's status and Events live on it.

The operator runs each FineTune through this backend (`load` reads the run from its FineTune);
`submit --no-operator` passes a run without a FineTune, whose children are unowned and whose story is
told on the terminal instead (`echo`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from okvqa_k8s.kube import names
from okvqa_k8s.kube.client import ApiError, Kube
from okvqa_k8s.kube.cluster import Run
from okvqa_k8s.kube.decide import Action, Create, Event, Observed
from okvqa_k8s.kube.observe import RunFiles, observe
from okvqa_k8s.kube.render import Owner

log = logging.getLogger("okvqa.operator")


@dataclass
class KubernetesCluster:
    """One API server (any namespace: each run's owner names its own)."""

    kube: Kube
    files: RunFiles = field(default_factory=RunFiles)
    # Where a run without a FineTune (`--no-operator`) reports its Events; the status stays with the driver.
    echo: Callable[[str], None] = log.info

    def load(self, namespace: str, name: str) -> Run | None:
        """The run a FineTune stands for, or None when it is gone or being deleted."""
        fine_tune = self.kube.get(names.API_VERSION, names.KIND, namespace, name)
        if fine_tune is None or fine_tune["metadata"].get("deletionTimestamp"):
            return None
        meta = fine_tune["metadata"]
        return Run(
            owner=Owner(name, namespace, meta["uid"]),
            spec=fine_tune.get("spec") or {},
            status=fine_tune.get("status") or {},
            generation=meta.get("generation"),
        )

    def observe(self, run: Run) -> Observed:
        return observe(self.kube, self.files, run, secrets=True)

    def apply(self, run: Run, action: Action) -> None:
        """Create (an existing object is left as it is) or delete one child."""
        if isinstance(action, Create):
            _, created = self.kube.create(action.obj)
            if created:
                log.info(
                    "%s/%s: created %s %s",
                    run.owner.namespace,
                    run.owner.name,
                    action.obj["kind"],
                    action.obj["metadata"]["name"],
                )
        else:
            self.kube.delete(action.api_version, action.kind, run.owner.namespace, action.name)

    def publish(self, run: Run, status: Mapping[str, Any]) -> bool:
        """Write the FineTune's status (409 conflicts re-read and retried); False when it is gone.

        A run without a FineTune has nowhere to publish: its status is what the driver holds.
        """
        if run.owner.uid is None:
            return True
        uid = run.owner.uid

        def compute(current: dict[str, Any]) -> dict[str, Any] | None:
            return dict(status) if current["metadata"]["uid"] == uid else None  # not a same-named successor

        try:
            self.kube.patch_status(run.owner.namespace, run.owner.name, compute)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return False
        return True

    def record(self, run: Run, event: Event) -> None:
        """A core/v1 Event on the FineTune (`kubectl describe`), or a line for a run without one."""
        if run.owner.uid is None:
            self.echo(f"{event.type} {event.reason}: {event.message}")
            return
        involved = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": run.owner.name, "namespace": run.owner.namespace, "uid": run.owner.uid},
        }
        try:
            self.kube.event(involved, event.type, event.reason, event.message)
        except ApiError as exc:  # an event is a courtesy: never fail the step over it
            log.warning("cannot record event %s on %s: %s", event.reason, run.owner.name, exc)
