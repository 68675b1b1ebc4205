"""Where the chart is: `--chart-dir`, else the `charts/okvqa` of the checkout holding the current directory.

The installed package does not ship the chart (Helm reads it from a checkout or a packaged chart), so
`chart generate` and `crd --check` are told where it is, or find it from where they are run; they never
look beside their own source file, which in an installed wheel is site-packages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from okvqa_k8s.errors import UserError

CHART_PATH = Path("charts") / "okvqa"
F = TypeVar("F", bound=Callable[..., Any])


def checkout_chart(start: Path | None = None) -> Path | None:
    """`charts/okvqa` of the checkout holding `start` (default: the current directory), or None."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / CHART_PATH / "Chart.yaml").is_file():
            return directory / CHART_PATH
    return None


def resolve_chart_dir(chart_dir: Path | None) -> Path:
    """The chart directory to work on; a one-line error when none is given and none can be found."""
    found = chart_dir or checkout_chart()
    if found is None:
        raise UserError(
            f"--chart-dir: not given, and {Path.cwd()} is not inside an okvqa-k8s checkout "
            f"(no {CHART_PATH}/Chart.yaml above it): pass the chart's directory"
        )
    if not (found / "Chart.yaml").is_file():
        raise UserError(f"{found}: not a chart directory (no Chart.yaml)")
    return found


def chart_dir_option(command: F) -> F:
    """`--chart-dir DIR`, shared by every command that reads or writes the chart."""
    return click.option(
        "--chart-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Chart directory [default: {CHART_PATH} of the checkout holding the current directory].",
    )(command)
