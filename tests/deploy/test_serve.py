"""The HTTP service over real HTTP on an ephemeral loopback port: predictions, limits, auth, batching."""

from __future__ import annotations

import concurrent.futures
import json

import pytest

from conftest import LiveServer

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def tiny_run(tiny_exported_run):
    return tiny_exported_run


def make_server(run_dir, **settings) -> LiveServer:
    from bertfit.deploy.serve import ServeSettings, create_app
    from bertfit.infer.predictor import Predictor

    predictor = Predictor(run_dir, backend=settings.pop("backend", "auto"), batch_size=8)
    return LiveServer(create_app(predictor, ServeSettings(**settings), run_dir))


@pytest.fixture(scope="module")
def server(tiny_run):
    with make_server(tiny_run, max_texts=8, max_text_chars=1000, max_body_bytes=50_000, max_wait_ms=50) as live:
        yield live


def test_predict_one_text_and_a_list_match_the_predictor(server, tiny_run):
    from bertfit.infer.predictor import Predictor

    texts = ["Stocks rallied on Friday", "The team won the cup", "New chip doubles battery life"]
    predictor = Predictor(tiny_run)
    expected = predictor.predict(texts)
    one = httpx.post(f"{server.url}/predict", json={"text": texts[0], "top_k": 2})
    assert one.status_code == 200
    body = one.json()
    assert body["backend"] == predictor.backend_name != "pytorch" and len(body["predictions"]) == 1
    assert body["predictions"][0]["label"] == expected[0].label
    assert [s["label"] for s in body["predictions"][0]["top_k"]][0] == expected[0].label
    assert len(body["predictions"][0]["top_k"]) == 2
    many = httpx.post(f"{server.url}/predict", json={"texts": texts}).json()["predictions"]
    assert [p["label"] for p in many] == [p.label for p in expected]
    for got, want in zip(many, expected):
        assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-5)
        assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_health_metadata_and_docs(server, tiny_run):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["auth_required"] is False
    meta = httpx.get(f"{server.url}/metadata").json()
    assert sorted(meta["labels"]) == ["Business", "Sci/Tech", "Sports", "World"]
    assert meta["metrics"]["test"]["accuracy"] == json.loads((tiny_run / "results.json").read_text())["test"]["accuracy"]
    served = json.loads((tiny_run / "export" / "export.json").read_text())
    assert meta["model"]["backend"] in {name for name in served["files"] if name.startswith("onnx-")}
    assert meta["version"] and meta["limits"]["max_texts"] == 8
    assert "/predict" in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert httpx.get(f"{server.url}/docs").status_code == 200
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "Classify" in page.text


@pytest.mark.parametrize("content, status, words", [
    (b"{not json", 422, "json"),
    (b'{"texts": "one string, not a list"}', 422, "list"),
    (b'{"texts": [1, 2]}', 422, "string"),
    (b'{"texts": []}', 422, "empty"),
    (b'{"text": "a", "texts": ["b"]}', 422, "exactly one"),
    (b'{"texts": ["a"], "top_k": 0}', 422, "greater"),
    (json.dumps({"texts": ["x"] * 9}).encode(), 422, "limit is 8"),
    (json.dumps({"text": "x" * 1001}).encode(), 422, "1,001 characters"),
    (json.dumps({"text": "x" * 1_000_000}).encode(), 413, "50,000 bytes"),
    ('{"text": "caf\u00e9"}'.encode("latin-1"), 400, "parsing"),
])
def test_bad_requests_get_4xx_and_service_keeps_serving(server, content, status, words):
    response = httpx.post(f"{server.url}/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert words in response.text.lower() or words in response.text
    assert httpx.post(f"{server.url}/predict", json={"text": "still up"}).status_code == 200


def test_streamed_body_over_the_limit_is_refused(server):
    chunks = (b"x" * 10_000 for _ in range(10))  # no Content-Length: counted while it arrives
    response = httpx.post(f"{server.url}/predict", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_concurrent_requests_are_batched_and_keep_their_rows(server):
    texts = [f"text number {i} about markets and sport" for i in range(8)]
    before = httpx.get(f"{server.url}/health").json()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda t: httpx.post(f"{server.url}/predict", json={"texts": [t]}, timeout=30), texts))
    assert all(r.status_code == 200 for r in responses)
    after = httpx.get(f"{server.url}/health").json()
    assert after["texts_run"] - before["texts_run"] == 8
    assert after["batches_run"] - before["batches_run"] < 8  # 50 ms wait: requests shared model calls
    alone = httpx.post(f"{server.url}/predict", json={"texts": texts}).json()["predictions"]
    for response, want in zip(responses, alone):
        # int8 dynamic quantisation scales activations per batch, so batch-mates move probabilities by ~1e-3.
        assert response.json()["predictions"][0]["probabilities"] == pytest.approx(want["probabilities"], abs=5e-3)


def test_api_key_is_required_when_set(tiny_run):
    with make_server(tiny_run, api_key="s3cret", backend="torch") as live:
        assert httpx.post(f"{live.url}/predict", json={"text": "x"}).status_code == 401
        assert httpx.post(f"{live.url}/predict", json={"text": "x"}, headers={"X-API-Key": "wrong"}).status_code == 401
        assert httpx.get(f"{live.url}/metadata").status_code == 401
        ok = httpx.post(f"{live.url}/predict", json={"text": "x"}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200 and ok.json()["backend"] == "pytorch"
        assert httpx.get(f"{live.url}/health").json()["auth_required"] is True


def test_settings_are_validated():
    from bertfit.deploy.serve import ServeSettings
    from bertfit.errors import BertfitError

    with pytest.raises(BertfitError, match="max_batch: must be > 0"):
        ServeSettings(max_batch=0)


def test_cli_serve_finishes_in_flight_requests_on_sigterm(tiny_run):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    with socket.socket() as probe:  # a free port for the child (released just before it binds)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    # A 1.5 s batching wait keeps the request in flight while SIGTERM arrives.
    child = subprocess.Popen([sys.executable, "-m", "bertfit.cli", "serve", str(tiny_run), "--port", str(port),
                              "--max-wait-ms", "1500"], env={**os.environ, "BERTFIT_API_KEY": ""},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert child.poll() is None, child.stdout.read()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.2)
        answers = []
        request = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{url}/predict", json={"text": "in flight"}, timeout=30)))
        request.start()
        time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
        request.join(30)
        assert answers and answers[0].status_code == 200, answers
        # uvicorn re-raises the signal after its graceful shutdown, so the exit status says SIGTERM.
        assert child.wait(30) in (0, -signal.SIGTERM)
    finally:
        if child.poll() is None:
            child.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=1)
