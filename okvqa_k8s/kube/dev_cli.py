"""`okvqa-k8s dev`: tools for people working on this project.

`dev cluster up` runs, in the foreground, the same real control plane the cluster tests use (built by
`make testenv`): a throwaway cluster with kwok GPU nodes and the Kubeflow training operator, to try the
operator, the chart or `kubectl` against without kind or Docker. Ctrl-C stops it and deletes its data.
"""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

import click

from okvqa_k8s.errors import UserError


@click.group()
def dev() -> None:
    """Development helpers (a local control plane from `make testenv`)."""


@dev.group()
def cluster() -> None:
    """A local Kubernetes control plane: etcd, kube-apiserver, controllers, kwok, training operator."""


def _testenv() -> Any:
    """The test-environment package, which okvqa-k8s does not ship: say how to get it when missing."""
    try:
        import okvqa_testenv
    except ImportError:
        raise UserError(
            "`dev cluster` needs the test environment package okvqa-k8s-testenv, which is not installed: "
            "in a clone of okvqa-k8s run `make venv`, or `pip install -e ./testenv`"
        ) from None
    return okvqa_testenv


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the cluster like Ctrl-C does, so `kill` never leaves its processes behind."""
    raise KeyboardInterrupt


@cluster.command("up")
@click.option("--s3/--no-s3", default=False, show_default=True, help="Also start a SeaweedFS S3 server.")
def up(s3: bool) -> None:
    """Start the control plane and keep it running until Ctrl-C."""
    testenv = _testenv()
    missing = testenv.missing_binaries(s3=s3)
    if missing:
        raise UserError(
            f"the control plane is not built (missing in {testenv.testenv_dir()}: {', '.join(missing)}); "
            "run `make testenv`"
        )
    signal.signal(signal.SIGTERM, _interrupt)
    plane = testenv.ControlPlane(s3=s3)
    try:
        click.echo("starting etcd, kube-apiserver, controller-manager, scheduler, kwok, training operator...")
        try:
            plane.start()
        except testenv.ControlPlaneError as exc:
            click.echo(str(exc), err=True)
            raise UserError("the control plane did not start; the failing component's log is above") from exc
        click.echo(f"control plane up in {plane.start_seconds:.1f} s at {plane.server}")
        click.echo(f"kubeconfig: {plane.kubeconfig}")
        click.echo(f"export KUBECONFIG={plane.kubeconfig}")
        if plane.s3 is not None:
            for name, value in plane.s3.env().items():
                click.echo(f"export {name}={value}")
        click.echo("Ctrl-C to stop (all data is deleted).")
        while True:
            time.sleep(1)
            try:
                plane.check()
            except testenv.ControlPlaneError as exc:
                click.echo(str(exc), err=True)
                raise UserError("a control-plane component stopped; its log is above") from exc
    except KeyboardInterrupt:
        click.echo("stopping the control plane")
    finally:
        plane.stop()
