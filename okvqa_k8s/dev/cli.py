"""`okvqa-k8s dev`: tools for people working on this project.

`dev cluster up` runs, in the foreground, the same real cluster the tests use (built by `make testenv`):
a throwaway control plane with kwok GPU nodes and the Kubeflow training operator, and with
`--real-node` a real kubelet + containerd node that runs the project's locally built images, and with
`--kueue` Kueue (queues and quota), to try the operator, the chart or `kubectl` against without kind or
Docker. Ctrl-C stops it and deletes its data.
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
@click.option("--s3/--no-s3", default=False, show_default=True, help="Also start a MinIO S3 server.")
@click.option(
    "--real-node",
    is_flag=True,
    help="Also run a real node (kubelet + containerd, kube-proxy, CoreDNS) that runs pods from the images "
    "`make testenv-images` built; needs root. kwok's nodes are then tainted, so pods run for real.",
)
@click.option(
    "--kueue",
    is_flag=True,
    help="Also run Kueue v0.17 (queues and quota for FineTunes with `queue`; chart value kueue.enabled).",
)
def up(s3: bool, real_node: bool, kueue: bool) -> None:
    """Start the control plane and keep it running until Ctrl-C."""
    testenv = _testenv()
    missing = testenv.missing_binaries(s3=s3, real_node=real_node, queueing=kueue)
    if missing:
        raise UserError(
            f"the cluster is not built (missing in {testenv.testenv_dir()}: {', '.join(missing)}); "
            "run `make testenv`"
        )
    signal.signal(signal.SIGTERM, _interrupt)
    plane = testenv.ControlPlane(s3=s3, real_node=real_node, queueing=kueue)
    try:
        click.echo(
            "starting etcd, kube-apiserver, controller-manager, scheduler, kwok, training operator"
            + (", Kueue" if kueue else "")
            + (", and a real node (containerd, kubelet, kube-proxy, CoreDNS)" if real_node else "")
            + "..."
        )
        try:
            plane.start()
        except testenv.ControlPlaneError as exc:
            message = str(exc)
            if "\n" not in message:  # a one-line reason (not root, not installed): say just that
                raise UserError(message) from exc
            click.echo(message, err=True)
            raise UserError("the cluster did not start; the failing component's log is above") from exc
        click.echo(f"cluster up in {plane.start_seconds:.1f} s at {plane.server}")
        click.echo(f"kubeconfig: {plane.kubeconfig}")
        click.echo(f"export KUBECONFIG={plane.kubeconfig}")
        if plane.s3 is not None:
            for name, value in plane.s3.env().items():
                click.echo(f"export {name}={value}")
        if real_node:
            click.echo(
                "next: helm install okvqa charts/okvqa -n okvqa --create-namespace -f k8s/values-local.yaml; "
                "okvqa-k8s submit examples/tiny-cpu.yaml -n okvqa; kubectl -n okvqa get finetunes -w"
            )
        click.echo("Ctrl-C to stop (all data is deleted).")
        while True:
            time.sleep(1)
            try:
                plane.check()
            except testenv.ControlPlaneError as exc:
                click.echo(str(exc), err=True)
                raise UserError("a cluster component stopped; its log is above") from exc
    except KeyboardInterrupt:
        click.echo("stopping the cluster")
    finally:
        plane.stop()
        for problem in plane.leftovers:
            click.echo(f"warning: not put back: {problem}", err=True)


COMMANDS = [dev]
