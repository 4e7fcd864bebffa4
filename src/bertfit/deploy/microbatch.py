"""Dynamic micro-batching: concurrent requests merged into one model call.

The first request of a batch waits at most `max_wait_ms` for others to join, up to `max_batch`
texts (a request is never split between batches, so the request that crosses the limit still
joins); one worker task takes batches from an asyncio queue and runs the model in one thread, so the
event loop keeps accepting requests while the model computes. Each request gets back its own rows,
in order.

Protection: at most `max_queued_texts` texts wait (submit raises QueueFull beyond, the service
answers 503); a request whose caller went away (its future cancelled) is dropped before it is
computed, and a batch over `max_batch` texts runs in pieces of `max_batch`, skipping pieces nobody
waits for any more; when a model call fails, each request of the batch is retried alone, so one
bad request fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

Job = tuple[list[str], asyncio.Future]


class QueueFull(Exception):
    """Too many texts are waiting; `retry_after_s` estimates when the queue has room again."""

    def __init__(self, queued: int, retry_after_s: int):
        super().__init__(f"{queued} texts are queued")
        self.retry_after_s = retry_after_s


class MicroBatcher:
    """Merges concurrent requests into batches: an asyncio queue and one worker task."""

    def __init__(self, predict_proba: Callable[[list[str]], np.ndarray], max_batch: int, max_wait_ms: float,
                 max_queued_texts: int | None = None):
        self.predict_proba, self.max_batch, self.max_wait = predict_proba, max_batch, max_wait_ms / 1000
        self.max_queued_texts = max_queued_texts
        self.batches_run = self.texts_run = self.queued_texts = self.dropped_requests = 0
        self.model_seconds = 0.0
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
        """The rows of `texts`; cancelling the caller drops the request if it has not been computed yet."""
        if self.max_queued_texts is not None and self.queued_texts + len(texts) > self.max_queued_texts:
            raise QueueFull(self.queued_texts, self._retry_after_s())
        future = asyncio.get_running_loop().create_future()
        self.queued_texts += len(texts)
        future.add_done_callback(lambda _: self._release(len(texts)))
        await self.queue.put((texts, future))
        return await future

    def _release(self, count: int) -> None:
        self.queued_texts -= count

    def _retry_after_s(self) -> int:
        """Seconds the queued texts take at the speed measured so far (1 before any measurement)."""
        rate = self.texts_run / self.model_seconds if self.model_seconds > 0 else 0.0
        return max(1, math.ceil(self.queued_texts / rate)) if rate > 0 else 1

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
                if not job[1].done():  # done: its caller went away; it takes no room in the batch
                    jobs.append(job)
                    count += len(job[0])
            await self._execute(jobs)

    async def _execute(self, jobs: list[Job]) -> None:
        alive = [job for job in jobs if not job[1].done()]
        self.dropped_requests += len(jobs) - len(alive)
        if not alive:
            return
        try:
            rows = await self._compute(alive)
        except Exception as error:  # one failed call fails its requests, not the service
            if len(alive) > 1:  # find the request at fault: each one alone
                for job in alive:
                    await self._execute([job])
                return
            log.error("model call failed (%s: %s); the request got an error", type(error).__name__, error)
            if not alive[0][1].done():
                alive[0][1].set_exception(error)
            return
        for (_, future), job_rows in zip(alive, rows):
            if job_rows is not None and not future.done():  # done: cancelled while it was computed
                future.set_result(job_rows)

    async def _compute(self, jobs: list[Job]) -> list[np.ndarray | None]:
        """Each job's rows, in pieces of max_batch texts; None for a job dropped before its pieces ran."""
        texts = [text for job_texts, _ in jobs for text in job_texts]
        ends = np.cumsum([len(job_texts) for job_texts, _ in jobs])
        spans = [(end - len(job_texts), end) for (job_texts, _), end in zip(jobs, ends)]
        pieces: list[np.ndarray | None] = []
        loop = asyncio.get_running_loop()
        for start in range(0, len(texts), self.max_batch):
            stop = min(start + self.max_batch, len(texts))
            owners = [future for (_, future), (first, end) in zip(jobs, spans) if first < stop and end > start]
            if all(future.done() for future in owners):
                pieces.append(None)
                continue
            began = time.perf_counter()
            pieces.append(await loop.run_in_executor(self.executor, self.predict_proba, texts[start:stop]))
            self.model_seconds += time.perf_counter() - began
            self.batches_run += 1
            self.texts_run += stop - start
        return [_rows(pieces, first, end, self.max_batch) for first, end in spans]


def _rows(pieces: list[np.ndarray | None], start: int, stop: int, piece_size: int) -> np.ndarray | None:
    """Rows start..stop of the pieces laid end to end (None when one of them was skipped)."""
    needed = pieces[start // piece_size: (stop - 1) // piece_size + 1]
    if any(piece is None for piece in needed):
        return None
    offset = (start // piece_size) * piece_size
    return np.concatenate(needed)[start - offset: stop - offset]
