"""Staging throughput: one request per file vs. this project's sharded, parallel path.

Writes N synthetic image-sized files (random bytes), then, against the same S3 server in the same
run, times (a) sequential put_object/get_object per file and (b) `stage_dataset`/`fetch_dataset`
(tar shards, parallel multipart, sha256 checks, safe extraction). Prints files/s, MB/s and (b)/(a).

    python benchmarks/staging.py                       # 5,000 × ~150 KB against a moto server
    python benchmarks/staging.py --server seaweedfs    # against SeaweedFS (the `weed` of `make testenv`)
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
from pathlib import Path
from typing import Any

from okvqa_k8s.storage import fetch_dataset, parse_size, stage_dataset, store_for

Server = tuple[str, Callable[[], None]]


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

    return f"http://127.0.0.1:{port}", stop


def start_seaweedfs() -> Server:
    """SeaweedFS (compiled Go: master, volume, filer, S3 gateway) as the test control plane starts it.

    Volumes of 1 GiB, up to 32: the benchmark writes ~1.6 GB into one bucket, more than the small
    volumes the tests use can hold.
    """
    from okvqa_k8s.kube.testenv import S3_BINARY, SeaweedS3, testenv_dir

    binary = testenv_dir() / S3_BINARY
    if not binary.is_file():
        raise SystemExit(f"SeaweedFS is not built ({binary} is missing): run `make testenv`")
    server = SeaweedS3(volume_size_limit_mb=1024, max_volumes=32)
    endpoint = server.start()
    os.environ.update(endpoint.env())
    os.environ["AWS_REGION"] = endpoint.region
    return endpoint.url, server.stop


SERVERS: dict[str, Callable[[], Server]] = {"moto": start_moto, "seaweedfs": start_seaweedfs}


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


def per_file(client: Any, bucket: str, root: Path, rels: list[str], out: Path) -> tuple[float, float]:
    """(a): what a naive loader does; one request per file, one after another."""
    start = time.perf_counter()
    for rel in rels:
        client.put_object(Bucket=bucket, Key=f"per-file/{rel}", Body=(root / rel).read_bytes())
    upload = time.perf_counter() - start
    start = time.perf_counter()
    for rel in rels:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.get_object(Bucket=bucket, Key=f"per-file/{rel}")["Body"].read())
    return upload, time.perf_counter() - start


def server_ceiling(client: Any, bucket: str, size: int = 64 * 2**20) -> tuple[float, float]:
    """MB/s of one large put_object / get_object: the server's own limit, which (b) cannot beat.

    A warm-up object goes first: SeaweedFS allocates a new bucket's volumes on its first write, a
    one-time cost (~1 s here) that is not the server's throughput.
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


def sharded(root: Path, uri: str, out: Path, shard_size: int, workers: int) -> tuple[float, float]:
    """(b): this project's path, including hashing, tar building, verification and extraction."""
    start = time.perf_counter()
    stage_dataset(root, uri, shard_size=shard_size, workers=workers)
    upload = time.perf_counter() - start
    start = time.perf_counter()
    fetch_dataset(uri, out, workers=workers)
    return upload, time.perf_counter() - start


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
    endpoint = args.endpoint
    if endpoint is None:
        endpoint, stop = SERVERS[args.server]()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory(prefix="okvqa-bench-") as tmp:
            root = Path(tmp) / "dataset"
            total = make_files(root, args.files, parse_size(args.file_size), args.seed)
            rels = sorted(p.relative_to(root).as_posix() for p in (root / "images").rglob("*.jpg"))
            client = store_for(f"s3://{bucket}").client  # type: ignore[attr-defined]
            client.create_bucket(Bucket=bucket)
            ceiling = server_ceiling(client, bucket)
            a_up, a_down = per_file(client, bucket, root, rels, Path(tmp) / "per-file")
            b_up, b_down = sharded(
                root,
                f"s3://{bucket}/staged",
                Path(tmp) / "fetched",
                parse_size(args.shard_size),
                args.workers,
            )
    finally:
        stop()

    mb = total / 1e6
    results = {
        "files": args.files,
        "megabytes": round(mb, 1),
        "endpoint": args.endpoint or args.server,
        "workers": args.workers,
        "shard_size": args.shard_size,
        "cpus": os.cpu_count(),
        "per_file": {"upload_s": round(a_up, 2), "download_s": round(a_down, 2)},
        "sharded": {"upload_s": round(b_up, 2), "download_s": round(b_down, 2)},
        "speedup": {"upload": round(a_up / b_up, 2), "download": round(a_down / b_down, 2)},
        "server_ceiling_mb_s": {"put": round(ceiling[0], 1), "get": round(ceiling[1], 1)},
    }
    print(f"{args.files} files, {mb:.1f} MB, server: {results['endpoint']}, {os.cpu_count()} CPUs")
    print(f"{'':28}{'seconds':>9}{'files/s':>10}{'MB/s':>9}")
    for label, seconds in (
        ("(a) per-file put, sequential", a_up),
        ("(b) sharded stage, parallel", b_up),
        ("(a) per-file get, sequential", a_down),
        ("(b) sharded fetch, parallel", b_down),
    ):
        print(f"{label:28}{seconds:9.2f}{args.files / seconds:10.0f}{mb / seconds:9.1f}")
    print(f"speed-up (b)/(a): upload {a_up / b_up:.1f}x, download {a_down / b_down:.1f}x")
    print(f"server ceiling (one 64 MiB object): put {ceiling[0]:.1f} MB/s, get {ceiling[1]:.1f} MB/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
