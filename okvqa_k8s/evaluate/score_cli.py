"""`okvqa-k8s eval score`: official accuracy of a predictions file, printed and written as JSON."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
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
def score(predictions: Path, questions: Path, annotations: Path, out: Path | None) -> None:
    """Score predictions with the official VQA accuracy, overall and per category."""
    from okvqa_k8s.evaluate.score import load_predictions, score_predictions
    from okvqa_k8s.fsutil import atomic_write_json

    result = score_predictions(load_predictions(predictions), questions, annotations)
    out = out or predictions.with_suffix(".score.json")
    atomic_write_json(out, result)
    click.echo(f"overall: {result['overall']:.2f}% ({result['count']} questions)")
    for name, cat in result["per_category"].items():
        click.echo(f"  {name}: {cat['accuracy']:.2f}% ({cat['count']})")
    click.echo(f"wrote {out}")
