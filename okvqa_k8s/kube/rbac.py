"""The exact API permissions the operator uses, as data: the chart's ClusterRole mirrors these rules and a
test compares the two, so least privilege is checked rather than hoped for.

Derived from what the operator does (operator.py, backends/kubernetes.py, observe.py): watch + read
FineTunes and write only their status; create/read/delete the children it owns (the NetworkPolicy
guarding the servers among them); list the run's pods (to notice an image that cannot be pulled; never
watched, the resync finds them) and Kueue's Workloads (why a queued run waits; read-only, Kueue owns
them); post Events. kopf's
cluster scanning is disabled, so no namespace or CRD listing is needed.
Secrets: `get` only (no list, no watch), to check before creating anything that the Secrets the pods
will read exist and hold the keys they name (observe.py keeps the key names and drops the values);
storage credentials come from the operator's own environment.
`finetunes/finalizers` update: the children's ownerReferences set `blockOwnerDeletion: true`, which the
OwnerReferencesPermissionEnforcement admission plugin (on by default in OpenShift) only allows to whoever
may update the owner's finalizers; without it every create is refused with 403 there.
"""

from __future__ import annotations

from okvqa_k8s.kube import names

READ = ["get", "list", "watch"]

OPERATOR_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [names.GROUP], "resources": [names.PLURAL], "verbs": READ},
    {
        "apiGroups": [names.GROUP],
        "resources": [f"{names.PLURAL}/status"],
        "verbs": ["get", "update", "patch"],
    },
    {"apiGroups": [names.GROUP], "resources": [f"{names.PLURAL}/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"], "verbs": [*READ, "create", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": [*READ, "create", "delete"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": [*READ, "create", "delete"]},
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["get", "create", "delete"],
    },
    {"apiGroups": [""], "resources": ["configmaps", "services"], "verbs": ["get", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
]
