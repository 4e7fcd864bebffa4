"""What keeps the service reachable when clients misbehave: connection timeouts, a cap on open
connections below the open-file limit, and logs that a flood of failures cannot drown.

- A connection must deliver a whole request (headers and body) within `request_timeout_s` of opening
  or of its previous answer, else it is closed: idle and half-sent sockets cannot pile up. Once a
  request is complete the model may take as long as it needs.
- Past `max_connections` open connections, a new one closes the oldest connection that is not
  waiting for an answer, so the process never runs out of file descriptors and keeps accepting.
- Repeated log records of one kind become one line (no traceback) per `interval_s`, with a count.
- A request the service does not take is answered before the app sees it, and its connection closed: both
  Content-Length and Transfer-Encoding (RFC 9112 6.1: a smuggled second request could follow), headers over
  MAX_HEADER_BYTES or MAX_HEADERS, a Host outside the allow-list (a loopback service answers only its own names,
  so a page whose DNS name is rebound to 127.0.0.1 cannot reach it), and the API documentation without the key
  where one is set.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import resource
import time
from typing import Any, Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

NOISY_LOGGERS = ("asyncio", "uvicorn", "uvicorn.error", "bertfit.deploy.microbatch", "bertfit.deploy.serve",
                 "bertfit.deploy.guard")
RESERVED_FILES = 64  # descriptors kept free for the model, logs and the listening socket
MAX_HEADER_BYTES, MAX_HEADERS = 16 * 1024, 100  # what a request's header block may hold
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")  # the names a loopback service answers to
DOCUMENTATION = ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")


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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RequestGuard:
    """ASGI middleware: refuses, before the app, the requests the module's text lists (`allowed_hosts` None: any Host)."""

    def __init__(self, app: Any, api_key: str | None = None, allowed_hosts: tuple[str, ...] | None = None):
        self.app, self.api_key, self.allowed_hosts = app, api_key, allowed_hosts

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        refusal = self.refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            return await self.app(scope, receive, send)
        await send_json(send, *refusal, close=True)

    def refusal(self, scope: dict) -> tuple[int, str] | None:
        """(status, reason) for a request the service does not take, else None."""
        headers = scope["headers"]
        names = {name.lower() for name, _ in headers}
        if {b"content-length", b"transfer-encoding"} <= names:
            return 400, "a request may not carry both Content-Length and Transfer-Encoding"
        if len(headers) > MAX_HEADERS or sum(len(name) + len(value) + 4 for name, value in headers) > MAX_HEADER_BYTES:
            return 431, f"request headers over {MAX_HEADERS} fields or {MAX_HEADER_BYTES // 1024} KiB"
        hosts = [value.decode("latin-1") for name, value in headers if name.lower() == b"host"]
        if self.allowed_hosts is not None and (len(hosts) != 1 or host_name(hosts[0]) not in self.allowed_hosts):
            return 421, "this service answers only to " + ", ".join(self.allowed_hosts) + " in the Host header"
        if self.api_key is not None and scope["path"] in DOCUMENTATION:
            given = next((value for name, value in headers if name.lower() == b"x-api-key"), b"")
            if not hmac.compare_digest(given, self.api_key.encode()):
                return 401, "missing or wrong API key: send header X-API-Key"
        return None


def host_name(host: str) -> str:
    """The name in a Host header, without its port: 'localhost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BodyLimit:
    """ASGI middleware: answer 413 to bodies over the limit, declared or streamed, before they are parsed."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await send_json(send, 413 if declared.isdigit() else 400, self._message(declared))
        received, rejected = 0, False

        async def limited_receive() -> dict:
            nonlocal received, rejected
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes and not rejected:
                rejected = True
                await send_json(send, 413, self._message(None))
            return {"type": "http.disconnect"} if rejected else message

        async def guarded_send(message: dict) -> None:
            if not rejected:  # once 413 went out, the app's own answer is dropped
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _message(self, declared: bytes | None) -> str:
        if declared is not None and not declared.isdigit():
            return f"invalid Content-Length header {declared.decode('latin-1')!r}"
        return f"request body over {self.max_bytes:,} bytes (serve --max-body-bytes)"


async def send_json(send: Callable, status: int, detail: str, close: bool = False) -> None:
    """A JSON error answer; `close`: the connection is closed after it (nothing more is read from it)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + ([(b"connection", b"close")]
                                                                                       if close else [])})
    await send({"type": "http.response.body", "body": body})
