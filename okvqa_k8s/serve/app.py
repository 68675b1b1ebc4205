"""The FastAPI application: OpenAI routes, probes, limits and the hand-off to the model worker.

The model loads in a background thread after the socket is open, so Kubernetes sees a live process
(`/healthz`) at once and routes traffic only when `/readyz` turns 200. Request bodies are read with a
byte cap before anything is parsed, images are decoded off the event loop, and every refusal is an
OpenAI-style error: the server never stops serving because of what a client sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from okvqa_k8s.serve import api_errors
from okvqa_k8s.serve.api_errors import APIError
from okvqa_k8s.serve.batching import Batcher, QueueFull
from okvqa_k8s.serve.engine import GenRequest, GenResult, LlavaEngine
from okvqa_k8s.serve.images import ImageLimits, MiB, load_image
from okvqa_k8s.serve.protocol import completion_response, models_response, parse_request, to_conversation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """Limits and batching knobs; the CLI flags map one to one onto these."""

    max_body_bytes: int = 20 * MiB
    images: ImageLimits = field(default_factory=ImageLimits)
    default_max_tokens: int = 64
    max_tokens_limit: int = 1024
    max_batch_size: int = 8
    batch_wait_s: float = 0.01
    max_queue: int = 64


class _State:
    """What the routes share; filled in by the loader thread."""

    def __init__(self) -> None:
        self.engine: LlavaEngine | None = None
        self.batcher: Batcher[GenRequest, GenResult] | None = None
        self.error: str | None = None
        self.created = int(time.time())


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) at the first byte over `limit`, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise api_errors.too_large(f"request body of {declared} bytes is over the {limit} byte limit")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise api_errors.too_large(f"request body is over the {limit} byte limit")
    return bytes(buf)


def create_app(load_engine: Callable[[], LlavaEngine], settings: ServerSettings | None = None) -> FastAPI:
    """An app that serves whatever `load_engine()` returns once it has returned."""
    settings = settings or ServerSettings()
    state = _State()

    def _load() -> None:
        try:
            engine = load_engine()
            batcher: Batcher[GenRequest, GenResult] = Batcher(
                engine.generate,
                max_batch_size=settings.max_batch_size,
                max_wait_s=settings.batch_wait_s,
                max_queue=settings.max_queue,
            )
            batcher.start()
            state.engine, state.batcher = engine, batcher
            log.info("model %s ready", engine.model_id)
        except Exception as exc:
            log.exception("loading the model failed")
            state.error = f"{type(exc).__name__}: {exc}"

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=_load, name="model-loader", daemon=True).start()
        yield
        if state.batcher is not None:
            state.batcher.close()

    app = FastAPI(title="okvqa-k8s inference server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serving = state

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        headers = {"Connection": "close"} if exc.status == 413 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        return JSONResponse(
            APIError(500, f"internal error: {type(exc).__name__}", type="server_error").body(),
            status_code=500,
        )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        # A failed load will never recover: report it so the kubelet restarts the container.
        if state.error:
            return JSONResponse({"status": "error", "error": state.error}, status_code=500)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.engine is None:
            return JSONResponse(
                {"status": "error" if state.error else "loading", "error": state.error}, status_code=503
            )
        return JSONResponse(
            {
                "status": "ready",
                "model": state.engine.model_id,
                "queue": state.batcher.depth if state.batcher else 0,
            }
        )

    def _ready() -> tuple[LlavaEngine, Batcher[GenRequest, GenResult]]:
        if state.error:
            raise APIError(
                500, f"model failed to load: {state.error}", type="server_error", code="load_failed"
            )
        if state.engine is None or state.batcher is None:
            raise api_errors.not_ready()
        return state.engine, state.batcher

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        engine, _ = _ready()
        return models_response(engine.model_id, state.created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> dict[str, Any]:
        engine, batcher = _ready()
        req = parse_request(await read_body(request, settings.max_body_bytes))
        if req.model and req.model != engine.model_id:
            raise api_errors.model_not_found(req.model, engine.model_id)
        conversation, urls = to_conversation(req.messages)
        if len(urls) > settings.images.max_images_per_request:
            raise api_errors.bad_request(
                f"messages: {len(urls)} images, at most {settings.images.max_images_per_request} per request",
                param="messages",
            )
        max_tokens = req.max_completion_tokens or req.max_tokens or settings.default_max_tokens
        if max_tokens > settings.max_tokens_limit:
            raise api_errors.bad_request(
                f"max_tokens: at most {settings.max_tokens_limit}", param="max_tokens"
            )
        images = [await run_in_threadpool(load_image, url, settings.images) for url in urls]
        gen = GenRequest(
            conversation,
            images,
            max_tokens,
            req.temperature or 0.0,
            req.top_p if req.top_p is not None else 1.0,
        )
        try:
            result = await batcher.submit(gen)
        except QueueFull as exc:
            raise api_errors.queue_full(exc.depth) from None
        return completion_response(
            engine.model_id, result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens
        )

    return app
