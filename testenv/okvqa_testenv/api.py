"""Just enough of a REST client to bootstrap the cluster, with the admin client certificate.

Why not the kubernetes client: this package must not depend on the product's dependencies, and start-up
needs only a handful of POSTs and GETs.
"""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any

from okvqa_testenv.processes import ControlPlaneError


class Api:
    """Requests to the API server as the cluster's admin."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._context = ssl.create_default_context(cafile=str(ca))
        self._context.load_cert_chain(str(cert), str(key))

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        connection = http.client.HTTPSConnection(self.host, self.port, context=self._context, timeout=10)
        try:
            payload = None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=payload, headers={"Content-Type": content_type})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, data.decode(errors="replace")

    def ok(self, path: str) -> bool:
        """Whether GET `path` answers 200; connection errors mean "not yet"."""
        try:
            return self.request("GET", path)[0] == 200
        except OSError:
            return False

    def get(self, path: str) -> Any:
        try:
            status, body = self.request("GET", path)
        except OSError:
            return None
        return body if status == 200 else None

    def create(self, path: str, obj: dict[str, Any]) -> None:
        """POST `obj`; an object that already exists (409) counts as created."""
        status, body = self.request("POST", path, obj)
        if status >= 300 and status != 409:
            kind = obj.get("kind", "object")
            raise ControlPlaneError(f"creating {kind} at {path} failed with HTTP {status}: {body}")

    def patch(self, path: str, patch: dict[str, Any]) -> None:
        """A JSON merge patch of the object at `path`."""
        status, body = self.request("PATCH", path, patch, "application/merge-patch+json")
        if status >= 300:
            raise ControlPlaneError(f"patching {path} failed with HTTP {status}: {body}")


def condition_true(obj: Any, condition: str) -> bool:
    conditions = (obj or {}).get("status", {}).get("conditions") or []
    return any(c.get("type") == condition and c.get("status") == "True" for c in conditions)
