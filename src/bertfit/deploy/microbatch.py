"""Dynamic micro-batching: concurrent requests merged into one model call.

The first request of a batch waits at most `max_wait_ms` for others to join, up to `max_batch`
texts (a request is never split, so the request that crosses the limit still joins); one worker
task takes batches from an asyncio queue and runs the model in one thread, so the event loop keeps
accepting requests while the model computes. Each request gets back its own rows, in order.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


class MicroBatcher:
    """Merges concurrent requests into batches: an asyncio queue and one worker task."""

    def __init__(self, predict_proba: Callable[[list[str]], np.ndarray], max_batch: int, max_wait_ms: float):
        self.predict_proba, self.max_batch, self.max_wait = predict_proba, max_batch, max_wait_ms / 1000
        self.batches_run = self.texts_run = 0
        self.queue: asyncio.Queue | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        # One thread: model calls never overlap, and each one already uses every core.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertfit-model")
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Finish every queued request, then stop (called after the server stopped accepting)."""
        await self.queue.put(None)
        await self.worker
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            job = await self.queue.get()
            if job is None:
                break
            jobs, count, deadline = [job], len(job[0]), loop.time() + self.max_wait
            while count < self.max_batch:
                try:
                    # A cancelled Queue.get leaves the item queued, so nothing is lost at the deadline.
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        job = await self.queue.get()
                except TimeoutError:
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
                count += len(job[0])
            await self._execute(jobs)

    async def _execute(self, jobs: list[tuple[list[str], asyncio.Future]]) -> None:
        texts = [text for job_texts, _ in jobs for text in job_texts]
        try:
            probabilities = await asyncio.get_running_loop().run_in_executor(self.executor, self.predict_proba, texts)
        except Exception as error:  # one failed batch fails its requests, not the service
            log.exception("model call on %d texts failed", len(texts))
            for _, future in jobs:
                if not future.done():
                    future.set_exception(error)
            return
        self.batches_run += 1
        self.texts_run += len(texts)
        start = 0
        for job_texts, future in jobs:
            if not future.done():  # done: the client went away and its request was cancelled
                future.set_result(probabilities[start:start + len(job_texts)])
            start += len(job_texts)
