"""The Kubeflow training operator v1 with its validating admission webhook, reached by URL.

Why by URL: the API server dials the webhook on 127.0.0.1, where the operator runs as a process; no
Service network has to route a Service reference to it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from okvqa_testenv.pki import mount_pair, namespace_with_secret, webhook_pair

PYTORCHJOB_CRD = "kubeflow.org_pytorchjobs.yaml"
# The training operator manages its webhook certificate through these fixed names (pkg/cert in v1.9).
NAMESPACE = "kubeflow"
WEBHOOK_SECRET = "training-operator-webhook-cert"
WEBHOOK_CONFIGURATION = "validator.training-operator.kubeflow.org"
WEBHOOK_DNS_NAME = "training-operator.kubeflow.svc"
WEBHOOK_CA_NAME = "training-operator-ca"
PYTORCHJOB_WEBHOOK_PATH = "/validate-kubeflow-org-v1-pytorchjob"
CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # hard-coded in the operator


def webhook_certs() -> dict[str, bytes]:
    """The webhook's CA and serving pair (pki.webhook_pair), put where the operator reads it.

    Why shared by every control plane of this user: the operator serves the certificate found in the
    fixed directory CERT_DIR, so two control planes on one machine would overwrite each other's
    certificate unless both hold the same one.
    """
    certs = webhook_pair("okvqa-k8s-testenv-webhook", WEBHOOK_CA_NAME, WEBHOOK_DNS_NAME)
    mount_pair(certs, CERT_DIR)
    return certs


def bootstrap_objects(certs: dict[str, bytes], webhook_port: int) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) for the operator's namespace, webhook Secret and webhook registration."""
    return [
        *namespace_with_secret(NAMESPACE, WEBHOOK_SECRET, certs),
        (
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": WEBHOOK_CONFIGURATION},
                "webhooks": [
                    {
                        # As the operator's release manifests declare it, but reached by URL.
                        "name": "validator.pytorchjob.training-operator.kubeflow.org",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 10,
                        "clientConfig": {
                            "url": f"https://127.0.0.1:{webhook_port}{PYTORCHJOB_WEBHOOK_PATH}",
                            "caBundle": base64.b64encode(certs["ca.crt"]).decode(),
                        },
                        "rules": [
                            {
                                "apiGroups": ["kubeflow.org"],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE", "UPDATE"],
                                "resources": ["pytorchjobs"],
                            }
                        ],
                    }
                ],
            },
        ),
    ]


# A restricted-compliant init container for Worker pods (the built-in one is refused by Pod Security).
INIT_CONTAINER_TEMPLATE = Path(__file__).with_name("pytorch-init-container.yaml")


def argv(binary: str, kubeconfig: Path, ports: dict[str, int], init_image: str) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        "--enable-scheme=pytorchjob",
        f"--pytorch-init-container-template-file={INIT_CONTAINER_TEMPLATE}",
        f"--pytorch-init-container-image={init_image}",
        f"--webhook-server-port={ports['webhook']}",
        f"--metrics-bind-address=127.0.0.1:{ports['op_metrics']}",
        f"--health-probe-bind-address=127.0.0.1:{ports['op_health']}",
        "--leader-elect=false",
    ]
