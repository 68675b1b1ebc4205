"""Kubernetes side of okvqa-k8s: the FineTune CRD, pure renderers, the reconcile decision and the operator.

Everything that decides is pure (render.py, decide.py, pods.py, schema.py). One driver (driver.py: `step`,
`until_terminal`) runs observe → decide → apply → publish over a `Cluster` (cluster.py), implemented on
the Kubernetes API and on local processes (backends/); the operator, `submit --no-operator` and
`submit --local` differ only in the backend they pass. See docs/architecture.md.
"""
