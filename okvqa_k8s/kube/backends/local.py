"""`Cluster` on this machine: a run's *rendered* objects run as local processes (`submit --local`, the demo).

What runs here is read from the same PyTorchJob/Deployment/Job objects the cluster would get: each
replica's container command and env, plus exactly the variables the Kubeflow training operator injects
(`pod_env.operator_env`), with the pod paths (ConfigMap mount, node scratch, model volume) mapped to local
directories and Service DNS names mapped to local ports. The objects' status is synthesized from the
processes, so `decide` reads them as it reads the API's. Differences from a cluster, by necessity: one
host (MASTER_ADDR is 127.0.0.1 and the master port a free one), no pod restarts, the host's /dev/shm.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from okvqa_k8s.errors import UserError
from okvqa_k8s.kube import names
from okvqa_k8s.kube.backends.pod_env import container_env, localize, operator_env
from okvqa_k8s.kube.cluster import Run
from okvqa_k8s.kube.decide import Action, Delete, Event, Observed
from okvqa_k8s.kube.driver import until_terminal
from okvqa_k8s.kube.observe import RunFiles, observe
from okvqa_k8s.kube.render import EVAL_WORK, MODELS, SCRATCH, SPEC_DIR, WRITABLE_ENV, Owner
from okvqa_k8s.kube.states import Phase
from okvqa_k8s.progress import bar
from okvqa_k8s.spec import FineTuneSpec

NAMESPACE = "local"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class _Process:
    label: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class LocalCluster:
    """Just enough of a cluster for `decide`: objects by name, backed by processes, synthesized status."""

    root: Path
    files: RunFiles = field(default_factory=RunFiles)
    host_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    processes: dict[str, list[_Process]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # Service/Deployment name → local port
    job_state: dict[str, tuple[str, str]] = field(default_factory=dict)  # eval Job → (condition, message)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        bin_dir = str(Path(sys.executable).parent)  # torchrun and okvqa-k8s of this environment
        self.host_env["PATH"] = bin_dir + os.pathsep + self.host_env.get("PATH", "")
        self.progress = bar(total=None, desc=f"{self.root.name} training", unit="step")

    # -- Cluster

    def observe(self, run: Run) -> Observed:
        return observe(self, self.files, run, secrets=False)  # credentials: this machine's env

    def apply(self, run: Run, action: Action) -> None:
        """Start what the object describes (a Delete stops it)."""
        if isinstance(action, Delete):
            self.stop(action.name)
            self.objects.pop((action.kind, action.name), None)
            return
        obj = action.obj
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.objects[(kind, name)] = obj
        if kind == "ConfigMap":
            config = self.root / "config"
            config.mkdir(exist_ok=True)
            for key, text in obj["data"].items():
                (config / key).write_text(text, encoding="utf-8")
        elif kind == "PyTorchJob":
            self._start_training(obj)
        elif kind == "Deployment":
            self.ports[name] = free_port()
            threading.Thread(target=self._start_server, args=(obj,), daemon=True).start()
        elif kind == "Job":
            threading.Thread(target=self._run_job, args=(obj,), daemon=True).start()

    def publish(self, run: Run, status: Mapping[str, Any]) -> bool:
        """The status stays with the driver; its training progress (`step/total`) moves the bar."""
        step, _, total = str(status.get("progress", "")).partition("/")
        if total and (int(total), int(step)) != (self.progress.total, self.progress.n):
            self.progress.total, self.progress.n = int(total), int(step)
            self.progress.refresh()
        return True

    def record(self, run: Run, event: Event) -> None:
        self.progress.write(f"{event.type} {event.reason}: {event.message}", file=sys.stderr)

    # -- the reads `observe` makes, answered from the processes

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, name))
        return None if obj is None else self._with_status(kind, name, obj)

    def list(
        self, api_version: str, kind: str, namespace: str | None, selector: str = ""
    ) -> list[dict[str, Any]]:
        """Objects of `kind` with every `key=value` of the selector; never a Pod (processes are not pods)."""
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        return [
            self._with_status(stored, name, obj)
            for (stored, name), obj in self.objects.items()
            if stored == kind and wanted.items() <= (obj["metadata"].get("labels") or {}).items()
        ]

    def _with_status(self, kind: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as the API would return it: with the status its processes give it."""
        if kind == "PyTorchJob":
            # One machine has no queue: the job runs at once, as if Kueue had admitted it.
            spec = {**obj["spec"], "runPolicy": {**obj["spec"]["runPolicy"], "suspend": False}}
            return {**obj, "spec": spec, "status": {"conditions": [self._training_condition()]}}
        if kind == "Deployment":
            return {**obj, "status": self._server_status(name, obj)}
        if kind == "Job" and name in self.job_state:
            cond, message = self.job_state[name]
            return {**obj, "status": {"conditions": [{"type": cond, "status": "True", "message": message}]}}
        return obj

    def _training_condition(self) -> dict[str, Any]:
        procs = self.processes.get("PyTorchJob", [])
        codes = [p.proc.poll() for p in procs]
        for p, code in zip(procs, codes, strict=True):
            if code not in (None, 0):
                tail = _tail(p.log)
                return {
                    "type": "Failed",
                    "status": "True",
                    "reason": "ReplicaFailed",
                    "message": f"{p.label} exited with code {code} (log: {p.log}): {tail}",
                }
        if procs and all(code == 0 for code in codes):
            return {"type": "Succeeded", "status": "True", "reason": "AllReplicasSucceeded", "message": ""}
        return {"type": "Running", "status": "True", "reason": "Running", "message": ""}

    def _server_status(self, name: str, deployment: Mapping[str, Any]) -> dict[str, Any]:
        procs = self.processes.get(name, [])
        dead = next((p for p in procs if p.proc.poll() is not None), None)
        if dead is not None:
            message = f"{dead.label} exited with code {dead.proc.returncode}: {_tail(dead.log)}"
            return {
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": message,
                    }
                ]
            }
        # The kubelet's readiness probe, which needs no API key.
        (server,) = deployment["spec"]["template"]["spec"]["containers"]
        path = server["readinessProbe"]["httpGet"]["path"]
        ready = procs and _http_ok(f"http://127.0.0.1:{self.ports[name]}{path}")
        return {"availableReplicas": 1 if ready else 0}

    # -- processes

    def _mounts(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        mounts = {SPEC_DIR: str(self.root / "config")}
        for (kind, name), obj in self.objects.items():
            if kind == "Service":
                port = obj["spec"]["ports"][0]["port"]
                url = f"http://{name}.{obj['metadata']['namespace']}.svc:{port}"
                mounts[url] = f"http://127.0.0.1:{self.ports.get(name, port)}"
        mounts.update(extra or {})
        return mounts

    def _spawn(
        self,
        key: str,
        label: str,
        container: Mapping[str, Any],
        env: Mapping[str, str],
        mounts: Mapping[str, str],
        replace: Mapping[str, str] | None = None,
    ) -> _Process:
        argv = [localize(a, mounts) for a in [*container.get("command", []), *container.get("args", [])]]
        if replace:
            argv = [replace.get(a, a) for a in argv]
        # The pod's answer to its read-only root (HOME, caches under /tmp) is not for this machine: a
        # local process keeps the host's own HOME and caches.
        own = {k: localize(v, mounts) for k, v in env.items() if k not in WRITABLE_ENV}
        full_env = {**self.host_env, **own}
        log = self.root / "logs" / f"{label}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        started = _Process(label, proc, log)
        self.processes.setdefault(key, []).append(started)
        return started

    def _start_training(self, job: dict[str, Any]) -> None:
        master_port = str(free_port())
        for rtype, rspec in job["spec"]["pytorchReplicaSpecs"].items():
            for index in range(int(rspec.get("replicas", 1))):
                (container,) = [c for c in rspec["template"]["spec"]["containers"] if c["name"] == "pytorch"]
                env = {
                    **container_env(container, self.host_env),
                    **operator_env(job, rtype, index, "127.0.0.1"),
                }
                env["MASTER_PORT"] = env["PET_MASTER_PORT"] = master_port
                node = int(env["PET_NODE_RANK"])
                scratch = self.root / "scratch" / f"node-{node}"
                scratch.mkdir(parents=True, exist_ok=True)
                label = f"{rtype.lower()}-{index}"
                self._spawn("PyTorchJob", label, container, env, self._mounts({SCRATCH: str(scratch)}))

    def _start_server(self, deployment: dict[str, Any]) -> None:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        models = self.root / "models" / name
        models.mkdir(parents=True, exist_ok=True)
        mounts = self._mounts({MODELS: str(models)})
        for init in pod.get("initContainers", []):
            p = self._spawn(
                name + "-init", f"{name}-{init['name']}", init, container_env(init, self.host_env), mounts
            )
            if p.proc.wait() != 0:
                self.processes.setdefault(name, []).append(p)  # a dead process marks the Deployment failed
                return
        (server,) = pod["containers"]
        port = str(server["ports"][0]["containerPort"])
        self._spawn(
            name,
            name,
            server,
            container_env(server, self.host_env),
            mounts,
            replace={port: str(self.ports[name]), "0.0.0.0": "127.0.0.1"},
        )

    def _run_job(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        pod = job["spec"]["template"]["spec"]
        work = self.root / "eval-work"
        work.mkdir(exist_ok=True)
        mounts = self._mounts({EVAL_WORK: str(work)})
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            p = self._spawn(
                name,
                f"{name}-{container['name']}",
                container,
                container_env(container, self.host_env),
                mounts,
            )
            if p.proc.wait() != 0:
                self.job_state[name] = (
                    "Failed",
                    f"{p.label} exited with code {p.proc.returncode}: {_tail(p.log)}",
                )
                return
        self.job_state[name] = ("Complete", "")

    def stop(self, key: str | None = None) -> None:
        """Terminate one object's processes (or all), politely first."""
        keys = [key] if key else list(self.processes)
        for k in keys:
            for p in self.processes.pop(k, []):
                if p.proc.poll() is None:
                    p.proc.terminate()
                    try:
                        p.proc.wait(10)
                    except subprocess.TimeoutExpired:
                        p.proc.kill()
                        p.proc.wait()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local server we started
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def local_cluster(spec: FineTuneSpec, name: str, workdir: Path) -> Iterator[LocalCluster]:
    """A `LocalCluster` for run `name` under `workdir`; every process it started is stopped on the way out."""
    names.check_name(name)
    if spec.inference.enabled and spec.inference.engine == "vllm":
        raise UserError(
            "inference.engine: vllm needs a GPU cluster; --local runs the builtin server "
            "(--set inference.engine=builtin)"
        )
    cluster = LocalCluster(workdir / name)
    try:
        yield cluster
    finally:
        cluster.progress.close()
        cluster.stop()


def run_local(
    spec: FineTuneSpec,
    name: str,
    workdir: Path,
    *,
    poll_seconds: float = 1.0,
    keep_serving: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Drive the run to Succeeded/Failed on this machine; returns the final status."""
    with local_cluster(spec, name, workdir) as cluster:
        run = Run(Owner(name, NAMESPACE), spec.to_wire())
        try:
            run = until_terminal(cluster, run, poll_seconds=poll_seconds)
            echo(run.summary())
            echo(f"logs: {cluster.root / 'logs'}")
            served = names.server_name(name)
            if keep_serving and run.status.get("phase") == Phase.SUCCEEDED and served in cluster.ports:
                echo(f"serving at http://127.0.0.1:{cluster.ports[served]}/v1 (Ctrl-C to stop)")
                while cluster.processes.get(served) and all(
                    p.proc.poll() is None for p in cluster.processes[served]
                ):
                    time.sleep(1)
        except KeyboardInterrupt:
            if run.status.get("phase") != Phase.SUCCEEDED:
                raise
        return dict(run.status)
