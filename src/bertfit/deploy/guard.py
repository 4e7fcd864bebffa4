"""What keeps the service reachable when clients misbehave: connection timeouts, a cap on open
connections below the open-file limit, and logs that a flood of failures cannot drown.

- A connection must deliver a whole request (headers and body) within `request_timeout_s` of opening
  or of its previous answer, else it is closed: idle and half-sent sockets cannot pile up. Once a
  request is complete the model may take as long as it needs.
- Past `max_connections` open connections, a new one closes the oldest connection that is not
  waiting for an answer, so the process never runs out of file descriptors and keeps accepting.
- Repeated log records of one kind become one line (no traceback) per `interval_s`, with a count.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

NOISY_LOGGERS = ("asyncio", "uvicorn", "uvicorn.error", "bertfit.deploy.microbatch", "bertfit.deploy.serve",
                 "bertfit.deploy.guard")
RESERVED_FILES = 64  # descriptors kept free for the model, logs and the listening socket


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a whole-request deadline and a cap on open connections."""

    request_timeout_s: float = 10.0
    max_connections: int = 1000

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.opened = time.monotonic()
        self._arm()
        if len(self.connections) > self.max_connections:
            self._close_oldest_idle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def waiting_for_answer(self) -> bool:
        """A complete request is with the application (computing, or queued for the model)."""
        return self.cycle is not None and not self.cycle.more_body and not self.cycle.response_complete

    def close_now(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass  # mid-request: h11 has nothing to finish, the socket just closes
            self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._on_deadline)

    def _disarm(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()

    def _on_deadline(self) -> None:
        if not self.waiting_for_answer():
            log.info("closed a connection that sent no complete request within %.0f s", self.request_timeout_s)
            self.close_now()

    def _close_oldest_idle(self) -> None:
        idle = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c is not self
                and not c.waiting_for_answer()]
        if idle:
            log.warning("over %d open connections: closed the oldest idle one", self.max_connections)
            min(idle, key=lambda c: c.opened).close_now()


def guarded_protocol(request_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn.Config(http=...) with these limits."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"request_timeout_s": request_timeout_s, "max_connections": max_connections})


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit (allowed without privileges); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as error:
            log.warning("could not raise the open-file limit from %d: %s", soft, error)
    return soft


def connection_cap(open_file_limit: int) -> int:
    return max(16, open_file_limit - max(RESERVED_FILES, open_file_limit // 10))


class RateLimitedLog(logging.Filter):
    """One line per kind of record (logger + message template) per interval, never a traceback."""

    def __init__(self, interval_s: float = 10.0):
        super().__init__()
        self.interval_s = interval_s
        self.last: dict[tuple[str, str], float] = {}
        self.suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg).split("\n")[0])  # asyncio puts per-socket details below
        now = time.monotonic()
        if now - self.last.get(key, -self.interval_s) < self.interval_s:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        self.last[key] = now
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message += f" ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        skipped = self.suppressed.pop(key, 0)
        if skipped:
            message += f" [{skipped} more like this in the last {self.interval_s:.0f} s]"
        record.msg, record.args, record.exc_info, record.exc_text, record.stack_info = message, None, None, None, None
        return True


def quiet_floods(interval_s: float = 10.0) -> None:
    """Install the rate limit on the loggers a misbehaving client can make noisy."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitedLog) for f in logger.filters):
            logger.addFilter(RateLimitedLog(interval_s))


async def validation_error(_: Any, error: Any) -> Any:
    """A 422 that names what was wrong without echoing the input: a client's NaN or 1e400 (json reads it as
    infinity) cannot be written back as JSON, which turned a bad request into a 500."""
    from fastapi.responses import JSONResponse

    detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in error.errors()]
    return JSONResponse({"detail": detail}, status_code=422)
