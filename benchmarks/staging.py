"""Staging throughput: one request per file vs. this project's sharded, parallel path.

Writes N synthetic image-sized files (random bytes), then, against the same S3 server in the same
run, times (a) sequential put_object/get_object per file and (b) `stage_dataset`/`fetch_dataset`
(tar shards, parallel multipart, sha256 checks, safe extraction). Prints files/s, MB/s and (b)/(a).

    python benchmarks/staging.py                       # 5,000 × ~150 KB against a moto server
    python benchmarks/staging.py --server minio        # against MinIO (the `minio` of `make testenv`)
    python benchmarks/staging.py --files 500           # quicker
    python benchmarks/staging.py --endpoint http://127.0.0.1:8333   # an already running S3 server

The server runs in its own process so it does not share the client's GIL. More servers can be added
to SERVERS (a function that starts one and returns its endpoint and a stop callback). Servers that
start with their own keys export them as AWS_* variables; `--endpoint` uses the caller's AWS_* keys
(or dummy ones, which moto accepts).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from okvqa_k8s.storage import fetch_dataset, parse_size, stage_dataset, store_for

# (endpoint, stop, server process id or None): the pid lets the run charge CPU seconds to the server.
Server = tuple[str, Callable[[], None], int | None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the S3 server exited with code {proc.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the S3 server did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def start_moto() -> Server:
    """moto's S3 server in a child process on 127.0.0.1 (objects live in its memory)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(port, proc)

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=30)

    return f"http://127.0.0.1:{port}", stop, proc.pid


def start_minio() -> Server:
    """MinIO (compiled Go, single drive), the S3 server the chart ships, as the test cluster starts it."""
    from okvqa_testenv import S3_BINARY, MinioS3, testenv_dir

    binary = testenv_dir() / S3_BINARY
    if not binary.is_file():
        raise SystemExit(f"MinIO is not built ({binary} is missing): run `make testenv`")
    server = MinioS3()
    endpoint = server.start()
    os.environ.update(endpoint.env())
    os.environ["AWS_REGION"] = endpoint.region
    assert server.component is not None and server.component.proc is not None
    return endpoint.url, server.stop, server.component.proc.pid


SERVERS: dict[str, Callable[[], Server]] = {"moto": start_moto, "minio": start_minio}


def make_files(root: Path, count: int, size: int, seed: int) -> int:
    """Image-sized files of random bytes (±20 % around `size`) plus a small train.json."""
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        path = root / "images" / f"train2014/COCO_train2014_{i:012d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(int(size * rng.uniform(0.8, 1.2)))
        path.write_bytes(data)
        total += len(data)
    records = [{"id": str(i), "image": f"images/train2014/COCO_train2014_{i:012d}.jpg"} for i in range(count)]
    (root / "train.json").write_text(json.dumps(records))
    return total


@dataclass(frozen=True)
class Cost:
    """Wall seconds plus the CPU seconds the client (this process) and the server spent meanwhile."""

    wall: float
    client_cpu: float
    server_cpu: float | None


class Meter:
    """Charges each timed step with CPU seconds on both sides of the connection.

    On a small machine client and server share the same cores, so CPU seconds, not only wall time,
    say where the time went and what the fastest possible run would be.
    """

    def __init__(self, server_pid: int | None) -> None:
        self._server = None
        if server_pid is not None:
            import psutil  # a dev dependency: only needed to read the server's CPU time

            self._server = psutil.Process(server_pid)

    def _server_cpu(self) -> float | None:
        if self._server is None:
            return None
        procs = [self._server, *self._server.children(recursive=True)]
        return sum(p.cpu_times().user + p.cpu_times().system for p in procs)

    def measure(self, step: Callable[[], object]) -> Cost:
        client, server, start = time.process_time(), self._server_cpu(), time.perf_counter()
        step()
        wall = time.perf_counter() - start
        after = self._server_cpu()
        spent = None if server is None or after is None else after - server
        return Cost(wall, time.process_time() - client, spent)


def per_file_put(client: Any, bucket: str, root: Path, rels: list[str]) -> None:
    """(a): what a naive loader does; one request per file, one after another."""
    for rel in rels:
        client.put_object(Bucket=bucket, Key=f"per-file/{rel}", Body=(root / rel).read_bytes())


def per_file_get(client: Any, bucket: str, rels: list[str], out: Path) -> None:
    for rel in rels:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.get_object(Bucket=bucket, Key=f"per-file/{rel}")["Body"].read())


def server_ceiling(client: Any, bucket: str, size: int = 64 * 2**20) -> tuple[float, float]:
    """MB/s of one large put_object / get_object: the server's own limit for a single stream.

    A warm-up object goes first: a server may allocate a new bucket's storage on its first write, a
    one-time cost that is not the server's throughput.
    """
    body = os.urandom(size)
    client.put_object(Bucket=bucket, Key="warm-up", Body=body[: 2**20])
    client.delete_object(Bucket=bucket, Key="warm-up")
    start = time.perf_counter()
    client.put_object(Bucket=bucket, Key="ceiling", Body=body)
    put = time.perf_counter() - start
    start = time.perf_counter()
    client.get_object(Bucket=bucket, Key="ceiling")["Body"].read()
    get = time.perf_counter() - start
    client.delete_object(Bucket=bucket, Key="ceiling")
    return size / 1e6 / put, size / 1e6 / get


def floor_s(cost: Cost, cpus: int) -> float | None:
    """The shortest wall time (b) could have had here: the server's CPU seconds spread over every core.

    Even a client that cost nothing cannot move the bytes faster than the server can take them in.
    """
    if not cost.server_cpu:  # unknown (--endpoint), or below the clock's 10 ms tick on a tiny run
        return None
    return cost.server_cpu / cpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000, help="number of files (default: 5000)")
    parser.add_argument("--file-size", default="150KB", help="mean file size (default: 150KB)")
    parser.add_argument("--server", choices=sorted(SERVERS), default="moto", help="S3 server to start")
    parser.add_argument("--endpoint", help="use this running S3 endpoint instead of starting a server")
    parser.add_argument("--shard-size", default="256MiB", help="tar shard size for (b) (default: 256MiB)")
    parser.add_argument("--workers", type=int, default=8, help="parallel transfers for (b) (default: 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    os.environ.setdefault("OKVQA_PROGRESS", "0")
    stop: Callable[[], None] = lambda: None  # noqa: E731 - nothing to stop for --endpoint
    endpoint, pid = args.endpoint, None
    if endpoint is None:
        endpoint, stop, pid = SERVERS[args.server]()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    meter = Meter(pid)
    try:
        with tempfile.TemporaryDirectory(prefix="okvqa-bench-") as tmp:
            root = Path(tmp) / "dataset"
            total = make_files(root, args.files, parse_size(args.file_size), args.seed)
            rels = sorted(p.relative_to(root).as_posix() for p in (root / "images").rglob("*.jpg"))
            client = store_for(f"s3://{bucket}").client  # type: ignore[attr-defined]
            client.create_bucket(Bucket=bucket)
            ceiling = server_ceiling(client, bucket)
            uri, shard_size = f"s3://{bucket}/staged", parse_size(args.shard_size)
            costs = {
                "a_up": meter.measure(lambda: per_file_put(client, bucket, root, rels)),
                "a_down": meter.measure(lambda: per_file_get(client, bucket, rels, Path(tmp) / "per-file")),
                "b_up": meter.measure(
                    lambda: stage_dataset(root, uri, shard_size=shard_size, workers=args.workers)
                ),
                "b_down": meter.measure(
                    lambda: fetch_dataset(uri, Path(tmp) / "fetched", workers=args.workers)
                ),
            }
    finally:
        stop()
    report(args, total, costs, ceiling)
    return 0


LABELS = {
    "a_up": "(a) per-file put, sequential",
    "b_up": "(b) sharded stage, parallel",
    "a_down": "(a) per-file get, sequential",
    "b_down": "(b) sharded fetch, parallel",
}


def report(
    args: argparse.Namespace, total: int, costs: dict[str, Cost], ceiling: tuple[float, float]
) -> None:
    """Print the table and ratios (and write --json); the floor says how close to the machine (b) ran."""
    mb, cpus = total / 1e6, os.cpu_count() or 1
    print(f"{args.files} files, {mb:.1f} MB, server: {args.endpoint or args.server}, {cpus} CPUs")
    print(f"{'':30}{'seconds':>8}{'files/s':>9}{'MB/s':>8}{'client CPU s':>14}{'server CPU s':>14}")
    for key, label in LABELS.items():
        c = costs[key]
        server = "n/a" if c.server_cpu is None else f"{c.server_cpu:.2f}"
        row = f"{c.wall:8.2f}{args.files / c.wall:9.0f}{mb / c.wall:8.1f}{c.client_cpu:14.2f}{server:>14}"
        print(f"{label:30}{row}")
    speedup, best = {}, {}
    for d, name in (("up", "upload"), ("down", "download")):
        baseline, ours = costs[f"a_{d}"], costs[f"b_{d}"]
        speedup[name] = round(baseline.wall / ours.wall, 2)
        floor = floor_s(ours, cpus)
        best[name] = None if floor is None else round(baseline.wall / floor, 2)
    print(f"speed-up (b)/(a): upload {speedup['upload']:.1f}x, download {speedup['download']:.1f}x")
    known = ", ".join(f"{name} {ratio:.1f}x" for name, ratio in best.items() if ratio is not None)
    if known:
        print(f"best possible here (server CPU of (b) over every core, a client costing nothing): {known}")
    print(f"server ceiling (one 64 MiB object): put {ceiling[0]:.1f} MB/s, get {ceiling[1]:.1f} MB/s")
    if args.json:
        results = {
            "files": args.files,
            "megabytes": round(mb, 1),
            "endpoint": args.endpoint or args.server,
            "workers": args.workers,
            "shard_size": args.shard_size,
            "cpus": cpus,
            "costs": {
                k: {f: v if v is None else round(v, 2) for f, v in asdict(c).items()}
                for k, c in costs.items()
            },
            "speedup": speedup,
            "best_possible_speedup": best,
            "server_ceiling_mb_s": {"put": round(ceiling[0], 1), "get": round(ceiling[1], 1)},
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
