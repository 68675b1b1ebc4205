"""`okvqa-k8s chart generate`: keep the chart's generated files equal to their sources in the package."""

from __future__ import annotations

from pathlib import Path

import click

from okvqa_k8s.chart.location import chart_dir_option, resolve_chart_dir
from okvqa_k8s.errors import UserError


@click.group()
def chart() -> None:
    """The Helm chart (charts/okvqa): files generated from the spec and the operator's RBAC rules."""


@chart.command()
@click.option("--check", is_flag=True, help="Write nothing; exit non-zero when a generated file is stale.")
@chart_dir_option
def generate(check: bool, chart_dir: Path | None) -> None:
    """Regenerate values.schema.json, files/operator-rules.yaml and README.md of the chart."""
    from okvqa_k8s.chart.files import drift, generated_files
    from okvqa_k8s.fsutil import atomic_write_text

    chart_dir = resolve_chart_dir(chart_dir)
    if check:
        problems = drift(chart_dir)
        if problems:
            raise UserError("; ".join(problems))
        click.echo(f"{chart_dir}: generated files are current")
        return
    for rel, text in generated_files(chart_dir).items():
        atomic_write_text(chart_dir / rel, text)
        click.echo(f"wrote {chart_dir / rel}")


COMMANDS = [chart]
