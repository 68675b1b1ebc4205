"""Kubernetes side of okvqa-k8s: the FineTune CRD, pure renderers, the reconcile decision and the operator.

Everything that decides is pure (render.py, decide.py, schema.py); the Kubernetes API, storage reads and
processes stay in thin adapters (client.py, operator.py, local.py) so the decisions are unit-testable.
"""
