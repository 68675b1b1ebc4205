"""The demo's pipeline: synthetic OK-VQA → prepared "Other" dataset (and its evaluation set of every
category) → a tiny real-architecture LLaVA → `submit --local` of the example FineTune (the rendered
PyTorchJob's 2 replicas as local processes, LoRA + DeepSpeed, checkpoints to local storage) → base and
fine-tuned models served → both evaluated on all eleven categories with the VQA metric of the spec
(`evaluation.metric`, the current official one by default) → a
before/after report: the trained category, and what training on it did to the ten others.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from okvqa_k8s.data.synth import make_prepared_dataset
from okvqa_k8s.errors import UserError
from okvqa_k8s.evaluate.report import compare_markdown
from okvqa_k8s.fsutil import atomic_write_json
from okvqa_k8s.kube.backends.local import run_local
from okvqa_k8s.layout import EVAL_SET
from okvqa_k8s.spec import load_spec
from okvqa_k8s.train.tiny import build_tiny_model, dataset_texts

RUN_NAME = "tiny-cpu"


def run_demo(
    spec_file: Path, workdir: Path, size: int, overrides: tuple[str, ...], echo: Callable[[str], None]
) -> Path:
    """Run the whole demo under `workdir`; returns the path of its JSON report."""
    started = time.monotonic()
    workdir = workdir.resolve()
    dataset, model, output = workdir / "dataset", workdir / "tiny-llava", workdir / "output"
    # Everything is rebuilt each time (seconds, and deterministic): a stale dataset, model or output
    # directory would be reused, resumed from, or found already complete.
    for path in (dataset, dataset.with_name(dataset.name + "-raw"), model, output):
        shutil.rmtree(path, ignore_errors=True)
    echo(
        f"==> 1/4 synthetic OK-VQA ({size} questions) → prepared 'Other' dataset: {dataset} "
        f"(evaluation set of every category: {dataset / EVAL_SET})"
    )
    make_prepared_dataset(dataset, size=size, seed=0)
    echo(f"==> 2/4 tiny LLaVA (CLIP vision + Llama, tokenizer trained on the dataset): {model}")
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
    echo(
        f"==> 3/4 submit --local {spec_file}: {spec.nodes} nodes × {spec.nproc_per_node} process, "
        f"DeepSpeed {spec.training.deepspeed}, LoRA r={spec.lora.r}; then serve + evaluate base and tuned"
    )
    status = run_local(spec, RUN_NAME, workdir / "runs", echo=echo)
    if status.get("phase") != "Succeeded":
        raise UserError(f"demo run {status.get('phase', 'stopped')}: {status.get('message', '')}")
    compare = json.loads((output / "eval" / "compare.json").read_text())
    metrics_path = output / "metrics.json"
    report = {
        "metric": compare["metric"],
        "base": compare["base"],
        "finetuned": compare["finetuned"],
        "delta": compare.get("delta"),
        "trained_categories": compare.get("trained_categories"),
        "groups": compare.get("groups"),
        "summary": compare.get("summary"),
        "training": json.loads(metrics_path.read_text()) if metrics_path.is_file() else None,
        "spec": spec.to_wire(),
        "seconds": round(time.monotonic() - started, 1),
        "report_dir": str(output / "eval"),
    }
    report_path = workdir / "report.json"
    atomic_write_json(report_path, report)
    trained = ", ".join(compare.get("trained_categories") or ["?"])
    echo(
        f"==> 4/4 VQA accuracy on the held-out questions of every category, trained on {trained} "
        f"(metric {compare['metric']}, percent)"
    )
    echo(compare_markdown(compare))
    echo(
        f"report: {output / 'eval' / 'compare.md'}, chart: {output / 'eval' / 'per_category.png'}, "
        f"changed answers: {output / 'eval' / 'changed.html'}"
    )
    echo(f"took {report['seconds']:.0f} s")
    return report_path
