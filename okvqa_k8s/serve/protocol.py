"""The OpenAI chat-completions wire format: request validation, conversion for the model, responses.

Only what a vision chat request needs is modelled; unknown fields are accepted and ignored (clients
send `logprobs`, `user`...), but anything this server would silently get wrong (n > 1) is refused with
a 400 instead. `stream: true` is answered as the OpenAI API streams: `chat.completion.chunk` objects
as Server-Sent Events (a role delta, content deltas, a chunk with `finish_reason`, with
`stream_options.include_usage` a usage chunk with no choices), then `data: [DONE]`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from okvqa_k8s.serve.api_errors import bad_request


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart | ImagePart]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[Message] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


def _loc(err: Any) -> str:
    return ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in ("TextPart", "ImagePart")))


def parse_request(body: bytes) -> ChatRequest:
    """Bytes → a validated request, or a 400 naming the first offending field."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise bad_request("request body must be a JSON object")
    try:
        req = ChatRequest.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _loc(err)
        raise bad_request(f"{where}: {err['msg']}", param=where or None) from None
    if req.n != 1:
        raise bad_request("n: only n=1 is supported", param="n")
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options: only allowed when stream is true", param="stream_options")
    return req


def prompt_chars(messages: list[Message]) -> int:
    """Characters of text in a request: bounded before anything is tokenised on the model thread."""
    return sum(
        len(msg.content)
        if isinstance(msg.content, str)
        else sum(len(part.text) for part in msg.content if isinstance(part, TextPart))
        for msg in messages
    )


def to_conversation(messages: list[Message]) -> tuple[list[dict[str, Any]], list[str]]:
    """OpenAI messages → a transformers chat-template conversation plus the image URLs in order.

    `image_url` parts become `{"type": "image"}` at the same position, so the processor's chat template
    puts the `<image>` token exactly where the client put the image (LLaVA trains with it first).
    """
    conversation: list[dict[str, Any]] = []
    urls: list[str] = []
    for msg in messages:
        if isinstance(msg.content, str):
            parts: list[dict[str, Any]] = [{"type": "text", "text": msg.content}]
        else:
            parts = []
            for part in msg.content:
                if isinstance(part, ImagePart):
                    urls.append(part.image_url.url)
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": part.text})
        conversation.append({"role": msg.role, "content": parts})
    return conversation, urls


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_response(
    model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """The non-streaming `chat.completion` object."""
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


class ChunkWriter:
    """The `chat.completion.chunk` events of one streamed answer, as the OpenAI API sends them.

    Every chunk shares the id, `created` and model; with `include_usage` each carries `usage: null`
    except the last, which has empty `choices` and the usage (OpenAI's documented shape).
    """

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]], usage_: dict[str, int] | None = None) -> str:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage_
        return sse(chunk)

    def _choice(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def role(self) -> str:
        return self._chunk([self._choice({"role": "assistant", "content": ""})])

    def content(self, text: str) -> str:
        return self._chunk([self._choice({"content": text})])

    def finish(self, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> str:
        out = self._chunk([self._choice({}, finish_reason)])
        if self.include_usage:
            out += self._chunk([], usage(prompt_tokens, completion_tokens))
        return out + "data: [DONE]\n\n"


def sse(doc: dict[str, Any]) -> str:
    """One Server-Sent Event carrying a JSON document (also how errors are sent mid-stream)."""
    return f"data: {json.dumps(doc, separators=(',', ':'))}\n\n"


def models_response(model: str, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": created, "owned_by": "okvqa-k8s"}],
    }
