"""OpenAI-style error bodies, so every client (the openai SDK, our eval client, curl) reads one shape.

The server answers a bad request with one of these and keeps serving: a client mistake must never
take the process, or other clients' requests, down with it.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An HTTP error the client caused or must back off from, rendered as OpenAI's error JSON."""

    def __init__(
        self, status: int, message: str, *, type: str, code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, *, code: str = "invalid_request", param: str | None = None) -> APIError:
    return APIError(400, message, type="invalid_request_error", code=code, param=param)


def too_large(message: str, *, param: str | None = None) -> APIError:
    return APIError(413, message, type="invalid_request_error", code="payload_too_large", param=param)


def queue_full(depth: int) -> APIError:
    return APIError(
        429,
        f"server busy: {depth} requests already queued; retry later",
        type="rate_limit_error",
        code="queue_full",
    )


def not_ready() -> APIError:
    return APIError(
        503, "model is still loading; retry when /readyz answers 200", type="server_error", code="not_ready"
    )


def model_not_found(name: str, served: str) -> APIError:
    return APIError(
        404,
        f"the model `{name}` does not exist; this server serves `{served}`",
        type="invalid_request_error",
        code="model_not_found",
        param="model",
    )
