"""Processes of the test cluster: each in its own process group, logging to a file, waited on by probes.

Why process groups: a component that forks (containerd's shims, etcd's helpers) is stopped with its
children, so nothing outlives the cluster.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

START_TIMEOUT_S = 90.0


class ControlPlaneError(RuntimeError):
    """A component did not start (or stopped): the message carries the tail of its log."""


class StartStop:
    """`with X() as x:` for the things this package starts: start() on entry, stop() on exit, always."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct free TCP ports on `host`, held open together so no two are the same."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]


class Component:
    """One process of the cluster in its own process group, logging to a file."""

    def __init__(
        self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, grace_s: float = 5.0
    ) -> None:
        self.name = name
        self.grace_s = grace_s
        self.argv = argv
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ControlPlaneError:
        return ControlPlaneError(f"{self.name}: {what} (log {self.log}); last lines:\n{self.tail()}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self.failure(f"exited with code {self.proc.returncode}")

    def terminate(self) -> None:
        """SIGTERM the whole process group, so children go with their leader."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait for the leader until `deadline` (time.monotonic), then SIGKILL what is left of the group."""
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """terminate() then reap() within the component's grace period."""
        self.terminate()
        self.reap(time.monotonic() + self.grace_s)


def http_ok(url: str, *, timeout: float = 2.0) -> bool:
    """Whether a health endpoint answers 200: plain HTTP, or HTTPS without verification (the
    controller-manager and scheduler serve self-signed certificates of their own)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = (
        http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl._create_unverified_context()
        )
        if parts.scheme == "https"
        else http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    )
    try:
        connection.request("GET", parts.path or "/")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def wait_until(
    what: str,
    check: Callable[[], bool],
    components: Sequence[Component],
    blame: Component,
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Poll `check` until true; fail fast, with the right log, when any of `components` dies."""
    deadline = time.monotonic() + timeout
    while not check():
        for component in components:
            component.check_alive()
        if time.monotonic() > deadline:
            raise blame.failure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
