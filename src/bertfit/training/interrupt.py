"""Ctrl-C during training: the first one asks the loop to stop after the current step with a checkpoint.

Kept apart from the loop because it touches process-wide state (the SIGINT handler).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Iterator

log = logging.getLogger(__name__)


class StopRequest:
    """First Ctrl-C: finish the current step, checkpoint, return. Second Ctrl-C: stop at once."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
