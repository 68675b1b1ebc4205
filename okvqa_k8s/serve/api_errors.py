"""OpenAI-style error bodies, so every client (the openai SDK, our eval client, curl) reads one shape.

The server answers a bad request with one of these and keeps serving: a client mistake must never
take the process, or other clients' requests, down with it.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An HTTP error the client caused or must back off from, rendered as OpenAI's error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
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


def queue_full(depth: int, retry_after_s: int) -> APIError:
    """429 with `Retry-After`, which the openai SDK and our eval client honour before retrying."""
    return APIError(
        429,
        f"server busy: {depth} requests already queued; retry in {retry_after_s} s",
        type="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(retry_after_s)},
    )


def unauthorized() -> APIError:
    """OpenAI's answer to a missing or wrong key; the key sent is never echoed back."""
    return APIError(
        401,
        "missing or incorrect API key: send it as `Authorization: Bearer <key>`",
        type="invalid_request_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def unsupported_media_type(got: str | None) -> APIError:
    return APIError(
        415,
        f"Content-Type must be application/json, got {got or 'none'}",
        type="invalid_request_error",
        code="unsupported_media_type",
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
