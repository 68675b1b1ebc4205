"""`okvqa-k8s`: the one command users run. Each area registers its own click group or command here.

Heavy libraries (torch, transformers, kubernetes) are imported inside the commands that need them, so
`okvqa-k8s --help` and the data/storage commands stay fast.
"""

from __future__ import annotations

import sys

import click

from okvqa_k8s import __version__
from okvqa_k8s.chartgen import chart
from okvqa_k8s.data.cli import data
from okvqa_k8s.demo import demo
from okvqa_k8s.errors import OkvqaError
from okvqa_k8s.evaluate.cli import compare_cmd, run_cmd
from okvqa_k8s.evaluate.score_cli import score
from okvqa_k8s.kube.cli import COMMANDS as KUBE_COMMANDS
from okvqa_k8s.kube.dev_cli import dev
from okvqa_k8s.serve.cli import serve, ui
from okvqa_k8s.train.cli import merge_command, train_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="okvqa-k8s")
def cli() -> None:
    """Fine-tune LLaVA-1.5 on OK-VQA with LoRA + DeepSpeed on Kubernetes, then serve and evaluate it."""


@cli.group("eval")
def eval_group() -> None:
    """Measure VQA accuracy: score predictions, evaluate an endpoint, compare before/after."""


cli.add_command(data)
cli.add_command(chart)
cli.add_command(dev)
cli.add_command(demo)
eval_group.add_command(score)
eval_group.add_command(run_cmd)
eval_group.add_command(compare_cmd)
cli.add_command(serve)
cli.add_command(ui)
cli.add_command(train_command)
cli.add_command(merge_command)
for command in KUBE_COMMANDS:
    cli.add_command(command)


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
