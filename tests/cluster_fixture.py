"""pytest plugin: one real control plane (k8s/testenv, `make testenv`) per session, for `cluster` tests.

Enabled from tests/conftest.py through `pytest_plugins`. Tests that use the `cluster` fixture carry
`@pytest.mark.cluster`. Where the binaries are not built (or Go is missing to build them) those tests skip
with the reason; with CI=true they fail instead, so a CI job cannot go green by skipping them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from okvqa_testenv import ControlPlane, missing_binaries, testenv_dir

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 90.0, every: float = 0.25) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` seconds.

    Controllers act asynchronously, so every cluster test waits for an observable state, never sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def exists(read: Callable[[], object]) -> bool:
    """Whether `read()` finds the object: False on the API's 404, any other error raised."""
    from kubernetes.client.rest import ApiException

    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _unavailable_reason(queueing: bool = True) -> str | None:
    missing = missing_binaries(queueing=queueing)
    if not missing:
        return None
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").is_file():
        return (
            f"the test control plane is not built ({len(missing)} files missing in {testenv_dir()}) "
            "and Go, needed to build it with `make testenv`, is not installed"
        )
    return f"the test control plane is not built: run `make testenv` (missing in {testenv_dir()}: " + (
        ", ".join(missing) + ")"
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    """A started ControlPlane with S3 and Kueue, shared by the session and always stopped, even after
    failures. Kueue runs under every cluster test: a FineTune without a queue must not notice it."""
    reason = _unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    with ControlPlane(s3=True, queueing=True) as plane:
        yield plane


@pytest.fixture(scope="module")
def real_cluster() -> Iterator[ControlPlane]:
    """A control plane with a real node (kubelet + containerd, kube-proxy, CoreDNS) and the project's
    images built offline (`make testenv-images`), one per test module: the node needs the machine's one
    bridge and containerd root, and a module's last test may stop it to check what it leaves behind."""
    from okvqa_testenv import node
    from okvqa_testenv.images import default_refs, project_version
    from tests.conftest import REPO, require

    reason = _unavailable_reason(queueing=False)
    require(reason is None, reason or "")
    require(os.geteuid() == 0, "a real node needs root")
    lacking = node.missing()
    require(not lacking, f"a real node needs {', '.join(lacking)}: run `make testenv testenv-host`")
    with ControlPlane(real_node=True) as plane:
        assert plane.node is not None and plane.node.containerd is not None
        absent = set(default_refs(project_version(REPO))) - plane.node.containerd.images()
        require(not absent, f"images not built: {', '.join(sorted(absent))}: run `make testenv-images`")
        yield plane
