"""Dynamic micro-batching: concurrent requests merged into model calls of bounded size.

When the model is idle, the first request waits at most `max_wait_ms` for others to join. Each model
call (a piece) takes up to `max_batch` texts and about `max_batch * PIECE_CHARS_PER_TEXT` characters,
from the waiting requests with the fewest texts left first: a large request is computed piece by
piece, and requests that arrive meanwhile join the next piece instead of waiting for all of it. One
worker task runs the model in one thread, so the event loop keeps accepting requests while the model
computes. Each request gets back its own rows, in order.

Protection: at most `max_queued_texts` texts wait (submit raises QueueFull beyond, the service
answers 503); a request whose caller went away (its future cancelled) gets no further pieces; when a
model call fails, each request in it is retried alone, so one bad request fails alone.
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

PIECE_CHARS_PER_TEXT = 400  # a piece of long texts holds fewer of them, so no single call runs long


class QueueFull(Exception):
    """Too many texts are waiting; `retry_after_s` estimates when the queue has room again."""

    def __init__(self, queued: int, retry_after_s: int):
        super().__init__(f"{queued} texts are queued")
        self.retry_after_s = retry_after_s


class _Job:
    """One request: its texts, the rows computed so far and the future its caller awaits."""

    def __init__(self, texts: list[str], future: asyncio.Future):
        self.texts, self.future, self.next, self.rows = texts, future, 0, []

    @property
    def left(self) -> int:
        return len(self.texts) - self.next


class MicroBatcher:
    """Merges concurrent requests into model calls: an asyncio queue and one worker task."""

    def __init__(self, predict_proba: Callable[[list[str]], np.ndarray], max_batch: int, max_wait_ms: float,
                 max_queued_texts: int | None = None):
        self.predict_proba, self.max_batch, self.max_wait = predict_proba, max_batch, max_wait_ms / 1000
        self.max_queued_texts, self.max_piece_chars = max_queued_texts, max_batch * PIECE_CHARS_PER_TEXT
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
        """The rows of `texts`; cancelling the caller drops what is not computed yet."""
        if not texts:
            raise ValueError("submit needs at least one text")
        if self.max_queued_texts is not None and self.queued_texts + len(texts) > self.max_queued_texts:
            raise QueueFull(self.queued_texts, self._retry_after_s())
        future = asyncio.get_running_loop().create_future()
        self.queued_texts += len(texts)
        future.add_done_callback(lambda _: self._release(len(texts)))
        await self.queue.put(_Job(texts, future))
        return await future

    def _release(self, count: int) -> None:
        self.queued_texts -= count

    def _retry_after_s(self) -> int:
        """Seconds the queued texts take at the speed measured so far (1 before any measurement)."""
        rate = self.texts_run / self.model_seconds if self.model_seconds > 0 else 0.0
        return max(1, math.ceil(self.queued_texts / rate)) if rate > 0 else 1

    async def _run(self) -> None:
        pending: list[_Job] = []
        stopping = False
        while pending or not stopping:
            if not pending:
                job = await self.queue.get()
                if job is None:
                    break
                pending.append(job)
                stopping = await self._gather(pending)
            else:
                stopping = self._drain(pending) or stopping
            pending = self._unfinished(pending)
            if pending:
                await self._run_piece(self._next_piece(pending))
                pending = self._unfinished(pending)

    def _unfinished(self, jobs: list[_Job]) -> list[_Job]:
        """The jobs still to compute; counts those whose caller went away (their futures are cancelled)."""
        self.dropped_requests += sum(job.future.cancelled() for job in jobs)
        return [job for job in jobs if job.left > 0 and not job.future.done()]

    async def _gather(self, pending: list[_Job]) -> bool:
        """Wait up to max_wait for more requests while fewer than max_batch texts wait; True at the stop sentinel."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while sum(job.left for job in pending) < self.max_batch:
            try:
                # A cancelled Queue.get leaves the item queued, so nothing is lost at the deadline.
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    job = await self.queue.get()
            except TimeoutError:
                return False
            if job is None:
                return True
            pending.append(job)
        return False

    def _drain(self, pending: list[_Job]) -> bool:
        """Take every request that arrived while the model ran; True at the stop sentinel."""
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if job is None:
                return True
            pending.append(job)
        return False

    def _next_piece(self, pending: list[_Job]) -> list[tuple[_Job, int, int]]:
        """(job, first, stop) slices for one model call: requests with the fewest texts left first."""
        piece, texts, chars = [], 0, 0
        for job in sorted(pending, key=lambda j: j.left):
            stop = job.next
            while stop < len(job.texts) and texts < self.max_batch:
                size = len(job.texts[stop])
                if texts and chars + size > self.max_piece_chars:
                    break
                stop, texts, chars = stop + 1, texts + 1, chars + size
            if stop > job.next:
                piece.append((job, job.next, stop))
            if texts >= self.max_batch or (stop < len(job.texts) and texts):
                break
        return piece

    async def _run_piece(self, piece: list[tuple[_Job, int, int]]) -> None:
        try:
            rows = await self._call([text for job, first, stop in piece for text in job.texts[first:stop]])
        except Exception as error:  # one failed call fails its requests, not the service
            if len(piece) > 1:  # find the request at fault: each one alone
                for part in piece:
                    await self._run_piece([part])
                return
            job = piece[0][0]
            log.error("model call failed (%s: %s); the request got an error", type(error).__name__, error)
            if not job.future.done():
                job.future.set_exception(error)
            return
        start = 0
        for job, first, stop in piece:
            job.rows.append(rows[start:start + stop - first])
            job.next, start = stop, start + stop - first
            if job.left == 0 and not job.future.done():
                job.future.set_result(np.concatenate(job.rows))

    async def _call(self, texts: list[str]) -> np.ndarray:
        began = time.perf_counter()
        rows = await asyncio.get_running_loop().run_in_executor(self.executor, self.predict_proba, texts)
        self.model_seconds += time.perf_counter() - began
        self.batches_run += 1
        self.texts_run += len(texts)
        return rows
