"""Thin Kubernetes API adapter: get/create/delete/patch-status/events/logs over plain REST paths.

The objects are the plain dicts the renderers produce, so one generic path builder serves every kind
instead of a typed client per API group. API errors become `ApiError` (status code kept) so callers can
tell "already exists" and "conflict" from real failures, and each is a `PermanentError` or a
`TemporaryError`: this module is the one place that knows which HTTP answers a retry can change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from okvqa_k8s.errors import OkvqaError, PermanentError, TemporaryError, UserError
from okvqa_k8s.kube import names

# kind → plural for every kind the run touches (the renderers and the operator only use these).
PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Pod": "pods",
    "Event": "events",
    "Secret": "secrets",
    "ServiceAccount": "serviceaccounts",
    "Deployment": "deployments",
    "Job": "jobs",
    "NetworkPolicy": "networkpolicies",
    "PyTorchJob": "pytorchjobs",
    "Workload": "workloads",
    names.KIND: names.PLURAL,
    "CustomResourceDefinition": "customresourcedefinitions",
    "Namespace": "namespaces",
}
CLUSTER_SCOPED = {"CustomResourceDefinition", "Namespace"}


# Answers about the request itself (malformed, forbidden, no such namespace, invalid object): sending it
# again changes nothing. Everything else (conflicts, throttling, server errors) may go through later.
PERMANENT_STATUSES = frozenset({400, 403, 404, 422})
# Seconds before retrying a temporary failure when the server names none (Retry-After).
RETRY_DELAY = 5.0


class ApiError(OkvqaError):
    """A non-2xx answer; `status` 404/409/422… and the API's message (never a credential).

    Raised as one of its two subclasses (`api_error` picks), so callers catch `PermanentError` or
    `TemporaryError` and never compare status codes to decide whether to retry.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class PermanentApiError(ApiError, PermanentError):
    """The API refused the request itself: sending it again cannot succeed."""


class TemporaryApiError(ApiError, TemporaryError):
    """A conflict, throttling or server error: the same request may succeed after `delay` seconds."""

    def __init__(self, status: int, reason: str, message: str, delay: float = RETRY_DELAY) -> None:
        super().__init__(status, reason, message)
        self.delay = delay


def api_error(status: int, reason: str, message: str, retry_after: float | None = None) -> ApiError:
    """The `ApiError` subclass for an HTTP answer: permanent, or temporary with the server's delay."""
    if status in PERMANENT_STATUSES:
        return PermanentApiError(status, reason, message)
    return TemporaryApiError(status, reason, message, RETRY_DELAY if retry_after is None else retry_after)


def object_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    """REST path of a collection (name None) or of one object."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    try:
        plural = PLURALS[kind]
    except KeyError:
        raise ValueError(f"no REST mapping for kind {kind}") from None
    ns = "" if kind in CLUSTER_SCOPED or namespace is None else f"/namespaces/{namespace}"
    return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient from a kubeconfig (KUBECONFIG / ~/.kube/config) or the pod's service account."""
    import os

    from kubernetes import client, config

    # The client reads $KUBECONFIG once at import; read it per call so a changed environment counts.
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        if kubeconfig or context:
            return config.new_client_from_config(config_file=kubeconfig, context=context)
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            return config.new_client_from_config()
    except (config.ConfigException, OSError) as exc:
        raise UserError(
            f"no usable Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {exc}"
        ) from None


class Kube:
    """The handful of API calls the operator and CLI need; `api_client` is a kubernetes.client.ApiClient."""

    def __init__(self, api_client: Any) -> None:
        self.api = api_client

    @classmethod
    def from_config(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        return cls(load_api_client(kubeconfig, context))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        stream: bool = False,
    ) -> Any:
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            response = self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException as exc:
            raise _api_error(exc) from None
        if stream:
            return response
        data = response.data
        return json.loads(data) if data else None

    # -- objects

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (404)."""
        try:
            return self.request("GET", object_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str | None, selector: str = ""
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        return self.request("GET", object_path(api_version, kind, namespace), query=query).get("items", [])

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(object, created?). An existing object is returned as is: creating twice is not an error."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        try:
            return self.request("POST", path, body=obj), True
        except ApiError as exc:
            if exc.status != 409:
                raise
        existing = self.get(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if existing is None:  # deleted between our POST and GET: let the next reconcile create it
            raise api_error(409, "Conflict", f"{obj['kind']} {meta['name']} is being deleted")
        return existing, False

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete with background propagation (children go through the garbage collector)."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self.request("DELETE", object_path(api_version, kind, namespace, name), body=body)
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def patch_status(
        self,
        namespace: str,
        name: str,
        compute: Callable[[dict[str, Any]], dict[str, Any] | None],
        attempts: int = 5,
    ) -> dict[str, Any] | None:
        """Replace a FineTune's status computed from its latest version, retrying 409 conflicts.

        The PUT carries the resourceVersion read just before, so a concurrent writer makes it fail with
        409 instead of being overwritten; we then re-read and recompute. `compute` returns None for
        "nothing to change".
        """
        path = object_path(names.API_VERSION, names.KIND, namespace, name)
        for attempt in range(attempts):
            current = self.request("GET", path)
            status = compute(current)
            if status is None or status == current.get("status"):
                return current
            body = {**current, "status": status}
            try:
                return self.request("PUT", path + "/status", body=body)
            except ApiError as exc:
                if exc.status != 409 or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return None

    # -- events and logs

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the FineTune, as `kubectl describe` shows them."""
        meta = involved["metadata"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "okvqa-operator"},
            "reportingComponent": "okvqa.dev/operator",
            "reportingInstance": "okvqa-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.request("POST", object_path("v1", "Event", meta["namespace"]), body=event)

    def logs(
        self, namespace: str, pod: str, container: str | None = None, follow: bool = False
    ) -> Iterator[bytes]:
        """Chunks of a container's log; the request is made here, so API errors surface at the call."""
        query: list[tuple[str, Any]] = [("follow", "true" if follow else "false")]
        if container:
            query.append(("container", container))
        response = self.request(
            "GET", object_path("v1", "Pod", namespace, pod) + "/log", query=query, stream=True
        )

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.stream(4096, decode_content=True)
            finally:
                response.release_conn()

        return chunks()


def _api_error(exc: Any) -> ApiError:
    message = exc.reason or ""
    try:
        body = json.loads(exc.body or "{}")
        message = body.get("message", message)
        reason = body.get("reason", exc.reason or "")
    except (ValueError, TypeError):
        reason = exc.reason or ""
    return api_error(int(exc.status or 0), str(reason), str(message), _retry_after(exc.headers))


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (429, 503), or None when absent or not a number."""
    try:
        return float((headers or {}).get("Retry-After"))
    except (TypeError, ValueError):
        return None
