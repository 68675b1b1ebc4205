"""Streaming (`stream: true`) as the OpenAI API does it, checked with the official `openai` client
against the real server and a real (tiny) LLaVA."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from okvqa_k8s.serve.app import ServerSettings, create_app
from okvqa_k8s.serve.background import BackgroundServer
from okvqa_k8s.serve.engine import GenRequest, LlavaEngine, stable_prefix
from tests.test_serve_app import _jpeg, _requests, _url, _wait_ready

QUESTION = "Describe every shape in the picture, one by one, with its colour and its size."


@pytest.fixture(scope="module")
def server(engine: LlavaEngine) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(lambda: engine, ServerSettings(max_tokens_limit=64))) as srv:
        _wait_ready(srv.url)
        yield srv


def _messages() -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _url(_jpeg("red"))}},
                {"type": "text", "text": QUESTION},
            ],
        }
    ]


def _client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_openai_client_streams_what_it_would_get_whole(server: BackgroundServer) -> None:
    client = _client(server)
    whole = client.chat.completions.create(model="tiny-llava", messages=_messages(), max_tokens=40)
    chunks = list(
        client.chat.completions.create(
            model="tiny-llava",
            messages=_messages(),
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1 and {c.model for c in chunks} == {"tiny-llava"}
    first, finish, last = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant" and first.choices[0].finish_reason is None
    content = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert all(content) and "".join(content) == whole.choices[0].message.content
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason
    assert finish.choices[0].delta.content is None and finish.usage is None
    assert last.choices == [] and last.usage == whole.usage  # include_usage: one usage chunk at the end
    assert all(c.usage is None for c in chunks[:-1])

    plain = list(client.chat.completions.create(model="tiny-llava", messages=_messages(), stream=True))
    assert all(c.usage is None for c in plain) and plain[-1].choices[0].finish_reason is not None


def test_wire_format_is_server_sent_events_ending_in_done(server: BackgroundServer) -> None:
    body = {"messages": _messages(), "max_tokens": 8, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_stream_errors_before_generation_are_http_errors(server: BackgroundServer) -> None:
    client = _client(server)
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model="tiny-llava", messages=_messages(), max_tokens=10_000, stream=True
        )
    assert exc.value.status_code == 400 and "max_tokens" in str(exc.value)


def test_pieces_arrive_during_generation_and_join_to_the_answer(engine: LlavaEngine) -> None:
    pieces: list[str] = []
    req = _requests()[1]
    streamed = GenRequest(req.conversation, req.images, 40, on_text=pieces.append)
    result = engine.generate([streamed, _requests()[2]])[0]
    assert result == engine.generate([GenRequest(req.conversation, req.images, 40)])[0]  # same answer
    sent = "".join(pieces)
    assert " " in result.text  # the tiny model's answer has several words...
    assert len(pieces) >= 2 and result.text.startswith(sent)  # ...sent while it was being generated


@pytest.mark.parametrize(
    ("partial", "stable"),
    [
        ("", ""),
        ("Yes", ""),  # the word may still grow
        (" red car", "red"),
        ("two cats\n", "two cats"),
        ("a caf\ufffd", "a"),  # half a UTF-8 character
        ("it 's", "it"),  # clean-up may still turn ` 's` into `'s`
    ],
)
def test_stable_prefix_holds_back_what_can_change(partial: str, stable: str) -> None:
    assert stable_prefix(partial) == stable
