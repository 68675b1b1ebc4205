"""A small client for OpenAI-compatible chat servers: ours and vLLM's `vllm serve` alike.

Only the portable subset is used: `GET /v1/models` to learn the served name (vLLM refuses a request
whose `model` it does not serve), `POST /v1/chat/completions` with an `image_url` data: URL and a text
part, and `temperature: 0` sent explicitly because vLLM's default is to sample. Overload (429) and
transient failures (502/503/504, dropped connections) are retried with exponential back-off, honouring
`Retry-After`, so a busy server slows the evaluation down instead of failing it.
"""

from __future__ import annotations

import base64
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from okvqa_k8s.errors import UserError

RETRY_STATUS = frozenset({429, 502, 503, 504})
IMAGE_MIME = {
    b"\xff\xd8\xff": "image/jpeg",
    b"\x89PNG": "image/png",
    b"GIF8": "image/gif",
    b"RIFF": "image/webp",
}


class EndpointError(UserError):
    """The endpoint refused or failed a request, after retries where retrying makes sense."""


@dataclass(frozen=True)
class Answer:
    text: str
    seconds: float
    finish_reason: str | None


def image_data_url(data: bytes) -> str:
    """Bytes of an image file → a `data:` URL with the MIME type sniffed from its magic number."""
    mime = next((m for magic, m in IMAGE_MIME.items() if data.startswith(magic)), "image/jpeg")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def base_url(endpoint: str) -> str:
    """`http://host:8000`, `.../v1` or `.../v1/` → `http://host:8000/v1`."""
    url = endpoint.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UserError(f"endpoint {endpoint!r}: expected an http(s):// URL such as http://127.0.0.1:8000")
    return url if url.endswith("/v1") else url + "/v1"


def _error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):  # OpenAI, and vLLM >= 0.9
        return str(err.get("message", err))
    if isinstance(body, dict) and "message" in body:  # older vLLM: {"object": "error", "message": ...}
        return str(body["message"])
    return str(body)[:200]


class ChatClient:
    """Thread-safe (one pooled httpx.Client): the eval runner shares one across its workers."""

    def __init__(
        self,
        endpoint: str,
        *,
        model: str | None = None,
        timeout: float = 120.0,
        retries: int = 6,
        api_key: str | None = None,
        backoff_s: float = 0.5,
    ) -> None:
        self.base = base_url(endpoint)
        self.retries = retries
        self.backoff_s = backoff_s
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            timeout=timeout,
            headers=headers,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self._model = model

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.base + path
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise EndpointError(f"{url}: {type(exc).__name__} after {attempt + 1} attempts") from None
                self._sleep(attempt, None)
                continue
            if resp.status_code in RETRY_STATUS and not last:
                self._sleep(attempt, resp.headers.get("retry-after"))
                continue
            if resp.status_code >= 400:
                raise EndpointError(f"{url}: HTTP {resp.status_code}: {_error_message(resp)}")
            return resp
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff_s * (2**attempt) * (0.5 + random.random())
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(min(delay, 30.0))

    @property
    def model(self) -> str:
        """The served model name (the first one listed), fetched once."""
        if self._model is None:
            data = self._request("GET", "/models").json().get("data") or []
            if not data or not isinstance(data[0], dict) or "id" not in data[0]:
                raise EndpointError(f"{self.base}/models: no model listed")
            self._model = str(data[0]["id"])
        return self._model

    def wait_ready(self, timeout: float = 300.0) -> str:
        """Poll `/v1/models` until the server answers (ours says 503 while loading); returns the model."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                resp = self._http.get(self.base + "/models")
                if resp.status_code == 200:
                    return self.model
                if resp.status_code not in RETRY_STATUS:  # e.g. a model that failed to load: never ready
                    raise EndpointError(
                        f"{self.base}/models: HTTP {resp.status_code}: {_error_message(resp)}"
                    )
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise EndpointError(f"{self.base}: not ready after {timeout:.0f}s")
            time.sleep(0.5)

    def ask(self, image: bytes, text: str, *, max_tokens: int = 16) -> Answer:
        """One image + one question → the model's greedy answer."""
        body = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image_data_url(image)}},
                        {"type": "text", "text": text},
                    ],
                }
            ],
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        start = time.perf_counter()
        resp = self._request("POST", "/chat/completions", json=body)
        seconds = time.perf_counter() - start
        try:
            choice = resp.json()["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.base}/chat/completions: response is not a chat completion") from None
        return Answer(str(content or "").strip(), seconds, choice.get("finish_reason"))
