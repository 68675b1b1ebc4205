"""The OpenAI-compatible client: the request vLLM expects, retries on overload, error messages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from okvqa_k8s.errors import UserError
from okvqa_k8s.evaluate.client import ChatClient, EndpointError, base_url, image_data_url
from okvqa_k8s.serve.background import BackgroundServer


class Remote:
    """A stand-in remote server that misbehaves on cue, recording what it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.script: list[tuple[int, dict, dict]] = []  # (status, body, headers) answered before succeeding


@pytest.fixture
def remote() -> Iterator[tuple[Remote, str]]:
    state = Remote()
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": "llava-hf/llava-1.5-7b-hf", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        state.bodies.append(await request.json())
        if state.script:
            status, body, headers = state.script.pop(0)
            return JSONResponse(body, status_code=status, headers=headers)
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": " Red \n"},
                                          "finish_reason": "stop"}]})  # fmt: skip

    with BackgroundServer(app) as srv:
        yield state, srv.url


def test_request_is_what_vllm_expects(remote: tuple[Remote, str]) -> None:
    state, url = remote
    with ChatClient(url + "/v1/") as client:
        answer = client.ask(b"\x89PNG\r\n\x1a\nxxxx", "What color?\nAnswer briefly.", max_tokens=7)
    assert answer.text == "Red" and answer.finish_reason == "stop"
    body = state.bodies[0]
    assert body["model"] == "llava-hf/llava-1.5-7b-hf"  # vLLM refuses a model it does not serve
    assert body["temperature"] == 0.0 and body["max_tokens"] == 7  # vLLM samples unless told otherwise
    image, text = body["messages"][0]["content"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert text == {"type": "text", "text": "What color?\nAnswer briefly."}


def test_overload_is_retried_honouring_retry_after(remote: tuple[Remote, str]) -> None:
    state, url = remote
    busy = {"error": {"message": "busy", "type": "rate_limit_error", "code": "queue_full"}}
    state.script = [(429, busy, {"Retry-After": "0"}), (503, busy, {}), (429, busy, {})]
    with ChatClient(url, retries=3, backoff_s=0.01) as client:
        assert client.ask(b"\xff\xd8\xff", "q").text == "Red"
    assert len(state.bodies) == 4


def test_retries_run_out_and_client_errors_are_not_retried(remote: tuple[Remote, str]) -> None:
    state, url = remote
    busy = {"error": {"message": "server busy: 64 requests already queued", "type": "rate_limit_error"}}
    state.script = [(429, busy, {})] * 3
    with ChatClient(url, retries=2, backoff_s=0.01) as client, pytest.raises(EndpointError, match="HTTP 429"):
        client.ask(b"\xff\xd8\xff", "q")
    assert len(state.bodies) == 3

    state.bodies.clear()
    old_vllm = {"object": "error", "message": "image too large", "type": "BadRequestError", "code": 400}
    state.script = [(400, old_vllm, {})]
    with (
        ChatClient(url, retries=5) as client,
        pytest.raises(EndpointError, match="HTTP 400: image too large"),
    ):
        client.ask(b"\xff\xd8\xff", "q")
    assert len(state.bodies) == 1


def test_url_and_data_url_helpers() -> None:
    assert (
        base_url("http://h:8000")
        == base_url("http://h:8000/")
        == base_url("http://h:8000/v1")
        == "http://h:8000/v1"
    )
    with pytest.raises(UserError):
        base_url("h:8000")
    assert image_data_url(b"\xff\xd8\xff\xe0rest").startswith("data:image/jpeg;base64,/9j/")
    assert image_data_url(b"GIF89a").startswith("data:image/gif;")
