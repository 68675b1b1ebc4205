"""Kueue v0.17 (job queueing, quota, admission) with the `kubeflow.org/pytorchjob` integration.

Its CRDs and webhook manifests are the release's own, copied from the Go module that was built
(k8s/testenv/build.sh), so they always match the binary. Reached by URL like the training operator's
webhook: the API server dials 127.0.0.1, where Kueue runs as a process. Kueue's cert rotator (internal
certificate management, as in a real install) keeps the pre-made pair in its Secret because it verifies
for `kueue-webhook-service.kueue-system.svc`, injects its CA into the webhook configurations and the
conversion webhooks of its CRDs, and writes the pair into this cluster's own certificate directory.
Only the webhooks of Kueue's own kinds and of PyTorchJobs are registered: a webhook of an integration
that is not enabled (Jobs, Pods, Deployments) is not served, and would refuse every such object.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from okvqa_testenv.api import Api
from okvqa_testenv.pki import namespace_with_secret, webhook_pair

BINARY = "kueue"
PORTS = ("kueue_webhook", "kueue_health", "kueue_metrics")
GROUP = "kueue.x-k8s.io"
NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"
SECRET = "kueue-webhook-server-cert"
CA_NAME = "kueue-ca"  # fixed in Kueue's pkg/util/cert
# The rotator derives these from the Service name (`<base>-{mutating,validating}-webhook-configuration`).
MUTATING = "kueue-mutating-webhook-configuration"
VALIDATING = "kueue-validating-webhook-configuration"
CRD_DIR = "kueue-crds"
CRDS = tuple(
    f"{CRD_DIR}/kueue.x-k8s.io_{kind}.yaml"
    for kind in (
        "admissionchecks",
        "clusterqueues",
        "cohorts",
        "localqueues",
        "multikueueclusters",
        "multikueueconfigs",
        "provisioningrequestconfigs",
        "resourceflavors",
        "topologies",
        "workloadpriorityclasses",
        "workloads",
    )
)
WEBHOOK_MANIFESTS = "kueue-webhooks/manifests.yaml"
# The CRDs whose conversion webhook Kueue's rotator injects its CA into (it fails without one).
CONVERTED = ("clusterqueues", "cohorts", "localqueues", "multikueueclusters", "workloads")
INTEGRATIONS = ("kubeflow.org/pytorchjob",)
_SERVED = {(GROUP, r) for r in ("clusterqueues", "cohorts", "resourceflavors", "workloads")}
_SERVED |= {(GROUP, "workloads/status")}
_SERVED |= {("kubeflow.org", "pytorchjobs")}
REQUIRED = (*CRDS, WEBHOOK_MANIFESTS)


def webhook_certs() -> dict[str, bytes]:
    """Kueue's webhook CA and serving pair, made once per machine and user (pki.webhook_pair)."""
    return webhook_pair("okvqa-k8s-testenv-kueue-webhook", CA_NAME, f"{SERVICE}.{NAMESPACE}.svc")


def crds(binaries: Path, certs: dict[str, bytes], webhook_port: int) -> list[dict[str, Any]]:
    """The release's CRDs; those Kueue converts get their conversion webhook by URL."""
    out = []
    for name in CRDS:
        crd = yaml.safe_load((binaries / name).read_text())
        if crd["spec"]["names"]["plural"] in CONVERTED:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": _client_config(certs, webhook_port, "/convert"),
                },
            }
        out.append(crd)
    return out


def bootstrap_objects(
    binaries: Path, certs: dict[str, bytes], webhook_port: int
) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object): Kueue's namespace, its certificate Secret and webhook registrations."""
    objects = namespace_with_secret(NAMESPACE, SECRET, certs)
    names = {"MutatingWebhookConfiguration": MUTATING, "ValidatingWebhookConfiguration": VALIDATING}
    for manifest in yaml.safe_load_all((binaries / WEBHOOK_MANIFESTS).read_text()):
        if not manifest:
            continue
        webhooks = []
        for webhook in manifest["webhooks"]:
            if not all(
                (group, resource) in _SERVED
                for rule in webhook["rules"]
                for group in rule["apiGroups"]
                for resource in rule["resources"]
            ):
                continue
            path = webhook["clientConfig"]["service"]["path"]
            webhooks.append({**webhook, "clientConfig": _client_config(certs, webhook_port, path)})
        kind = manifest["kind"]
        manifest = {**manifest, "metadata": {"name": names[kind]}, "webhooks": webhooks}
        objects.append((f"/apis/admissionregistration.k8s.io/v1/{kind.lower()}s", manifest))
    return objects


def write_config(path: Path, ports: dict[str, int], cert_dir: Path) -> Path:
    """Kueue's Configuration: webhooks on 127.0.0.1 from `cert_dir`, the PyTorchJob integration only."""
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['kueue_health']}"},
        "metrics": {"bindAddress": f"127.0.0.1:{ports['kueue_metrics']}"},
        "webhook": {"host": "127.0.0.1", "port": ports["kueue_webhook"], "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {
            "enable": True,
            "webhookServiceName": SERVICE,
            "webhookSecretName": SECRET,
        },
        "integrations": {"frameworks": list(INTEGRATIONS)},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def admits(api: Api) -> bool:
    """Whether Kueue's webhooks answer: a dry-run ResourceFlavor goes through its mutating webhook (which
    Kueue serves only after its readiness probe already says ready)."""
    flavor = {"apiVersion": f"{GROUP}/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "probe"}}
    try:
        status, _ = api.request("POST", f"/apis/{GROUP}/v1beta2/resourceflavors?dryRun=All", flavor)
    except OSError:
        return False
    return status in (200, 201)


def argv(binary: str, config: Path) -> list[str]:
    # Its visibility API (queue positions) is an aggregated API server that authenticates the API
    # server's requests with in-cluster credentials, which a process outside a pod has not: Kueue exits.
    return [binary, f"--config={config}", "--feature-gates=VisibilityOnDemand=false"]


def _client_config(certs: dict[str, bytes], port: int, path: str) -> dict[str, str]:
    return {"url": f"https://127.0.0.1:{port}{path}", "caBundle": base64.b64encode(certs["ca.crt"]).decode()}
