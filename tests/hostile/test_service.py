# ruff: noqa: F811  (pytest fixtures imported from hostile_support are redefined as test arguments)
"""The HTTP service under hostile clients: a bad text fails alone, idle and half-sent connections are
closed, a full queue answers 503, abandoned work is dropped, floods of failures log one line."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time

import numpy as np
import pytest
from hostile_support import connect, guarded_server, tiny_run  # noqa: F401  (fixture)

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def predictor(tiny_run):
    from bertfit.infer.predictor import Predictor

    return Predictor(tiny_run, backend="torch", batch_size=8)


def _server(predictor, run_dir, max_connections=None, **settings):
    from bertfit.deploy.serve import ServeSettings, create_app

    settings = ServeSettings(**settings)
    return guarded_server(create_app(predictor, settings, run_dir), settings, max_connections)


class Gate:
    """predict_proba that waits for release() and records every text it was asked for."""

    def __init__(self, predict_proba):
        self.predict_proba, self.open, self.texts = predict_proba, threading.Event(), []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        assert self.open.wait(30), "gate never opened"
        return self.predict_proba(texts)


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"never saw: {what}"
        time.sleep(0.05)


def test_a_bad_text_fails_alone_and_its_batch_neighbours_are_answered(predictor, tiny_run):
    lone_surrogate = b'{"texts": ["fine text", "\\ud800"]}'  # valid JSON, not valid Unicode
    with _server(predictor, tiny_run, max_wait_ms=300) as live, concurrent.futures.ThreadPoolExecutor(10) as pool:
        normal = [pool.submit(httpx.post, f"{live.url}/predict", json={"text": f"stocks rally {i}"}, timeout=60)
                  for i in range(8)]
        bad = pool.submit(httpx.post, f"{live.url}/predict", content=lone_surrogate,
                          headers={"content-type": "application/json"}, timeout=60)
        empty = pool.submit(httpx.post, f"{live.url}/predict", json={"texts": ["ok", "  "]}, timeout=60)
        assert [r.result().status_code for r in normal] == [200] * 8
        assert bad.result().status_code == 422 and "text 1" in bad.result().json()["detail"]
        assert empty.result().status_code == 422 and "text 1 is empty" in empty.result().json()["detail"]


def test_a_failing_model_call_is_retried_per_request():
    from bertfit.deploy.microbatch import MicroBatcher

    def predict(texts: list[str]) -> np.ndarray:
        if "poison" in texts:
            raise ValueError("tokenizer broke")
        return np.ones((len(texts), 2))

    async def main():
        batcher = MicroBatcher(predict, max_batch=8, max_wait_ms=100)
        await batcher.start()
        results = await asyncio.gather(batcher.submit(["a"]), batcher.submit(["poison"]), batcher.submit(["b", "c"]),
                                       return_exceptions=True)
        await batcher.stop()
        return results

    good, bad, pair = asyncio.run(main())
    assert good.shape == (1, 2) and pair.shape == (2, 2) and isinstance(bad, ValueError)


def test_a_large_request_runs_in_pieces_that_others_join_and_stops_when_abandoned():
    from bertfit.deploy.microbatch import MicroBatcher

    calls: list[list[str]] = []

    def predict(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        time.sleep(0.02)
        return np.asarray([[float(len(t))] for t in texts])

    async def main():
        batcher = MicroBatcher(predict, max_batch=4, max_wait_ms=1)
        await batcher.start()
        large = asyncio.create_task(batcher.submit(["x" * 10] * 40))
        await asyncio.sleep(0.03)
        small = await batcher.submit(["small"])  # joins the next piece instead of waiting for all 40
        small_done_after = len(calls)
        abandoned = asyncio.create_task(batcher.submit(["y" * 3] * 400))
        await asyncio.sleep(0.05)
        abandoned.cancel()
        rows = await large
        await batcher.stop()
        return rows, small, small_done_after, batcher

    rows, small, small_done_after, batcher = asyncio.run(main())
    assert rows[:, 0].tolist() == [10.0] * 40 and small[:, 0].tolist() == [5.0]
    assert small_done_after < 10 and all(len(c) <= 4 for c in calls)
    assert sum(c.count("yyy") for c in calls) < 400  # the abandoned request's later pieces never ran
    assert batcher.dropped_requests == 1


def test_a_full_queue_answers_503_with_retry_after(predictor, tiny_run):
    gate = Gate(predictor.predict_proba)
    predictor_copy = _with_predict(predictor, gate)
    with _server(predictor_copy, tiny_run, max_queued_texts=2) as live, concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, f"{live.url}/predict", json={"texts": ["one", "two"]}, timeout=60)
        _wait_for(lambda: gate.texts, "the first request in the model")
        busy = httpx.post(f"{live.url}/predict", json={"text": "three"}, timeout=60)
        gate.open.set()
        assert first.result().status_code == 200
    assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1


def test_work_of_a_client_that_went_away_is_dropped(predictor, tiny_run):
    gate = Gate(predictor.predict_proba)
    with _server(_with_predict(predictor, gate), tiny_run) as live, concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, f"{live.url}/predict", json={"text": "first"}, timeout=60)
        _wait_for(lambda: gate.texts, "the first request in the model")
        body = b'{"text": "abandoned"}'
        sock = connect(live)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        health = lambda: httpx.get(f"{live.url}/health", timeout=10).json()  # noqa: E731
        _wait_for(lambda: health()["queued_texts"] == 2, "the abandoned request queued")
        sock.close()
        _wait_for(lambda: health()["queued_texts"] == 1, "the abandoned request cancelled")
        gate.open.set()
        assert first.result().status_code == 200
        _wait_for(lambda: health()["dropped_requests"] == 1, "the abandoned request dropped")
    assert gate.texts == ["first"]


@pytest.mark.parametrize("sent", [b"", b"POST /predict HTTP/1.1\r\nHost: x\r\n",
                                  b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"te"])
def test_idle_and_half_sent_connections_are_closed(predictor, tiny_run, sent):
    with _server(predictor, tiny_run, request_timeout_s=0.5, keep_alive_s=0.5) as live:
        sock = connect(live)  # a 15 s socket timeout: an open connection would raise here
        sock.sendall(sent)
        assert sock.recv(1024) == b""  # the server closed it
        sock.close()
        assert httpx.post(f"{live.url}/predict", json={"text": "still serving"}, timeout=60).status_code == 200


def test_past_the_connection_cap_the_oldest_idle_connection_is_closed(predictor, tiny_run):
    with _server(predictor, tiny_run, max_connections=4, request_timeout_s=60) as live:
        idle = [connect(live) for _ in range(6)]
        time.sleep(0.3)  # let the server accept them all
        assert httpx.post(f"{live.url}/predict", json={"text": "still serving"}, timeout=60).status_code == 200
        assert idle[0].recv(1024) == b"" and idle[1].recv(1024) == b""
        for sock in idle:
            sock.close()


def test_a_public_address_without_a_key_is_refused(tiny_run, capsys, monkeypatch):
    from bertfit.cli.main import main
    from bertfit.deploy.serve import ServeSettings, serve
    from bertfit.errors import BertfitError

    with pytest.raises(BertfitError, match="host: 0.0.0.0 is reachable .*allow_public"):
        serve(tiny_run, ServeSettings(), host="0.0.0.0")
    monkeypatch.delenv("BERTFIT_API_KEY", raising=False)
    assert main(["serve", str(tiny_run), "--host", "0.0.0.0"]) == 2
    assert "--allow-public" in capsys.readouterr().err


def test_a_flood_of_failures_logs_one_line_without_traceback():
    from bertfit.deploy.guard import RateLimitedLog

    logger, records = logging.getLogger("hostile.flood"), []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.addFilter(RateLimitedLog(interval_s=60))
    try:
        for i in range(500):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.exception("socket.accept() out of system resource\nsocket: <fd=%d>" % i)
    finally:
        logger.removeHandler(handler)
    assert len(records) == 1 and records[0].exc_info is None
    assert "Too many open files" in records[0].getMessage()


def _with_predict(predictor, predict_proba):
    """The predictor with its model call replaced (create_app takes the bound method once)."""
    import copy

    clone = copy.copy(predictor)
    clone.predict_proba = predict_proba
    return clone


@pytest.mark.parametrize("body", ['{"text": "ok", "top_k": 1e400}', '{"text": NaN}', '{"texts": [Infinity]}'])
def test_numbers_json_cannot_write_back_are_a_422_not_a_500(predictor, tiny_run, body):
    with _server(predictor, tiny_run) as live:
        answer = httpx.post(f"{live.url}/predict", content=body, headers={"content-type": "application/json"}, timeout=15)
    assert answer.status_code == 422 and answer.json()["detail"]


def _exchange(live, request: bytes) -> bytes:
    """Everything the server sends back on one raw connection until it closes it (a 15 s timeout otherwise)."""
    sock = connect(live)
    sock.sendall(request)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    return answer


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(predictor, tiny_run):
    """RFC 9112 6.1: the bytes after such a request must never be read as a second request (request smuggling)."""
    body = b'{"text": "a"}'
    smuggled = b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    request = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), len(body), body))
    with _server(predictor, tiny_run) as live:
        answer = _exchange(live, request + smuggled)
        assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1") == 1  # the smuggled request unread
        assert httpx.post(f"{live.url}/predict", json={"text": "still serving"}, timeout=60).status_code == 200


@pytest.mark.parametrize("headers", [[(b"X-Big", b"a" * 20 * 1024)], [(b"X-Big", b"a" * 60 * 1024)],
                                     [(b"X-N%d" % i, b"1") for i in range(1000)]])
def test_headers_over_the_documented_caps_are_refused(predictor, tiny_run, headers):
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    with _server(predictor, tiny_run) as live:
        answer = _exchange(live, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines + b"\r\n")
        status = answer.split(b"\r\n", 1)[0]
        assert status.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), status  # ours, or h11's own cap
        assert httpx.get(f"{live.url}/health", timeout=60).status_code == 200


def test_a_loopback_service_answers_only_to_its_own_names(predictor, tiny_run):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends Host: evil.example."""
    with _server(predictor, tiny_run, allowed_hosts=("localhost", "127.0.0.1", "::1")) as live:
        port = live.port
        assert _exchange(live, b"GET /metadata HTTP/1.1\r\nHost: evil.example\r\n\r\n").startswith(b"HTTP/1.1 421")
        assert _exchange(live, b"GET /metadata HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 4")  # no Host at all
        ours = b"GET /health HTTP/1.1\r\nHost: localhost:%d\r\nConnection: close\r\n\r\n" % port
        assert _exchange(live, ours).startswith(b"HTTP/1.1 200")


def test_the_api_documentation_needs_the_key_when_one_is_set(predictor, tiny_run):
    with _server(predictor, tiny_run, api_key="s3cret") as live:
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert httpx.get(f"{live.url}{path}", timeout=60).status_code == 401
        assert httpx.get(f"{live.url}/openapi.json", headers={"X-API-Key": "s3cret"}, timeout=60).status_code == 200
        assert httpx.get(f"{live.url}/health", timeout=60).status_code == 200  # liveness never needs the key
    with _server(predictor, tiny_run) as live:
        assert httpx.get(f"{live.url}/openapi.json", timeout=60).status_code == 200  # no key set: open


def test_serve_on_loopback_allows_only_loopback_names(tiny_run, monkeypatch):
    import uvicorn

    from bertfit.deploy import serve as module

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.setdefault("app", self.config.app))
    monkeypatch.setattr(module, "create_app", lambda predictor, settings, run_dir: seen.setdefault("settings", settings))
    module.serve(tiny_run, module.ServeSettings(), host="127.0.0.1", port=0, backend="pytorch")
    assert set(seen["settings"].allowed_hosts) == {"localhost", "127.0.0.1", "::1"}


def test_normal_clients_are_answered_beside_idle_sockets_beyond_the_open_file_limit(tiny_run, tmp_path):
    """A server under an open-file limit of 200 with 300 idle sockets held open against it still answers normal
    clients: past its connection cap (below the limit) each new connection closes the oldest idle one."""
    import resource
    import socket
    import subprocess
    import sys

    from launch import SRC, _env

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))  # noqa: E731
    server = subprocess.Popen([sys.executable, "-m", "bertfit", "serve", str(tiny_run), "--port", str(port),
                               "--backend", "pytorch"], preexec_fn=limit, env=_env(), cwd=SRC.parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 120
        while httpx_get_ok(f"http://127.0.0.1:{port}/health") is False:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=15))
        time.sleep(1)
        answered = [httpx.post(f"http://127.0.0.1:{port}/predict", json={"text": f"normal client {i}"},
                               timeout=60).status_code for i in range(7)]
        assert answered == [200] * 7
    finally:
        for sock in idle:
            sock.close()
        server.terminate()
        server.wait(timeout=60)


def httpx_get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
