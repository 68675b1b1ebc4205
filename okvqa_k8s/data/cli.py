"""`okvqa-k8s data synth/prepare`: make and prepare datasets (`stage`/`fetch` come from storage/cli.py)."""

from __future__ import annotations

from pathlib import Path

import click

from okvqa_k8s.data.images import DEFAULT_MAX_PIXELS


@click.group()
def data() -> None:
    """Prepare OK-VQA for LLaVA training and move it to and from S3."""


@data.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--size", default=400, show_default=True, type=click.IntRange(min=2), help="Questions in all.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same bytes.")
def synth(out: Path, size: int, seed: int) -> None:
    """Write a synthetic OK-VQA-format dataset (official JSON + COCO-named JPEGs) to OUT.

    Questions span all 11 categories and ask for colours, shapes and counts drawn in the image, so a
    tiny model can learn them. Feed OUT to `data prepare`.
    """
    from okvqa_k8s.data.synth import synthesize
    from okvqa_k8s.errors import UserError

    if out.exists():
        raise UserError(f"{out}: already exists; choose a new directory")
    counts = synthesize(out, size=size, seed=seed)
    click.echo(f"wrote {counts['train']} train + {counts['val']} val questions to {out}")


@data.command()
@click.argument("source", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--out", "-o", required=True, type=click.Path(path_type=Path), help="Dataset directory to create."
)
@click.option(
    "--images",
    type=click.Path(path_type=Path, file_okay=False),
    help="COCO image root holding train2014/ and val2014/ (default: SOURCE).",
)
@click.option(
    "--category",
    "-c",
    "categories",
    multiple=True,
    default=["other"],
    show_default=True,
    help="Category code (one..ten, other), name ('Plants and Animals') or 'all'; repeatable.",
)
@click.option(
    "--eval-category",
    "eval_categories",
    multiple=True,
    default=["all"],
    show_default=True,
    help="Categories of the evaluation set written to OUT/eval (the evaluation splits, every split but "
    "train); repeatable.",
)
@click.option(
    "--no-eval-set", is_flag=True, help="Write no OUT/eval (the FineTune then needs evaluation.datasetUri)."
)
@click.option("--split", "splits", multiple=True, default=["train", "val"], show_default=True)
@click.option("--answer", type=click.Choice(["most_common", "all"]), default="most_common", show_default=True)
@click.option("--skip-bad", is_flag=True, help="Skip (and count) bad questions/images instead of failing.")
@click.option(
    "--overwrite", is_flag=True, help="Replace OUT if it exists (only once the new one is complete)."
)
@click.option("--max-pixels", default=DEFAULT_MAX_PIXELS, show_default=True, type=click.IntRange(min=1))
def prepare(
    source: Path,
    out: Path,
    images: Path | None,
    categories: tuple[str, ...],
    eval_categories: tuple[str, ...],
    no_eval_set: bool,
    splits: tuple[str, ...],
    answer: str,
    skip_bad: bool,
    overwrite: bool,
    max_pixels: int,
) -> None:
    """Turn OK-VQA files in SOURCE (OpenEnded_mscoco_{split}2014_questions.json,
    mscoco_{split}2014_annotations.json) and COCO images into LLaVA training data in OUT.

    OUT/eval holds the evaluation set: the evaluation splits with every category (--eval-category), so
    the run trained on --category is also scored on the categories it was not trained on.
    """
    from okvqa_k8s.data.prepare import prepare_dataset

    manifest = prepare_dataset(
        source,
        out,
        images=images,
        categories=list(categories),
        splits=tuple(splits),
        answer=answer,
        skip_bad=skip_bad,
        overwrite=overwrite,
        max_pixels=max_pixels,
        eval_categories=list(eval_categories),
        eval_set=not no_eval_set,
    )

    def counts(label: str, per_split: dict) -> None:
        for split, c in per_split.items():
            cats = ", ".join(f"{k}: {v}" for k, v in c["per_category"].items())
            sizes = f"{c['records']} records, {c['images']} images, {c['skipped']} skipped"
            click.echo(f"{label}{split}: {sizes} ({cats})")

    counts("", manifest["counts"])
    if "evaluation_set" in manifest:
        counts(f"{manifest['evaluation_set']['path']}/", manifest["evaluation_set"]["counts"])
    click.echo(f"wrote {out}")


COMMANDS = [data]
