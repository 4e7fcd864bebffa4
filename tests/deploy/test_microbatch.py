"""MicroBatcher without a model: batch sizes, rows back to their requests, failures contained, drain on stop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from bertfit.deploy.microbatch import MicroBatcher


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    calls: list[list[str]] = []

    def predict(texts: list[str]) -> np.ndarray:
        assert threading.current_thread().name.startswith("bertfit-model")  # never on the event loop
        calls.append(list(texts))
        return np.asarray([[float(t)] for t in texts])

    async def main():
        batcher = MicroBatcher(predict, max_batch=4, max_wait_ms=50)
        await batcher.start()
        requests = [[str(i)] for i in range(10)] + [[str(100 + i) for i in range(6)]]
        results = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        await batcher.stop()
        return requests, results, batcher

    requests, results, batcher = run(main())
    for texts, rows in zip(requests, results):
        assert rows[:, 0].tolist() == [float(t) for t in texts]
    # The first call fills to max_batch texts; a request is never split across calls.
    assert all(len(c) <= 4 for c in calls[:-1]) and len(calls) < len(requests)
    assert batcher.texts_run == 16 and batcher.batches_run == len(calls)


def test_a_failing_call_fails_only_its_requests():
    def predict(texts: list[str]) -> np.ndarray:
        if "bad" in texts:
            raise ValueError("model broke")
        return np.zeros((len(texts), 2))

    async def main():
        batcher = MicroBatcher(predict, max_batch=1, max_wait_ms=1)
        await batcher.start()
        with pytest.raises(ValueError, match="model broke"):
            await batcher.submit(["bad"])
        good = await batcher.submit(["fine"])
        await batcher.stop()
        return good

    assert run(main()).shape == (1, 2)


def test_stop_finishes_queued_requests():
    async def main():
        batcher = MicroBatcher(lambda texts: np.ones((len(texts), 1)), max_batch=2, max_wait_ms=200)
        await batcher.start()
        pending = [asyncio.create_task(batcher.submit([str(i)])) for i in range(5)]
        await asyncio.sleep(0)  # let every request reach the queue
        await batcher.stop()
        return [task.result().shape for task in pending]

    assert run(main()) == [(1, 1)] * 5
