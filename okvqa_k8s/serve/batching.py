"""A bounded queue in front of one model worker, which drains it in batches.

One worker thread owns the model (generation is neither thread-safe nor faster when interleaved),
and the asyncio server must never block on it. Requests wait in a queue of fixed size: when it is
full the caller is told at once (HTTP 429) instead of piling up memory and latency. The worker takes
whatever is queued, up to `max_batch_size`, waiting at most `max_wait_s` for company, so a lone
request is answered without delay and a burst is answered in a few batched forward passes. A request
whose future was cancelled while it waited (its client went away) is dropped, not generated.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds `depth` requests already; the caller should retry later."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"queue full ({depth} waiting)")
        self.depth = depth


@dataclass
class _Job(Generic[T]):
    item: T
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _resolve(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # the client went away and its task was cancelled
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class Batcher(Generic[T, R]):
    """Feeds `run_batch(items) -> results` (same length, same order) from a bounded queue.

    A result that is an exception instance fails only its own request, so one poisonous request in a
    batch does not fail its neighbours.
    """

    _STOP = object()

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_batch_size: int = 8,
        max_wait_s: float = 0.01,
        max_queue: int = 64,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._work, name="model-worker", daemon=True)
        self.batches_run = 0
        self.skipped = 0

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop after the batch in progress; requests still queued get a RuntimeError."""
        while True:
            try:
                self._queue.put(self._STOP, timeout=0.1)
                break
            except queue.Full:
                self._fail_queued(RuntimeError("server shutting down"))
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """Queue one item now (QueueFull at once when full); cancel the future to withdraw it."""
        loop = asyncio.get_running_loop()
        job = _Job(item, loop, loop.create_future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(self._queue.qsize()) from None
        return job.future

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result; raises QueueFull without waiting when full."""
        return await self.enqueue(item)

    def _fail_queued(self, error: BaseException) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not self._STOP:
                job.loop.call_soon_threadsafe(_resolve, job.future, None, error)

    def _collect(self, first: _Job[T]) -> tuple[list[_Job[T]], bool]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is self._STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _work(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is self._STOP:
                return
            collected, stop = self._collect(first)
            # Reading done() from this thread is a snapshot: at worst a request cancelled a moment
            # ago still runs, and _resolve then drops its result.
            batch = [job for job in collected if not job.future.done()]
            self.skipped += len(collected) - len(batch)
            if not batch:
                continue
            try:
                results = list(self._run_batch([job.item for job in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
                outcomes: list[tuple[Any, BaseException | None]] = [
                    (None, r) if isinstance(r, BaseException) else (r, None) for r in results
                ]
            except Exception as exc:  # one bad batch must not kill the worker
                log.exception("batch of %d failed", len(batch))
                outcomes = [(None, exc)] * len(batch)
            self.batches_run += 1
            for job, (result, error) in zip(batch, outcomes, strict=True):
                job.loop.call_soon_threadsafe(_resolve, job.future, result, error)
