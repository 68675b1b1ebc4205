"""Who may use the server and what it refuses before doing work: API key, Content-Type, docs,
requests whose client has gone away."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence

import httpx
import openai
import pytest

from okvqa_k8s.serve.app import ServerSettings, create_app
from okvqa_k8s.serve.auth import bearer_matches, is_json
from okvqa_k8s.serve.background import BackgroundServer
from okvqa_k8s.serve.engine import GenRequest, LlavaEngine
from tests.test_serve_app import HeldEngine, _ask, _body, _jpeg, _url, _wait_ready

KEY = "sk-test-5f1c9a"


@pytest.fixture(scope="module")
def keyed(engine: LlavaEngine) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(lambda: engine, ServerSettings(api_key=KEY))) as srv:
        _wait_ready(srv.url)
        yield srv


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {KEY}", True),
        (f"bearer {KEY}", True),
        (f"Bearer {KEY}x", False),
        (f"Bearer {KEY[:-1]}", False),
        (KEY, False),
        (f"Basic {KEY}", False),
        ("Bearer ", False),
        ("Bearer Ünïcode", False),  # compare_digest on str would raise TypeError here
        (None, False),
    ],
)
def test_bearer_matches(header: str | None, ok: bool) -> None:
    assert bearer_matches(header, KEY) is ok


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        (None, False),
    ],
)
def test_is_json(content_type: str | None, ok: bool) -> None:
    assert is_json(content_type) is ok


def test_api_key_is_required_on_the_api_routes_only(keyed: BackgroundServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        resp = httpx.post(keyed.url + "/v1/chat/completions", json=_body(), headers=headers, timeout=30)
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        err = resp.json()["error"]
        assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
        assert "wrong" not in err["message"] and KEY not in resp.text
        assert httpx.get(keyed.url + "/v1/models", headers=headers).status_code == 401
    # The kubelet's probes carry no key.
    assert httpx.get(keyed.url + "/healthz").status_code == 200
    assert httpx.get(keyed.url + "/readyz").status_code == 200

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == ["tiny-llava"]
    out = client.chat.completions.create(model="tiny-llava", messages=_body(_url(_jpeg("red")))["messages"])
    assert out.choices[0].finish_reason in ("stop", "length")


def test_post_requires_application_json(keyed: BackgroundServer) -> None:
    """A browser's cross-origin `text/plain` POST needs no preflight: refused before the body is read."""
    auth = {"Authorization": f"Bearer {KEY}"}
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
        resp = httpx.post(
            keyed.url + "/v1/chat/completions", content=b'{"messages": []}', headers=headers, timeout=30
        )
        assert resp.status_code == 415 and resp.json()["error"]["code"] == "unsupported_media_type"


def test_openapi_and_docs_are_opt_in(engine: LlavaEngine) -> None:
    with BackgroundServer(create_app(lambda: engine)) as srv:
        assert httpx.get(srv.url + "/openapi.json").status_code == 404
        assert httpx.get(srv.url + "/docs").status_code == 404
    with BackgroundServer(create_app(lambda: engine, ServerSettings(enable_docs=True))) as srv:
        assert "/v1/chat/completions" in httpx.get(srv.url + "/openapi.json").json()["paths"]
        assert httpx.get(srv.url + "/docs").status_code == 200


class CountingEngine(HeldEngine):
    """The held engine, recording how many requests each generate call got."""

    def __init__(self, engine: LlavaEngine) -> None:
        super().__init__(engine)
        self.batches: list[int] = []

    def generate(self, requests: Sequence[GenRequest]) -> list:
        self.batches.append(len(requests))
        return super().generate(requests)


def _raw_post(url: str, body: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_request_of_a_client_that_went_away_is_not_generated(engine: LlavaEngine) -> None:
    import json

    held = CountingEngine(engine)
    settings = ServerSettings(max_batch_size=1, batch_wait_s=0.0, max_queue=4)
    with BackgroundServer(create_app(lambda: held, settings)) as srv:  # type: ignore[arg-type, return-value]
        _wait_ready(srv.url)
        batcher = srv._server.config.app.state.serving.batcher
        running = threading.Thread(target=_ask, args=(srv.url, _body(_url(_jpeg("red")))))
        running.start()
        assert held.busy.wait(30)
        # A plain and a streamed request queue behind the running one; both clients then leave.
        socks = [
            _raw_post(srv.url, json.dumps(_body(_url(_jpeg("blue")), stream=stream)).encode())
            for stream in (False, True)
        ]
        deadline = time.monotonic() + 10
        while batcher.depth < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for sock in socks:
            sock.close()
        while not all(job.future.cancelled() for job in list(batcher._queue.queue)):
            assert time.monotonic() < deadline, "the server did not notice the disconnects"
            time.sleep(0.01)
        held.release.set()
        running.join(30)
        deadline = time.monotonic() + 10
        while batcher.skipped < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert held.batches == [1]  # only the request whose client stayed was generated
        assert _ask(srv.url, _body(_url(_jpeg("red")))).status_code == 200
