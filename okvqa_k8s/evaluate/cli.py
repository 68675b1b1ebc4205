"""`okvqa-k8s eval`: `score` (official accuracy of a predictions file), `run` (accuracy of a served model)
and `compare` (before/after report)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from okvqa_k8s.evaluate.metric import DEFAULT_METRIC, METRIC_SOURCES, METRICS, Metric


def metric_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--metric`: which version of the VQA evaluator scores the answers (the result names it)."""
    return click.option(
        "--metric",
        type=click.Choice(METRICS),
        default=DEFAULT_METRIC,
        show_default=True,
        help="VQA accuracy version: 'official' is GT-Vision-Lab/VQA vqaEval.py as it is now (a013f00, "
        "2021); 'vqaeval-2017' the older copy many published OK-VQA numbers used (the prediction always "
        "normalised, the human answers by punctuation only).",
    )(command)


@click.group("eval")
def eval_group() -> None:
    """Measure VQA accuracy: score predictions, evaluate an endpoint, compare before/after."""


@eval_group.command("run")
@click.option(
    "--endpoint",
    required=True,
    metavar="URL",
    help="OpenAI-compatible server (okvqa-k8s serve, or vLLM), e.g. http://127.0.0.1:8000.",
)
@click.option(
    "--dataset",
    required=True,
    metavar="DIR_OR_URI",
    help="Prepared dataset: a directory or an s3:// URI (fetched once into --cache-dir).",
)
@click.option(
    "--split",
    default="val",
    show_default=True,
    help="Split to evaluate (<split>.json and its <split>_questions.json / <split>_annotations.json).",
)
@click.option(
    "--category",
    "categories",
    multiple=True,
    metavar="NAME",
    help="Only these OK-VQA categories (code, name or 'all'; repeatable; default: every question of the "
    "split). Each must have questions in the split.",
)
@click.option(
    "--trained-category",
    "trained_categories",
    multiple=True,
    metavar="NAME",
    help="Categories the model was fine-tuned on (repeatable): marked in the report, which adds the "
    "trained/untrained groups ('untrained categories: Δ … pp on n questions').",
)
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Requests in flight at once.",
)
@click.option(
    "--max-questions", type=click.IntRange(min=1), help="Evaluate only the first N questions (by id)."
)
@click.option(
    "--max-tokens",
    default=16,
    show_default=True,
    type=click.IntRange(1, 512),
    help="Answer length limit; short answers are what the metric scores.",
)
@click.option(
    "--out",
    "out_dir",
    default="eval-results",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (predictions.jsonl, results.json, results.md; resumable).",
)
@click.option(
    "--compare",
    "compare_url",
    metavar="BASE_URL",
    help="Also evaluate this base-model endpoint and write a before/after report; results go to "
    "OUT/finetuned, OUT/base and OUT/compare.*.",
)
@click.option("--restart", is_flag=True, help="Discard predictions already in --out instead of resuming.")
@metric_option
@click.option(
    "--upload",
    "upload_uri",
    metavar="URI",
    help="When done, copy --out to this s3:// URI or directory (e.g. <outputUri>/eval), for in-cluster Jobs.",
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds per request.")
@click.option(
    "--retries",
    default=6,
    show_default=True,
    type=click.IntRange(0, 20),
    help="Retries of a request on 429/5xx or a dropped connection, with exponential back-off.",
)
@click.option(
    "--wait",
    "wait_s",
    default=0.0,
    show_default=True,
    help="Wait up to this many seconds for the endpoints to become ready.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where an s3:// dataset is downloaded (default $OKVQA_SCRATCH/datasets or ~/.cache/okvqa-k8s).",
)
def run_cmd(
    endpoint: str,
    dataset: str,
    split: str,
    categories: tuple[str, ...],
    trained_categories: tuple[str, ...],
    concurrency: int,
    max_questions: int | None,
    max_tokens: int,
    out_dir: Path,
    compare_url: str | None,
    restart: bool,
    metric: Metric,
    upload_uri: str | None,
    timeout: float,
    retries: int,
    wait_s: float,
    cache_dir: Path | None,
) -> None:
    """Ask every question of a split and write predictions plus their VQA accuracy (JSON + markdown).

    The last line printed is the path of the results JSON (compare.json with --compare).
    """
    import json

    from okvqa_k8s.data.categories import resolve_categories
    from okvqa_k8s.evaluate.client import ChatClient
    from okvqa_k8s.evaluate.report import compare_markdown, write_compare_report
    from okvqa_k8s.evaluate.runner import resolve_dataset, results_markdown, run_eval

    codes = resolve_categories(categories) if categories else None
    trained = resolve_categories(trained_categories, "--trained-category") if trained_categories else None
    dataset_dir = resolve_dataset(dataset, cache_dir)
    targets = (
        [(endpoint, out_dir)]
        if not compare_url
        else [(endpoint, out_dir / "finetuned"), (compare_url, out_dir / "base")]
    )
    paths = []
    for url, target in targets:
        with ChatClient(url, timeout=timeout, retries=retries) as client:
            if wait_s > 0:
                client.wait_ready(wait_s)
            paths.append(
                run_eval(
                    client,
                    dataset_dir,
                    split,
                    target,
                    dataset_label=dataset,
                    categories=codes,
                    trained=trained,
                    concurrency=concurrency,
                    max_questions=max_questions,
                    max_tokens=max_tokens,
                    restart=restart,
                    metric=metric,
                )
            )
    final = write_compare_report(paths[1], paths[0], out_dir) if compare_url else paths[0]
    table = compare_markdown if compare_url else results_markdown
    click.echo(table(json.loads(final.read_text())))
    if upload_uri:
        from okvqa_k8s.storage import join, sync_up

        sync_up(out_dir, upload_uri)
        click.echo(join(upload_uri, final.relative_to(out_dir).as_posix()), err=True)
    click.echo(final)


@eval_group.command("compare")
@click.argument("base", type=click.Path(exists=True, path_type=Path))
@click.argument("finetuned", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    default="eval-compare",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory of the report.",
)
def compare_cmd(base: Path, finetuned: Path, out_dir: Path) -> None:
    """Before/after report from two `eval run` results (their results.json or --out directories):
    compare.json, compare.md (accuracy table with deltas), per_category.png, changed.html.

    Results made with --trained-category mark those categories and sum up the others in one line
    ("untrained categories: Δ −x.x pp on n questions").

    The last line printed is the path of compare.json.
    """
    import json

    from okvqa_k8s.evaluate.report import compare_markdown, write_compare_report

    report = write_compare_report(base, finetuned, out_dir)
    click.echo(compare_markdown(json.loads(report.read_text())))
    click.echo(report)


@eval_group.command("score")
@click.option(
    "--predictions",
    "-p",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSON lines: {"question_id": int, "answer": str}.',
)
@click.option(
    "--questions",
    "-q",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="OK-VQA questions file (official format).",
)
@click.option(
    "--annotations",
    "-a",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="OK-VQA annotations file (official format).",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the JSON result (default: next to the predictions, *.score.json).",
)
@metric_option
def score(predictions: Path, questions: Path, annotations: Path, out: Path | None, metric: Metric) -> None:
    """Score predictions with the VQA accuracy (the current official version unless --metric says
    otherwise), overall and per category."""
    from okvqa_k8s.evaluate.score import load_predictions, score_predictions
    from okvqa_k8s.fsutil import atomic_write_json

    result = score_predictions(load_predictions(predictions), questions, annotations, metric)
    out = out or predictions.with_suffix(".score.json")
    atomic_write_json(out, result)
    click.echo(f"metric: {metric} ({METRIC_SOURCES[metric]})")
    click.echo(f"overall: {result['overall']:.2f}% ({result['count']} questions)")
    for name, cat in result["per_category"].items():
        click.echo(f"  {name}: {cat['accuracy']:.2f}% ({cat['count']})")
    click.echo(f"wrote {out}")


COMMANDS = [eval_group]
