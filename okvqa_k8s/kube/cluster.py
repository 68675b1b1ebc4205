"""The one shape of every place a run can execute: a `Cluster` protocol and the `Run` it is asked about.

Modelled on the Kubeflow SDK's trainer backends (one `RuntimeBackend` base behind `TrainerClient`, with a
Kubernetes and a local-process implementation). The operator, `submit --no-operator` and `submit --local`
drive a run with the same `driver.step` and differ only in the `Cluster` they pass:

- `backends.kubernetes.KubernetesCluster`: the children are API objects; a FineTune's status and Events
  go to the API, a run without one (`--no-operator`) reports to the terminal.
- `backends.local.LocalCluster`: the children are local processes started from the rendered objects.

`decide` stays pure: a backend only observes, applies and reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from okvqa_k8s.kube.decide import Action, Event, Observed
from okvqa_k8s.kube.render import Owner


@dataclass(frozen=True)
class Run:
    """One run as the driver sees it: whose children, the spec document as submitted, the last status.

    `owner.uid` is set only when a FineTune object stands for the run (the operator); its children are
    then owned by it and its status and Events live on it.
    """

    owner: Owner
    spec: Mapping[str, Any]
    status: Mapping[str, Any] = field(default_factory=dict)
    generation: int | None = None

    def summary(self) -> str:
        """`name: Phase: message`, the line a run driven from the terminal ends with."""
        return f"{self.owner.name}: {self.status.get('phase')}: {self.status.get('message', '')}"


class Cluster(Protocol):
    """Where a run's children live, and where its status and story are told."""

    def observe(self, run: Run) -> Observed:
        """What exists now: the children by name, their pods, and the run's files in storage."""
        ...

    def apply(self, run: Run, action: Action) -> None:
        """Create or delete one child; raise `PermanentError` when it is refused for good."""
        ...

    def publish(self, run: Run, status: Mapping[str, Any]) -> bool:
        """Make the new status visible; False when the run is gone, so nothing more is reported."""
        ...

    def record(self, run: Run, event: Event) -> None:
        """Tell one step of the run's story (an Event on the FineTune, or a line on the terminal)."""
        ...
