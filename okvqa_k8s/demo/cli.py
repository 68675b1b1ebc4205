"""`okvqa-k8s demo`: the whole product on one machine, with no GPU, no cluster and no download.

It ends by printing the before/after table and, as its last line, the path of the JSON report.
"""

from __future__ import annotations

from pathlib import Path

import click


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
    from okvqa_k8s.demo.pipeline import run_demo

    click.echo(str(run_demo(spec_file, workdir, size, overrides, click.echo)))


COMMANDS = [demo]
