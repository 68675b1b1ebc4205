"""The bounded queue + batching worker, with a real worker thread and a real event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from okvqa_k8s.serve.batching import Batcher, QueueFull


class Gate:
    """A run_batch that records batch contents and holds the worker until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[object]:
        self.batches.append(list(items))
        self.entered.set()
        assert self.release.wait(10)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def _wait_for(event: threading.Event) -> None:
    await asyncio.get_running_loop().run_in_executor(None, event.wait, 10)


def test_burst_is_batched_and_answers_keep_their_order() -> None:
    async def main() -> tuple[list[int], list[list[int]]]:
        gate = Gate()
        batcher: Batcher[int, int] = Batcher(gate, max_batch_size=4, max_wait_s=0.0, max_queue=16)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))
        await _wait_for(gate.entered)  # the worker holds item 0; the rest queue up behind it
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        gate.release.set()
        results = await asyncio.gather(first, *rest)
        batcher.close()
        return results, gate.batches

    results, batches = asyncio.run(main())
    assert results == [i * 10 for i in range(7)]
    assert batches == [[0], [1, 2, 3, 4], [5, 6]]


def test_full_queue_refuses_at_once_and_recovers() -> None:
    async def main() -> None:
        gate = Gate()
        batcher: Batcher[int, int] = Batcher(gate, max_batch_size=1, max_wait_s=0.0, max_queue=2)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(1))
        await _wait_for(gate.entered)
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as exc:
            await batcher.submit(4)
        assert exc.value.depth == 2
        gate.release.set()
        assert await asyncio.gather(running, *queued) == [10, 20, 30]
        assert await batcher.submit(5) == 50  # serving again once drained
        batcher.close()

    asyncio.run(main())


def test_one_failing_item_does_not_fail_its_batch() -> None:
    async def main() -> None:
        gate = Gate()
        gate.release.set()
        batcher: Batcher[int, int] = Batcher(gate, max_batch_size=8, max_wait_s=0.05, max_queue=8)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 2)), return_exceptions=True)
        assert results[0] == 10 and results[2] == 20
        assert isinstance(results[1], ValueError)
        batcher.close()

    asyncio.run(main())


def test_crashing_batch_fails_its_requests_and_worker_survives() -> None:
    calls = []

    def run(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return [i + 1 for i in items]

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(run, max_batch_size=2, max_wait_s=0.0, max_queue=8)
        batcher.start()
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.submit(1)
        assert await batcher.submit(2) == 3
        batcher.close()

    asyncio.run(main())
