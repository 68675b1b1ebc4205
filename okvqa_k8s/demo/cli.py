"""`okvqa-k8s demo`: the whole product on one machine, with no GPU, no cluster and no download.

It ends by printing the before/after table and, as its last line, the path of the JSON report.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

EXAMPLE = "examples/tiny-cpu.yaml"


@click.command("demo")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The FineTune to run; model, dataset and output paths are pointed at WORKDIR "
    f"[default: {EXAMPLE} shipped with okvqa-k8s].",
)
@click.option(
    "--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"), show_default=True
)
@click.option(
    "--size", default=3000, show_default=True, type=click.IntRange(min=40), help="Synthetic questions."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Extra spec overrides.")
def demo(spec_file: Path | None, workdir: Path, size: int, overrides: tuple[str, ...]) -> None:
    """Fine-tune a tiny LLaVA on synthetic OK-VQA "Other" locally and show accuracy before/after on
    every category: the one trained on, and what that did to the ten others."""
    from okvqa_k8s.demo.pipeline import run_demo

    # The example ships inside the package, so an installed okvqa-k8s runs the demo from anywhere.
    example = resources.files("okvqa_k8s").joinpath(EXAMPLE)
    with resources.as_file(example) as default_spec:
        click.echo(str(run_demo(spec_file or default_spec, workdir, size, overrides, click.echo)))


COMMANDS = [demo]
