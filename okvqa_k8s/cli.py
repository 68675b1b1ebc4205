"""`okvqa-k8s`: the one command users run. It only assembles the commands each area's `cli.py` exports.

Every area keeps its commands in its own `cli.py` (`COMMANDS`, plus storage's `DATA_COMMANDS` for the
`data` group). Heavy libraries (torch, transformers, kubernetes) are imported inside the commands that
need them, so `okvqa-k8s --help` and the data/storage commands stay fast.
"""

from __future__ import annotations

import sys

import click

from okvqa_k8s import __version__
from okvqa_k8s.chart import cli as chart_cli
from okvqa_k8s.data import cli as data_cli
from okvqa_k8s.demo import cli as demo_cli
from okvqa_k8s.dev import cli as dev_cli
from okvqa_k8s.errors import OkvqaError
from okvqa_k8s.evaluate import cli as evaluate_cli
from okvqa_k8s.kube import cli as kube_cli
from okvqa_k8s.serve import cli as serve_cli
from okvqa_k8s.storage import cli as storage_cli
from okvqa_k8s.train import cli as train_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="okvqa-k8s")
def cli() -> None:
    """Fine-tune LLaVA-1.5 on OK-VQA with LoRA + DeepSpeed on Kubernetes, then serve and evaluate it."""


for area in (
    data_cli,
    storage_cli,
    train_cli,
    serve_cli,
    evaluate_cli,
    kube_cli,
    chart_cli,
    demo_cli,
    dev_cli,
):
    for command in area.COMMANDS:
        cli.add_command(command)
for command in storage_cli.DATA_COMMANDS:
    data_cli.data.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: deliberate failures become one line on stderr (user errors: exit code 2), never a
    traceback; anything else is a bug and keeps its traceback."""
    try:
        cli.main(args=argv, prog_name="okvqa-k8s", standalone_mode=False)
    except OkvqaError as exc:
        click.echo(f"okvqa-k8s: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("okvqa-k8s: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
