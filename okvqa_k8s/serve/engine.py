"""The model side of the server: load a LLaVA checkpoint (merged, or base + LoRA adapter) and answer
batches of chat requests with `generate`.

Prompts are rendered with the run's template (`okvqa_k8s.prompts`), the one training used.

Images are padded to a square with the processor's mean colour before the processor sees them, the
way training feeds them (LLaVA-1.5's `image_aspect_ratio=pad`, `okvqa_k8s.train.data`): otherwise the
CLIP centre crop would cut the sides off wide images and the served model would see other inputs than
the ones it was fine-tuned on.

Batches are padded on the left so every row's answer starts at the same column, which is what lets
one `generate` call serve requests with different prompt lengths; each row is then cut at its own
`max_tokens` and first end-of-sequence token, so batching never changes an answer.

A request with `on_text` (a streamed one) is told its answer while it is generated: `generate` hands
each step's token of every row to `RowStreamer`, which passes each streamed row the new text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from okvqa_k8s.errors import UserError
from okvqa_k8s.prompts import DEFAULT_PROMPT_TEMPLATE, render_prompt
from okvqa_k8s.serve.api_errors import APIError, bad_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenRequest:
    """One chat turn to complete; `temperature == 0` means greedy decoding."""

    conversation: list[dict[str, Any]]
    images: list[Image.Image]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    # Called on the model thread with each new piece of the answer; the pieces join to GenResult.text.
    on_text: Callable[[str], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


def check_model_dir(path: Path, what: str = "--model") -> None:
    """Fail before the server starts, not after a minute of loading, when a directory is unusable."""
    if not path.is_dir():
        raise UserError(f"{what} {path}: not a directory")
    marker = "adapter_config.json" if what == "--adapter" else "config.json"
    if not (path / marker).is_file():
        raise UserError(
            f"{what} {path}: no {marker} (expected a saved "
            f"{'peft adapter' if what == '--adapter' else 'HF model, e.g. <outputUri>/merged'})"
        )


def stable_prefix(text: str) -> str:
    """The part of a partly decoded answer that more tokens cannot change.

    Decoding is not prefix-stable at the tail: a token can be half a UTF-8 character (shown as
    U+FFFD until the rest arrives), and tokenizers' space clean-up rewrites ` 's`, ` n't`, ` .` only once
    the following token is there. Both happen after the tail's last whitespace, so that much is held
    back, and the answer's leading whitespace is dropped as `GenResult.text` drops it.
    """
    text = text.lstrip()
    cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
    return text[:cut] if cut >= 0 else ""


class RowStreamer:
    """transformers' streamer protocol over a batch: each step's token of every row → that row's
    `on_text` with the text that became stable, stopping at the row's end-of-sequence or limit."""

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        callbacks: list[Callable[[str], None] | None],
        limits: list[int],
        eos_ids: set[int],
    ) -> None:
        self.decode = decode
        self.callbacks = callbacks
        self.limits = limits
        self.eos_ids = eos_ids
        self.ids: list[list[int]] = [[] for _ in callbacks]
        self.sent = [""] * len(callbacks)
        self.done = [cb is None for cb in callbacks]

    def put(self, value: Any) -> None:
        if value.dim() > 1:  # the prompt, put once before the first step
            return
        for row, token in enumerate(value.tolist()):
            if self.done[row]:
                continue
            if token in self.eos_ids or len(self.ids[row]) >= self.limits[row]:
                self.done[row] = True
                continue
            self.ids[row].append(token)
            text = stable_prefix(self.decode(self.ids[row]))
            callback = self.callbacks[row]
            if callback is not None and len(text) > len(self.sent[row]) and text.startswith(self.sent[row]):
                callback(text[len(self.sent[row]) :])
                self.sent[row] = text

    def end(self) -> None:
        """The rest of each answer is sent with its result, from the final decode."""


class LlavaEngine:
    """A loaded model + processor; `generate` is called from exactly one worker thread."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        model_id: str,
        *,
        pad_to_square: bool = True,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    ) -> None:
        from okvqa_k8s.train.data import mean_colour

        self.model = model
        self.pad_to_square = pad_to_square
        self.prompt_template = prompt_template
        self.background = mean_colour(processor.image_processor)
        self.processor = processor
        self.model_id = model_id
        self.processor.tokenizer.padding_side = "left"
        text_config = getattr(model.config, "text_config", model.config)
        self.max_context = int(getattr(text_config, "max_position_embeddings", 0) or 1 << 30)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.processor.tokenizer.eos_token_id is not None:
            eos_ids.add(self.processor.tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.pad_id = self.processor.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = min(eos_ids) if eos_ids else 0

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        adapter_dir: Path | None = None,
        dtype: str = "auto",
        device: str = "auto",
        model_id: str | None = None,
        pad_to_square: bool = True,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    ) -> LlavaEngine:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bf16" if device.startswith("cuda") else "fp32"
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        log.info("loading %s (%s on %s)", model_dir, dtype, device)
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch_dtype)
        processor_dir = model_dir
        if adapter_dir is not None:
            from peft import PeftModel

            # Merged once at load: generation then runs at the speed of the plain model.
            model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
            if (adapter_dir / "tokenizer_config.json").is_file():
                processor_dir = adapter_dir
        processor = AutoProcessor.from_pretrained(processor_dir)
        model.to(device).eval()
        name = model_id or (adapter_dir or model_dir).resolve().name
        return cls(model, processor, name, pad_to_square=pad_to_square, prompt_template=prompt_template)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def decode(self, ids: list[int]) -> str:
        """Answer tokens → text; streamed pieces and the final answer come from this one decode."""
        return str(self.processor.tokenizer.decode(ids, skip_special_tokens=True))

    def _encode(self, texts: list[str], images: list[Image.Image]) -> Any:
        from okvqa_k8s.train.data import expand_to_square

        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if images:
            kwargs["images"] = (
                [expand_to_square(img, self.background) for img in images] if self.pad_to_square else images
            )
        return self.processor(**kwargs)

    def _prepare(self, req: GenRequest) -> tuple[str, int]:
        """Prompt text and its token count, or a 400 for this request alone."""
        try:
            text = render_prompt(self.processor, req.conversation, self.prompt_template)
            n_tokens = int(self._encode([text], list(req.images))["attention_mask"].sum())
        except (ValueError, TypeError, KeyError) as exc:
            raise bad_request(f"messages: cannot build a prompt for this model ({exc})") from None
        if n_tokens >= self.max_context:
            raise bad_request(
                f"messages: prompt is {n_tokens} tokens; this model's context is {self.max_context}"
            )
        return text, n_tokens

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult | Exception]:
        """Answer a batch; a request that cannot be answered gets its own exception, not the batch's."""
        results: list[GenResult | Exception | None] = [None] * len(requests)
        groups: dict[tuple[float, float], list[tuple[int, str, int]]] = {}
        for i, req in enumerate(requests):
            try:
                text, n_tokens = self._prepare(req)
            except APIError as exc:
                results[i] = exc
                continue
            key = (req.temperature, req.top_p) if req.temperature > 0 else (0.0, 1.0)
            groups.setdefault(key, []).append((i, text, n_tokens))
        for (temperature, top_p), rows in groups.items():
            for i, result in zip(
                [r[0] for r in rows], self._generate_group(requests, rows, temperature, top_p), strict=True
            ):
                results[i] = result
        return [r if r is not None else RuntimeError("request was not processed") for r in results]

    def _generate_group(
        self,
        requests: Sequence[GenRequest],
        rows: list[tuple[int, str, int]],
        temperature: float,
        top_p: float,
    ) -> list[GenResult]:
        import torch

        texts = [text for _, text, _ in rows]
        images = [img for i, _, _ in rows for img in requests[i].images]
        limits = [min(requests[i].max_tokens, self.max_context - n) for i, _, n in rows]
        enc = self._encode(texts, images).to(self.device)
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(self.model.dtype)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p}
            if temperature > 0
            else {"do_sample": False}
        )
        callbacks = [requests[i].on_text for i, _, _ in rows]
        if any(callbacks):
            sampling["streamer"] = RowStreamer(self.decode, callbacks, limits, self.eos_ids)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=max(limits), pad_token_id=self.pad_id, **sampling)
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        results = []
        for (_, _, n_prompt), limit, ids in zip(rows, limits, new_tokens, strict=True):
            cut = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
            finish = "stop" if cut is not None and cut < limit else "length"
            ids = ids[: cut if finish == "stop" else limit]
            text = self.decode(ids).strip()
            results.append(GenResult(text, n_prompt, len(ids), finish))
        return results
