"""`okvqa-k8s train` (the in-pod entrypoint) and `okvqa-k8s merge`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click


def _configure_logging() -> None:
    rank = os.environ.get("RANK", "0")
    level = logging.INFO if rank == "0" else logging.WARNING
    logging.basicConfig(level=level, format=f"[rank {rank}] %(asctime)s %(name)s: %(message)s", force=True)
    for noisy in ("DeepSpeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.command("train")
@click.option(
    "--spec", "spec_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="FineTune spec YAML (a bare spec or a whole FineTune object).",
)  # fmt: skip
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec field (camelCase path)."
)
@click.option(
    "--deepspeed", default=None, metavar="zero2|zero3|PATH",
    help="DeepSpeed config: a shipped ZeRO stage or a JSON file ('auto' filled in). Default: the spec's.",
)  # fmt: skip
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after N optimiser steps.")
@click.option(
    "--scratch", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Node-local work dir (dataset copy, checkpoints). Default: $OKVQA_SCRATCH or /okvqa/scratch.",
)  # fmt: skip
def train_command(
    spec_path: Path,
    overrides: tuple[str, ...],
    deepspeed: str | None,
    max_steps: int | None,
    scratch: Path | None,
) -> None:
    """Fine-tune LLaVA with LoRA + DeepSpeed as one process of a (multi-node) job.

    Launch under torchrun for more than one process; inside a PyTorchJob pod:
    `torchrun --no-python okvqa-k8s train --spec /etc/okvqa/spec.yaml`. Resumes from the latest complete
    checkpoint under the spec's outputUri; writes adapter/, merged/, metrics.json and _COMPLETE there.
    """
    from okvqa_k8s.spec import load_spec
    from okvqa_k8s.train.env import scratch_dir
    from okvqa_k8s.train.trainer import RunOptions, train

    _configure_logging()
    extra = list(overrides) + ([f"training.maxSteps={max_steps}"] if max_steps else [])
    spec = load_spec(spec_path, extra)
    options = RunOptions(
        deepspeed=deepspeed or spec.training.deepspeed,
        scratch=scratch or Path(scratch_dir(os.environ)),
    )
    metrics = train(spec, options)
    if os.environ.get("RANK", "0") == "0":
        click.echo(
            f"trained {metrics.get('global_step')} steps: loss {metrics.get('first_loss')} → "
            f"{metrics.get('final_loss')}, {metrics.get('samples_per_second')} samples/s; "
            f"outputs in {spec.output_uri}"
        )


@click.command("merge")
@click.option("--base", required=True, help="Base LLaVA checkpoint: local directory, s3:// URI or hub id.")
@click.option("--adapter", required=True, help="peft adapter directory or s3:// URI (from a training run).")
@click.option("--out", required=True, help="Where the merged model goes: directory or s3:// URI.")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]), default="bf16", show_default=True)
def merge_command(base: str, adapter: str, out: str, dtype: str) -> None:
    """Fold a LoRA adapter (and its trained projector) into the base: a plain HF model for vLLM."""
    import tempfile

    from okvqa_k8s.storage import sync_down, sync_up
    from okvqa_k8s.storage.uri import parse
    from okvqa_k8s.train.merge import merge_adapter
    from okvqa_k8s.train.trainer import check_model_source

    _configure_logging()
    check_model_source(base)

    def local(uri: str, work: str, name: str) -> str:
        if uri.startswith("s3://"):
            sync_down(uri, Path(work) / name)
            return str(Path(work) / name)
        # a local path (plain or file://), or a hub id that from_pretrained resolves itself
        return parse(uri).path if uri.startswith("file://") else uri

    with tempfile.TemporaryDirectory(prefix="okvqa-merge-") as work:
        is_remote = out.startswith("s3://")
        target = Path(work) / "merged" if is_remote else Path(parse(out).path)
        merge_adapter(local(base, work, "base"), local(adapter, work, "adapter"), target, dtype=dtype)
        if is_remote:
            sync_up(target, out)
    click.echo(f"merged model written to {out}")


COMMANDS = [train_command, merge_command]
