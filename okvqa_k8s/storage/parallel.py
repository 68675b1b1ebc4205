"""Thread-pool helpers shared by staging, fetching and sync: transfers and hashing are I/O-bound."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from okvqa_k8s.fsutil import sha256_file
from okvqa_k8s.progress import bar

T = TypeVar("T")


def run_parallel(jobs: Sequence[Callable[[], T]], workers: int) -> list[T]:
    """Results in job order; the first failure cancels jobs not yet started and is re-raised.

    Failing fast matters for resumability: what finished is already recorded, and the user sees the
    first real error instead of a cascade.
    """
    if not jobs:
        return []
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="okvqa-io")
    try:
        futures = [pool.submit(job) for job in jobs]
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
    return [future.result() for future in futures]


def hash_files(root: Path, rels: Sequence[str], sizes: Sequence[int], workers: int) -> dict[str, str]:
    """sha256 of many files at once (hashlib releases the GIL on large buffers)."""
    with bar(total=sum(sizes), desc="hashing", unit="B", unit_scale=True) as progress:

        def one(rel: str, size: int) -> str:
            digest = sha256_file(root / rel)
            progress.update(size)
            return digest

        digests = run_parallel(
            [lambda r=rel, s=size: one(r, s) for rel, size in zip(rels, sizes, strict=True)], workers
        )
    return dict(zip(rels, digests, strict=True))


def part_concurrency(big_objects: int, workers: int) -> int:
    """Split `workers` connections between objects moving at once, so the total stays near `workers`."""
    return max(2, workers // max(1, min(workers, big_objects)))
