"""`okvqa-k8s serve` (OpenAI-compatible model server) and `okvqa-k8s ui` (before/after compare page)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import click

from okvqa_k8s.prompts import DEFAULT_PROMPT_TEMPLATE, PROMPT_TEMPLATES


def _local_model(uri: str, cache_dir: Path | None, what: str) -> Path:
    """A local directory for `uri`; an s3:// URI is synced into the cache (only changed files move), a
    hub id downloaded."""
    from okvqa_k8s.hub import hub_snapshot, is_hub_id
    from okvqa_k8s.serve.engine import check_model_dir

    if is_hub_id(uri):  # as training does: into HF_HOME, in a pod the model volume
        dest = hub_snapshot(uri)
    elif "://" in uri and not uri.startswith("file://"):
        from okvqa_k8s.storage import sync_down

        root = (
            cache_dir
            or Path(os.environ.get("OKVQA_SCRATCH") or Path.home() / ".cache" / "okvqa-k8s") / "models"
        )
        dest = root / hashlib.sha256(uri.encode()).hexdigest()[:16]
        sync_down(uri, dest, workers=8)
    else:
        from okvqa_k8s.storage.uri import parse

        dest = Path(parse(uri).path)
    check_model_dir(dest, what)
    return dest


def _networks(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    import ipaddress

    for value in values:
        try:
            ipaddress.ip_network(value)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected a network such as 10.0.0.0/8") from None
    return values


@click.command("serve")
@click.option(
    "--model",
    required=True,
    metavar="DIR_OR_URI",
    help="Merged HF LLaVA model (e.g. <outputUri>/merged) or base model: a directory, s3:// URI or hub id.",
)
@click.option("--adapter", metavar="DIR_OR_URI", help="peft LoRA adapter on top of --model, merged at load.")
@click.option("--served-model-name", help="Name in /v1/models and responses (default: the directory name).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0 in a pod).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--dtype",
    type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
    default="auto",
    show_default=True,
    help="auto: bf16 on GPU, fp32 on CPU.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--max-batch-size",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Requests answered by one generate call.",
)
@click.option(
    "--batch-wait-ms",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, 1000),
    help="How long the first request of a batch waits for company.",
)
@click.option(
    "--max-queue",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Requests waiting beyond the running batch; more are refused with 429.",
)
@click.option(
    "--max-body-mb",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0.001),
    help="Request body limit (413 above).",
)
@click.option(
    "--max-image-mb",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.001),
    help="Encoded image size limit (413 above).",
)
@click.option(
    "--max-image-pixels",
    default=40_000_000,
    show_default=True,
    type=click.IntRange(1),
    help="Width x height limit, checked before decoding (400 above: decompression bomb).",
)
@click.option(
    "--max-images",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Images per request (LLaVA-1.5 is trained on one).",
)
@click.option("--allow-image-urls", is_flag=True, help="Fetch http(s) image URLs (off: only data: URLs).")
@click.option(
    "--image-url-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds for fetching one image URL, redirects included.",
)
@click.option(
    "--image-url-allow-network",
    "image_url_networks",
    multiple=True,
    metavar="CIDR",
    callback=_networks,
    help="A non-public network image URLs may reach (repeatable; default: public addresses only).",
)
@click.option(
    "--default-max-tokens",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="max_tokens when a request gives none.",
)
@click.option(
    "--max-tokens-limit",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Largest max_tokens a request may ask for (400 above).",
)
@click.option(
    "--max-prompt-chars",
    default=16_384,
    show_default=True,
    type=click.IntRange(1),
    help="Characters of text per request, checked before anything is tokenised (400 above).",
)
@click.option(
    "--api-key",
    envvar="OKVQA_API_KEY",
    show_envvar=True,
    metavar="KEY",
    help="Require `Authorization: Bearer KEY` on /v1/* (401 otherwise); the probes stay open. "
    "Prefer the environment variable: arguments are visible in the process list.",
)
@click.option("--enable-docs", is_flag=True, help="Serve /openapi.json and /docs (off: 404).")
@click.option(
    "--pad-to-square/--no-pad-to-square",
    default=True,
    show_default=True,
    help="Pad images to a square with the processor's mean colour, as training does.",
)
@click.option(
    "--prompt-template",
    type=click.Choice(PROMPT_TEMPLATES),
    default=DEFAULT_PROMPT_TEMPLATE,
    show_default=True,
    help="Conversation template, as trained (training.promptTemplate): llava_v1 = LLaVA's vicuna_v1 "
    "with its system prompt; hf = the model's own chat template.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where s3:// models are synced (default $OKVQA_SCRATCH/models or ~/.cache/okvqa-k8s).",
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
def serve(
    model: str,
    adapter: str | None,
    served_model_name: str | None,
    host: str,
    port: int,
    dtype: str,
    device: str,
    max_batch_size: int,
    batch_wait_ms: float,
    max_queue: int,
    max_body_mb: float,
    max_image_mb: float,
    max_image_pixels: int,
    max_images: int,
    allow_image_urls: bool,
    image_url_timeout: float,
    image_url_networks: tuple[str, ...],
    default_max_tokens: int,
    max_tokens_limit: int,
    max_prompt_chars: int,
    api_key: str | None,
    enable_docs: bool,
    pad_to_square: bool,
    prompt_template: str,
    cache_dir: Path | None,
    log_level: str,
) -> None:
    """Serve a LLaVA model with an OpenAI-compatible API.

    Routes: POST /v1/chat/completions (image_url parts as data: URLs; `stream: true` as Server-Sent
    Events), GET /v1/models, GET /healthz (live), GET /readyz (200 once the model is loaded). Greedy
    decoding unless temperature > 0.
    """
    import uvicorn

    from okvqa_k8s.hub import is_local_path
    from okvqa_k8s.serve.app import ServerSettings, create_app
    from okvqa_k8s.serve.engine import LlavaEngine
    from okvqa_k8s.serve.images import ImageLimits, MiB

    def resolve() -> tuple[Path, Path | None]:
        return _local_model(model, cache_dir, "--model"), (
            _local_model(adapter, cache_dir, "--adapter") if adapter else None
        )

    # Local paths are checked now (one-line error, no server); s3:// and hub models download on the
    # loader thread, so the process is live (and observable) while a large model streams in.
    remote = any(u and not is_local_path(u) for u in (model, adapter))
    resolved = None if remote else resolve()

    def load() -> LlavaEngine:
        model_dir, adapter_dir = resolved or resolve()
        return LlavaEngine.load(
            model_dir,
            adapter_dir=adapter_dir,
            dtype=dtype,
            device=device,
            model_id=served_model_name,
            pad_to_square=pad_to_square,
            prompt_template=prompt_template,
        )

    settings = ServerSettings(
        max_body_bytes=int(max_body_mb * MiB),
        images=ImageLimits(
            max_image_bytes=int(max_image_mb * MiB),
            max_image_pixels=max_image_pixels,
            max_images_per_request=max_images,
            allow_urls=allow_image_urls,
            url_timeout_s=image_url_timeout,
            url_allowed_networks=image_url_networks,
        ),
        default_max_tokens=default_max_tokens,
        max_tokens_limit=max_tokens_limit,
        max_batch_size=max_batch_size,
        batch_wait_s=batch_wait_ms / 1000.0,
        max_queue=max_queue,
        max_prompt_chars=max_prompt_chars,
        api_key=api_key or None,
        enable_docs=enable_docs,
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.api_key is None:
        logging.getLogger(__name__).warning("no --api-key (OKVQA_API_KEY): /v1/* is open to any client")
    uvicorn.run(create_app(load, settings), host=host, port=port, log_level=log_level)


@click.command("ui")
@click.option("--base", "base_url", required=True, metavar="URL", help="Endpoint of the base model.")
@click.option(
    "--finetuned", "finetuned_url", required=True, metavar="URL", help="Endpoint of the fine-tuned model."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--max-tokens", default=16, show_default=True, type=click.IntRange(1, 512), help="Answer length limit."
)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for each model.")
def ui(base_url: str, finetuned_url: str, host: str, port: int, max_tokens: int, timeout: float) -> None:
    """A web page to ask both models the same question about an uploaded image, answers side by side.

    The page talks only to this server, which forwards to both endpoints (no CORS set-up needed).
    """
    import uvicorn

    from okvqa_k8s.serve.ui import create_ui_app

    app = create_ui_app(base_url, finetuned_url, max_tokens=max_tokens, timeout=timeout)
    click.echo(f"compare UI on http://{host}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


COMMANDS = [serve, ui]
