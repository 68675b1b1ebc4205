"""The FastAPI application: OpenAI routes, probes, limits and the hand-off to the model worker.

The model loads in a background thread after the socket is open, so Kubernetes sees a live process
(`/healthz`) at once and routes traffic only when `/readyz` turns 200. Request bodies are read with a
byte cap before anything is parsed, images are decoded off the event loop, and every refusal is an
OpenAI-style error: the server never stops serving because of what a client sent.

Cheap refusals come before costly work: the API key and Content-Type before the body is read, the
prompt's length and the queue's room before any image is decoded, and a request whose client has
gone away is withdrawn from the queue instead of being generated.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from okvqa_k8s.serve import api_errors
from okvqa_k8s.serve.api_errors import APIError
from okvqa_k8s.serve.auth import bearer_matches, is_json
from okvqa_k8s.serve.batching import Batcher, QueueFull
from okvqa_k8s.serve.engine import GenRequest, GenResult, LlavaEngine
from okvqa_k8s.serve.images import ImageLimits, MiB, load_image
from okvqa_k8s.serve.protocol import (
    ChatRequest,
    ChunkWriter,
    completion_response,
    models_response,
    parse_request,
    prompt_chars,
    sse,
    to_conversation,
)

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
    max_prompt_chars: int = 16_384
    retry_after_s: int = 1
    # None: open, as before --api-key existed. The key is compared, never logged.
    api_key: str | None = field(default=None, repr=False)
    enable_docs: bool = False


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

    app = FastAPI(
        title="okvqa-k8s inference server",
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.enable_docs else None,
        docs_url="/docs" if settings.enable_docs else None,
        redoc_url=None,
    )
    app.state.serving = state

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        headers = {"Connection": "close"} if exc.status == 413 else {}
        return JSONResponse(exc.body(), status_code=exc.status, headers={**headers, **exc.headers})

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

    def _authorize(request: Request) -> None:
        """The API routes need the key when one is set; the probes never do (the kubelet has none)."""
        if settings.api_key is not None and not bearer_matches(
            request.headers.get("authorization"), settings.api_key
        ):
            raise api_errors.unauthorized()

    def _ready() -> tuple[LlavaEngine, Batcher[GenRequest, GenResult]]:
        if state.error:
            raise APIError(
                500, f"model failed to load: {state.error}", type="server_error", code="load_failed"
            )
        if state.engine is None or state.batcher is None:
            raise api_errors.not_ready()
        return state.engine, state.batcher

    def _check_room(batcher: Batcher[GenRequest, GenResult]) -> None:
        if batcher.depth >= settings.max_queue:
            raise api_errors.queue_full(batcher.depth, settings.retry_after_s)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _authorize(request)
        engine, _ = _ready()
        return models_response(engine.model_id, state.created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        _authorize(request)
        if not is_json(request.headers.get("content-type")):
            raise api_errors.unsupported_media_type(request.headers.get("content-type"))
        engine, batcher = _ready()
        _check_room(batcher)  # before the body is even read
        req = parse_request(await read_body(request, settings.max_body_bytes))
        gen = await _generation(req, engine, batcher)
        stream = asyncio.Queue[str]() if req.stream else None
        if stream is not None:
            loop = asyncio.get_running_loop()
            gen = replace(gen, on_text=lambda piece: loop.call_soon_threadsafe(stream.put_nowait, piece))
        try:
            future = batcher.enqueue(gen)
        except QueueFull as exc:
            raise api_errors.queue_full(exc.depth, settings.retry_after_s) from None
        if stream is not None:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            writer = ChunkWriter(engine.model_id, usage)
            return StreamingResponse(
                _events(writer, stream, future),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        result = await _unless_disconnected(request, future)
        return JSONResponse(
            completion_response(
                engine.model_id,
                result.text,
                result.finish_reason,
                result.prompt_tokens,
                result.completion_tokens,
            )
        )

    async def _generation(
        req: ChatRequest, engine: LlavaEngine, batcher: Batcher[GenRequest, GenResult]
    ) -> GenRequest:
        """A validated request → what the model thread needs; every check that costs nothing comes
        before the images are decoded."""
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
        chars = prompt_chars(req.messages)
        if chars > settings.max_prompt_chars:
            raise api_errors.bad_request(
                f"messages: {chars} characters of text, at most {settings.max_prompt_chars} per request",
                code="prompt_too_long",
                param="messages",
            )
        _check_room(batcher)
        images = [await run_in_threadpool(load_image, url, settings.images) for url in urls]
        return GenRequest(
            conversation,
            images,
            max_tokens,
            req.temperature or 0.0,
            req.top_p if req.top_p is not None else 1.0,
        )

    return app


async def _until_disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read: nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, result: Awaitable[GenResult]) -> GenResult:
    """The result, or, when the client goes away first, the request withdrawn from the queue."""
    work = asyncio.ensure_future(result)
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()  # cancels the queued job's future: the worker skips it
        log.debug("client disconnected; request withdrawn")
        raise APIError(499, "client closed the request", type="invalid_request_error")
    return work.result()


async def _events(
    writer: ChunkWriter, pieces: asyncio.Queue[str], future: asyncio.Future[GenResult]
) -> AsyncIterator[str]:
    """The SSE stream of one answer: the role, each piece as the model thread produces it, then the
    rest of the final text, `finish_reason`, usage and `[DONE]`. Leaving early (client gone) withdraws
    the request if it has not run yet."""
    try:
        yield writer.role()
        sent = ""
        while not future.done():
            piece = asyncio.ensure_future(pieces.get())
            await asyncio.wait({piece, future}, return_when=asyncio.FIRST_COMPLETED)
            if not piece.done():
                piece.cancel()
                break
            sent += piece.result()
            yield writer.content(piece.result())
        while not pieces.empty():  # queued before the result was resolved
            piece_text = pieces.get_nowait()
            sent += piece_text
            yield writer.content(piece_text)
        try:
            result = future.result()
        except APIError as exc:  # e.g. the prompt is longer than the model's context
            yield sse(exc.body())
            return
        except Exception as exc:  # the status line is sent: the error can only be an event now
            log.error("streamed request failed: %s: %s", type(exc).__name__, exc)
            yield sse(APIError(500, f"internal error: {type(exc).__name__}", type="server_error").body())
            return
        if result.text.startswith(sent) and len(result.text) > len(sent):
            yield writer.content(result.text[len(sent) :])
        elif not result.text.startswith(sent):
            log.warning("streamed text is not a prefix of the final answer")
        yield writer.finish(result.finish_reason, result.prompt_tokens, result.completion_tokens)
    finally:
        if not future.done():
            future.cancel()
