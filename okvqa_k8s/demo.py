"""`okvqa-k8s demo`: the whole product on one machine, with no GPU, no cluster and no download.

Synthetic OK-VQA → prepared "Other" dataset → a tiny real-architecture LLaVA → `submit --local` of the
example FineTune (the rendered PyTorchJob's 2 replicas as local processes, LoRA + DeepSpeed, checkpoints
to local storage) → base and fine-tuned models served → both evaluated with the official metric. It ends
by printing the before/after table and, as its last line, the path of the JSON report.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click

RUN_NAME = "tiny-cpu"


@click.command("demo")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=Path("examples/tiny-cpu.yaml"),
    show_default=True,
    help="The FineTune to run; model, dataset and output paths are pointed at WORKDIR.",
)
@click.option(
    "--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"), show_default=True
)
@click.option(
    "--size", default=3000, show_default=True, type=click.IntRange(min=40), help="Synthetic questions."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Extra spec overrides.")
def demo(spec_file: Path, workdir: Path, size: int, overrides: tuple[str, ...]) -> None:
    """Fine-tune a tiny LLaVA on synthetic OK-VQA "Other" locally and show accuracy before/after."""
    from okvqa_k8s.data.synth import make_prepared_dataset
    from okvqa_k8s.errors import UserError
    from okvqa_k8s.evaluate.report import compare_markdown
    from okvqa_k8s.fsutil import atomic_write_json
    from okvqa_k8s.kube.backends.local import run_local
    from okvqa_k8s.spec import load_spec
    from okvqa_k8s.train.tiny import build_tiny_model, dataset_texts

    started = time.monotonic()
    workdir = workdir.resolve()
    dataset, model, output = workdir / "dataset", workdir / "tiny-llava", workdir / "output"
    # Everything is rebuilt each time (seconds, and deterministic): a stale dataset, model or output
    # directory would be reused, resumed from, or found already complete.
    for path in (dataset, dataset.with_name(dataset.name + "-raw"), model, output):
        shutil.rmtree(path, ignore_errors=True)
    click.echo(f"==> 1/4 synthetic OK-VQA ({size} questions) → prepared 'Other' dataset: {dataset}")
    make_prepared_dataset(dataset, size=size, seed=0)
    click.echo(f"==> 2/4 tiny LLaVA (CLIP vision + Llama, tokenizer trained on the dataset): {model}")
    build_tiny_model(model, texts=dataset_texts(dataset), seed=0)
    spec = load_spec(
        spec_file,
        [
            f"model.name={model}",
            f"dataset.uri={dataset}",
            f"outputUri={output}",
            "storage.endpoint=null",
            "storage.credentialsSecret=null",
            *overrides,
        ],
    )
    click.echo(
        f"==> 3/4 submit --local {spec_file}: {spec.nodes} nodes × {spec.nproc_per_node} process, "
        f"DeepSpeed {spec.training.deepspeed}, LoRA r={spec.lora.r}; then serve + evaluate base and tuned"
    )
    status = run_local(spec, RUN_NAME, workdir / "runs", echo=click.echo)
    if status.get("phase") != "Succeeded":
        raise UserError(f"demo run {status.get('phase', 'stopped')}: {status.get('message', '')}")
    compare = json.loads((output / "eval" / "compare.json").read_text())
    metrics_path = output / "metrics.json"
    report = {
        "base": compare["base"],
        "finetuned": compare["finetuned"],
        "delta": compare.get("delta"),
        "training": json.loads(metrics_path.read_text()) if metrics_path.is_file() else None,
        "spec": spec.to_wire(),
        "seconds": round(time.monotonic() - started, 1),
        "report_dir": str(output / "eval"),
    }
    report_path = workdir / "report.json"
    atomic_write_json(report_path, report)
    click.echo("==> 4/4 VQA accuracy on the held-out 'Other' questions (official metric, percent)")
    click.echo(compare_markdown(compare))
    click.echo(
        f"report: {output / 'eval' / 'compare.md'}, chart: {output / 'eval' / 'per_category.png'}, "
        f"changed answers: {output / 'eval' / 'changed.html'}"
    )
    click.echo(f"took {report['seconds']:.0f} s")
    click.echo(str(report_path))
