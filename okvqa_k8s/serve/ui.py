"""The compare UI: one page, one question, the base and the fine-tuned answer side by side.

The browser only ever talks to this server, which forwards the question to both model endpoints
concurrently with the same client the evaluation uses, so no endpoint needs CORS headers and the
page shows exactly what `eval run` would have scored. Uploads are checked with the inference server's
own image limits, so a bad file gets the same clear message here as from the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from okvqa_k8s.serve.api_errors import APIError, bad_request
from okvqa_k8s.serve.app import read_body
from okvqa_k8s.serve.images import ImageLimits, decode_data_url, open_image

SIDES = ("base", "finetuned")


def short_answer_prompt(question: str) -> str:
    """The question as the fine-tuned model saw questions in training (prepared records' human turn)."""
    from okvqa_k8s.data.prepare import PROMPT_SUFFIX

    return f"{question.strip()}\n{PROMPT_SUFFIX}"


def create_ui_app(
    base_url: str,
    finetuned_url: str,
    *,
    max_tokens: int = 16,
    timeout: float = 60.0,
    limits: ImageLimits | None = None,
) -> FastAPI:
    """The UI server for two OpenAI-compatible endpoints."""
    from okvqa_k8s.evaluate.client import ChatClient

    limits = limits or ImageLimits()
    clients = {
        side: ChatClient(url, timeout=timeout, retries=2)
        for side, url in zip(SIDES, (base_url, finetuned_url), strict=True)
    }
    page = resources.files("okvqa_k8s.serve").joinpath("ui.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for c in clients.values():
            c.close()

    app = FastAPI(title="okvqa-k8s compare", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        return {"endpoints": {side: c.base for side, c in clients.items()}, "max_tokens": max_tokens}

    def ask(side: str, image: bytes, text: str) -> dict[str, Any]:
        from okvqa_k8s.errors import UserError

        start = time.perf_counter()
        try:
            answer = clients[side].ask(image, text, max_tokens=max_tokens)
        except UserError as exc:
            return {"error": str(exc)}
        return {
            "answer": answer.text,
            "model": clients[side].model,
            "seconds": round(time.perf_counter() - start, 3),
        }

    @app.post("/api/ask")
    async def api_ask(request: Request) -> dict[str, Any]:
        import json

        body = await read_body(request, limits.max_image_bytes * 4 // 3 + 64 * 1024)
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_request("body is not valid JSON") from None
        image_url, question = (
            (doc.get("image"), doc.get("question")) if isinstance(doc, dict) else (None, None)
        )
        if not isinstance(image_url, str) or not image_url:
            raise bad_request("choose an image first", param="image")
        if not isinstance(question, str) or not question.strip():
            raise bad_request("type a question first", param="question")
        image = decode_data_url(image_url, limits)
        await run_in_threadpool(open_image, image, limits)  # refuse non-images before bothering the models
        text = short_answer_prompt(question) if doc.get("short_answer", True) else question.strip()
        answers = await asyncio.gather(*(run_in_threadpool(ask, side, image, text) for side in SIDES))
        return {"question": question.strip(), "prompt": text, **dict(zip(SIDES, answers, strict=True))}

    return app
