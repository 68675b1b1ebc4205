"""Local executor: runs a run's *rendered* objects as local processes, driven by the operator's `decide`.

What runs here is read from the same PyTorchJob/Deployment/Job objects the cluster would get: each
replica's container command and env, plus exactly the variables the Kubeflow training operator injects
(`operator_env`), with the pod paths (ConfigMap mount, node scratch, model volume) mapped to local
directories and Service DNS names mapped to local ports. Differences from a cluster, by necessity: one
host (MASTER_ADDR is 127.0.0.1 and the master port a free one), no pod restarts, the host's /dev/shm.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from okvqa_k8s.errors import UserError
from okvqa_k8s.kube import names
from okvqa_k8s.kube.decide import Create, Delete, Observed, decide
from okvqa_k8s.kube.render import EVAL_WORK, MODELS, SCRATCH, SPEC_DIR, Owner, variants
from okvqa_k8s.kube.states import TERMINAL, Phase
from okvqa_k8s.layout import progress_uri, result_uri
from okvqa_k8s.spec import FineTuneSpec

NAMESPACE = "local"


def operator_env(job: Mapping[str, Any], replica_type: str, index: int, master_addr: str) -> dict[str, str]:
    """The variables the Kubeflow training operator (v1) injects into replica `replica_type`[index].

    Mirrors its setPodEnv: WORLD_SIZE = replicas × nprocPerNode, RANK = PET_NODE_RANK = node rank
    (Master 0, Worker i → i+1), PET_NNODES = replicas, MASTER_*/PET_MASTER_* from the Master's
    `pytorchjob-port`, and PYTHONUNBUFFERED=1 (checked against the real operator in test_kube_cluster).
    """
    spec = job["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    total = sum(int(r.get("replicas", 1)) for r in replicas.values())
    nproc = spec.get("nprocPerNode")
    per_node = int(nproc) if nproc and str(nproc).isdigit() else 1
    rank = index + 1 if replica_type == "Worker" else index
    port = next(
        p["containerPort"]
        for c in replicas["Master"]["template"]["spec"]["containers"]
        if c["name"] == "pytorch"
        for p in c.get("ports", [])
        if p.get("name") == "pytorchjob-port"
    )
    env = {
        "PYTHONUNBUFFERED": "1",
        "MASTER_PORT": str(port),
        "PET_MASTER_PORT": str(port),
        "MASTER_ADDR": master_addr,
        "PET_MASTER_ADDR": master_addr,
        "WORLD_SIZE": str(total * per_node),
        "RANK": str(rank),
        "PET_NODE_RANK": str(rank),
        "PET_NNODES": str(total),
    }
    if nproc:
        env["PET_NPROC_PER_NODE"] = str(nproc)
    return env


def container_env(container: Mapping[str, Any], host_env: Mapping[str, str]) -> dict[str, str]:
    """A container's own env; Secret/field references resolve from the host environment when set there."""
    out: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            out[item["name"]] = str(item["value"])
        elif item["name"] in host_env:
            out[item["name"]] = host_env[item["name"]]
    return out


def localize(value: str, mounts: Mapping[str, str]) -> str:
    """Map a pod path (`/scratch/x`) or URL prefix to its local counterpart; other text is unchanged."""
    for prefix, local in mounts.items():
        if value == prefix or value.startswith(prefix.rstrip("/") + "/"):
            return local + value[len(prefix) :]
        if "://" in prefix and prefix in value:
            return value.replace(prefix, local)
    return value


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
    spec: FineTuneSpec
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

    # -- what decide sees

    def observe(
        self, read_json: Callable[[str], Any], latest_checkpoint: Callable[[], str | None]
    ) -> Observed:
        job = self._get("PyTorchJob", names.job_name(self._run))
        if job is not None:
            job["status"] = {"conditions": [self._training_condition()]}
        deployments = {}
        for variant in ("finetuned", "base"):
            name = names.server_name(self._run, variant)
            if (d := self._get("Deployment", name)) is not None:
                d["status"] = self._server_status(name)
                deployments[variant] = d
        services = {
            v: s
            for v in ("finetuned", "base")
            if (s := self._get("Service", names.server_name(self._run, v)))
        }
        eval_job = self._get("Job", names.eval_job_name(self._run))
        results: dict[str, Any] = {}
        if eval_job is not None:
            cond, message = self.job_state.get(eval_job["metadata"]["name"], ("", ""))
            if cond:
                eval_job["status"] = {"conditions": [{"type": cond, "status": "True", "message": message}]}
            if cond == "Complete":
                results = {v: read_json(result_uri(self.spec, v)) for v in variants(self.spec)}
        progress = read_json(progress_uri(self.spec)) if job else None
        return Observed(
            configmap=self._get("ConfigMap", names.configmap_name(self._run)),
            job=job,
            deployments=deployments,
            services=services,
            eval_job=eval_job,
            progress=progress if isinstance(progress, dict) else None,
            checkpoint_uri=latest_checkpoint() if job else None,
            eval_results={k: v for k, v in results.items() if isinstance(v, dict)},
        )

    @property
    def _run(self) -> str:
        return self.root.name

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

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

    def _server_status(self, name: str) -> dict[str, Any]:
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
        ready = procs and _http_ok(f"http://127.0.0.1:{self.ports[name]}/v1/models")
        return {"availableReplicas": 1 if ready else 0}

    # -- applying decisions

    def apply(self, action: Create | Delete) -> None:
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
        full_env = {**self.host_env, **{k: localize(v, mounts) for k, v in env.items()}}
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


def run_local(
    spec: FineTuneSpec,
    name: str,
    workdir: Path,
    *,
    poll_seconds: float = 1.0,
    keep_serving: bool = False,
    echo: Callable[[str], None] = print,
    read_json: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Drive the run to Succeeded/Failed with `decide`, locally; returns the final status."""
    from okvqa_k8s.kube.operator import latest_checkpoint_or_none, read_json_or_none, utcnow
    from okvqa_k8s.progress import bar

    names.check_name(name)
    if spec.inference.enabled and spec.inference.engine == "vllm":
        raise UserError(
            "inference.engine: vllm needs a GPU cluster; --local runs the builtin server "
            "(--set inference.engine=builtin)"
        )
    reader = read_json or read_json_or_none
    cluster = LocalCluster(workdir / name, spec)
    owner = Owner(name, NAMESPACE)
    status: dict[str, Any] = {}
    progress = bar(total=None, desc=f"{name} training", unit="step")
    try:
        while True:
            observed = cluster.observe(reader, lambda: latest_checkpoint_or_none(spec))
            decision = decide(owner, spec.to_wire(), status, observed, utcnow())
            for action in decision.actions:
                cluster.apply(action)
            for event in decision.events:
                progress.write(f"{event.type} {event.reason}: {event.message}", file=sys.stderr)
            status = decision.status
            steps = observed.progress or {}
            if steps.get("total_steps") and (steps["total_steps"], steps.get("step")) != (
                progress.total,
                progress.n,
            ):
                progress.total = int(steps["total_steps"])
                progress.n = int(steps.get("step", 0))
                progress.refresh()
            if status.get("phase") in TERMINAL:
                break
            time.sleep(poll_seconds)
        echo(f"{name}: {status.get('phase')}: {status.get('message', '')}")
        echo(f"logs: {cluster.root / 'logs'}")
        served = names.server_name(name)
        if keep_serving and status.get("phase") == Phase.SUCCEEDED and served in cluster.ports:
            echo(f"serving at http://127.0.0.1:{cluster.ports[served]}/v1 (Ctrl-C to stop)")
            while cluster.processes.get(served) and all(
                p.proc.poll() is None for p in cluster.processes[served]
            ):
                time.sleep(1)
    except KeyboardInterrupt:
        if status.get("phase") != Phase.SUCCEEDED:
            raise
    finally:
        progress.close()
        cluster.stop()
    return status
