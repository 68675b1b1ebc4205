"""The inference server over real HTTP with a real (tiny) LLaVA: OpenAI shapes, probes, limits, batching."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from okvqa_k8s.cli import main
from okvqa_k8s.serve.app import ServerSettings, create_app
from okvqa_k8s.serve.background import BackgroundServer
from okvqa_k8s.serve.engine import GenRequest, LlavaEngine
from okvqa_k8s.serve.images import ImageLimits

MAX_BODY = 256 * 1024
MAX_IMAGE = 64 * 1024


def _jpeg(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def _url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _body(image_url: str | None = None, text: str = "What color are the shapes?", **extra: object) -> dict:
    content: list[dict] = [{"type": "image_url", "image_url": {"url": image_url}}] if image_url else []
    content.append({"type": "text", "text": text})
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 6, **extra}


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(url + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(engine: LlavaEngine) -> Iterator[BackgroundServer]:
    settings = ServerSettings(
        max_body_bytes=MAX_BODY,
        images=ImageLimits(max_image_bytes=MAX_IMAGE),
        max_batch_size=4,
        batch_wait_s=0.05,
        max_tokens_limit=64,
    )
    with BackgroundServer(create_app(lambda: engine, settings)) as srv:
        _wait_ready(srv.url)
        yield srv


def _ask(url: str, body: dict) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)


def test_readiness_follows_model_loading(engine: LlavaEngine) -> None:
    loaded = threading.Event()

    def slow_load() -> LlavaEngine:
        assert loaded.wait(30)
        return engine

    with BackgroundServer(create_app(slow_load)) as srv:
        assert httpx.get(srv.url + "/healthz").status_code == 200
        ready = httpx.get(srv.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        early = _ask(srv.url, _body(_url(_jpeg("red"))))
        assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
        loaded.set()
        _wait_ready(srv.url)
        assert httpx.get(srv.url + "/readyz").json()["model"] == "tiny-llava"
        assert _ask(srv.url, _body(_url(_jpeg("red")))).status_code == 200


def test_failed_load_is_reported_by_both_probes() -> None:
    def broken() -> LlavaEngine:
        raise OSError("no config.json in /models/merged")

    with BackgroundServer(create_app(broken)) as srv:
        deadline = time.monotonic() + 10
        while (health := httpx.get(srv.url + "/healthz")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert health.status_code == 500 and "no config.json" in health.json()["error"]
        assert httpx.get(srv.url + "/readyz").status_code == 503


def test_models_and_chat_completion_shape(server: BackgroundServer) -> None:
    models = httpx.get(server.url + "/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny-llava"]

    resp = _ask(server.url, _body(_url(_jpeg("red")), model="tiny-llava"))
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["object"] == "chat.completion" and out["model"] == "tiny-llava"
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = out["usage"]
    assert 0 <= usage["completion_tokens"] <= 6
    assert usage["prompt_tokens"] > 16  # the 16 image tokens are part of the prompt
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # Greedy by default: the same request gives the same answer.
    again = _ask(server.url, _body(_url(_jpeg("red")), model="tiny-llava")).json()
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]


def test_max_tokens_bounds_the_answer(server: BackgroundServer) -> None:
    out = _ask(server.url, {**_body(_url(_jpeg("blue"))), "max_tokens": 1}).json()
    assert out["usage"]["completion_tokens"] <= 1
    if out["usage"]["completion_tokens"] == 1:
        assert out["choices"][0]["finish_reason"] == "length"


def _requests() -> list[GenRequest]:
    colours = ["red", "green", "blue", "yellow", "white"]
    questions = ["What color?", "How many shapes are there in the picture?", "Which shape is it?"]
    out = []
    for i, colour in enumerate(colours):
        img = Image.open(io.BytesIO(_jpeg(colour, (40 + 9 * i, 64))))
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": questions[i % 3]}]}]
        out.append(GenRequest(conv, [img], max_tokens=3 + 2 * i))
    return out


def test_batched_generation_equals_one_by_one(engine: LlavaEngine) -> None:
    reqs = _requests()
    alone = [engine.generate([r])[0] for r in reqs]
    together = engine.generate(reqs)
    assert together == alone
    assert all(r.completion_tokens <= req.max_tokens for r, req in zip(together, reqs, strict=True))


def test_concurrent_http_requests_get_their_own_answers(server: BackgroundServer) -> None:
    colours = ["red", "green", "blue", "yellow", "white", "black"]
    bodies = [_body(_url(_jpeg(c)), text=f"What color is shape {i}?") for i, c in enumerate(colours)]
    sequential = [_ask(server.url, b).json()["choices"][0]["message"]["content"] for b in bodies]
    state = server._server.config.app.state.serving
    batches_before = state.batcher.batches_run
    results: list[str | None] = [None] * len(bodies)

    def worker(i: int) -> None:
        results[i] = _ask(server.url, bodies[i]).json()["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == sequential
    assert state.batcher.batches_run - batches_before < len(bodies)  # some requests shared a batch


def _huge_png_header() -> bytes:
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


ERROR_CASES = {
    "body over limit": (_body(_url(b"\xff\xd8\xff" + os.urandom(MAX_BODY))), 413, "payload_too_large"),
    "image over limit": (_body(_url(os.urandom(MAX_IMAGE + 10))), 413, "payload_too_large"),
    "bad base64": (_body("data:image/jpeg;base64,%%%%"), 400, "invalid_image"),
    "not an image": (_body(_url(b"GIF89a but not really")), 400, "invalid_image"),
    "decompression bomb": (_body(_url(_huge_png_header(), "image/png")), 400, "image_too_many_pixels"),
    "url images off": (_body("http://127.0.0.1:9/cat.jpg"), 400, "image_url_disabled"),
    "no messages": ({"messages": []}, 400, "invalid_request"),
    "bad role": ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_request"),
    "stream_options without stream": (
        _body(_url(_jpeg("red")), stream_options={"include_usage": True}), 400, "invalid_request"
    ),
    "prompt too long": (_body(_url(_jpeg("red")), text="why " * 5_000), 400, "prompt_too_long"),
    "n=2": (_body(_url(_jpeg("red")), n=2), 400, "invalid_request"),
    "max_tokens too big": ({**_body(), "max_tokens": 10_000}, 400, "invalid_request"),
    "two images": (
        {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": _url(_jpeg("red"))}},
            {"type": "image_url", "image_url": {"url": _url(_jpeg("blue"))}},
        ]}]},
        400,
        "invalid_request",
    ),
    "unknown model": (_body(_url(_jpeg("red")), model="gpt-4o"), 404, "model_not_found"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_openai_json_and_server_keeps_serving(server: BackgroundServer, case: str) -> None:
    body, status, code = ERROR_CASES[case]
    resp = _ask(server.url, body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["message"] and err["type"]
    assert _ask(server.url, _body(_url(_jpeg("green")))).status_code == 200


JSON = {"Content-Type": "application/json"}


def test_invalid_json_and_streamed_oversize_body(server: BackgroundServer) -> None:
    bad = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", headers=JSON, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        for _ in range(8):
            yield b" " * (MAX_BODY // 4)

    resp = httpx.post(server.url + "/v1/chat/completions", content=chunks(), headers=JSON, timeout=30)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"
    assert _ask(server.url, _body(_url(_jpeg("green")))).status_code == 200


class HeldEngine:
    """The real engine, held busy inside generate until released: makes 'queue full' deterministic."""

    def __init__(self, engine: LlavaEngine) -> None:
        self.engine = engine
        self.model_id = engine.model_id
        self.busy = threading.Event()
        self.release = threading.Event()

    def generate(self, requests: Sequence[GenRequest]) -> list:
        self.busy.set()
        assert self.release.wait(30)
        return self.engine.generate(requests)


def test_full_queue_answers_429_then_recovers(engine: LlavaEngine) -> None:
    held = HeldEngine(engine)
    settings = ServerSettings(max_batch_size=1, batch_wait_s=0.0, max_queue=1)
    with BackgroundServer(create_app(lambda: held, settings)) as srv:  # type: ignore[arg-type, return-value]
        _wait_ready(srv.url)
        codes: dict[str, int] = {}

        def send(name: str) -> None:
            codes[name] = _ask(srv.url, _body(_url(_jpeg("red")))).status_code

        first = threading.Thread(target=send, args=("running",))
        first.start()
        assert held.busy.wait(30)
        second = threading.Thread(target=send, args=("queued",))
        second.start()
        deadline = time.monotonic() + 10
        while httpx.get(srv.url + "/readyz").json()["queue"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = _ask(srv.url, _body(_url(_jpeg("red"))))
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        # The queue is checked before the image is decoded: a broken image gets 429, not 400.
        assert _ask(srv.url, _body("data:image/jpeg;base64,%%%%")).status_code == 429
        held.release.set()
        first.join(30)
        second.join(30)
        assert codes == {"running": 200, "queued": 200}
        assert _ask(srv.url, _body(_url(_jpeg("red")))).status_code == 200


def test_base_plus_adapter_serves_like_the_merged_model(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    torch.manual_seed(0)
    base = LlavaForConditionalGeneration.from_pretrained(tiny_model)
    lora = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    lora.save_pretrained(tmp_path / "adapter")
    lora.merge_and_unload().save_pretrained(tmp_path / "merged")
    AutoProcessor.from_pretrained(tiny_model).save_pretrained(tmp_path / "merged")

    reqs = _requests()
    via_adapter = LlavaEngine.load(tiny_model, adapter_dir=tmp_path / "adapter").generate(reqs)
    merged = LlavaEngine.load(tmp_path / "merged").generate(reqs)
    plain = LlavaEngine.load(tiny_model).generate(reqs)
    assert [r.text for r in via_adapter] == [r.text for r in merged]
    assert [r.text for r in via_adapter] != [r.text for r in plain]  # the adapter really changed the model


def test_serve_command_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"okvqa-k8s: error: --model {tmp_path / 'missing'}: not a directory"]
    (tmp_path / "empty").mkdir()
    assert main(["serve", "--model", str(tmp_path / "empty")]) == 2
    assert "no config.json" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("source", ["local", "s3"])
def test_serve_command_end_to_end(
    tiny_model: Path, source: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    model = str(tiny_model)
    if source == "s3":  # what the inference Deployment does: pull <outputUri>/merged from S3 at start
        from okvqa_k8s.storage import sync_up

        bucket = request.getfixturevalue("s3_bucket")
        model = bucket.uri("runs/r1/merged")
        assert sync_up(tiny_model, model) > 0
    port = _free_port()
    key = "sk-e2e-" + os.urandom(8).hex()  # from the environment, as the rendered Deployment passes it
    log_path = tmp_path / "serve.log"  # a file, not a pipe: debug logs would fill a pipe and block
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "okvqa_k8s.cli", "serve", "--model", model, "--port", str(port),
         "--served-model-name", "llava-tiny", "--log-level", "debug",
         "--cache-dir", str(tmp_path / "cache")],
        stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "OKVQA_API_KEY": key},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.2)
        assert _ask(url, _body(_url(_jpeg("red")), model="llava-tiny")).status_code == 401
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
        messages = _body(_url(_jpeg("red")))["messages"]
        out = client.chat.completions.create(model="llava-tiny", messages=messages)
        assert out.model == "llava-tiny"
        streamed = client.chat.completions.create(model="llava-tiny", messages=messages, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == out.choices[0].message.content
        assert [m.id for m in client.models.list()] == ["llava-tiny"]
        if source == "s3":
            assert len(list((tmp_path / "cache").glob("*/config.json"))) == 1
    finally:
        proc.terminate()
        proc.wait(30)
        log_file.close()
    logs = log_path.read_text()
    assert "POST /v1/chat/completions" in logs and key not in logs  # debug logs, never the key
