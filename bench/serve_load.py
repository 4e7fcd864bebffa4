"""Load test of `bertfit serve` on loopback: latency percentiles and texts/s per backend.

    python bench/serve_load.py runs/demo --backends torch onnx-fp32 onnx-int8 --clients 20 --duration 60
    python bench/serve_load.py runs/demo --backends torch auto     # auto: what `bertfit export --target auto` chose

For each backend: start `bertfit serve RUN --backend B` on 127.0.0.1 (a child process), warm it up,
run CLIENTS concurrent clients, each posting one AG News test text per request in a loop, for DURATION
seconds (a bounded loop), then send malformed requests (bad JSON, wrong types, empty list, a 1 MB text,
non-UTF-8 bytes) and check each gets a 4xx while the service keeps answering. Writes
bench/out/serve_<backend>.json and bench/out/serve_summary.json, prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx
import numpy as np

HOST = "127.0.0.1"  # the bench never leaves this machine
BAD_REQUESTS = {
    "malformed JSON": b'{"texts": [',
    "wrong type": b'{"texts": [1, 2, 3]}',
    "empty list": b'{"texts": []}',
    "1 MB text": json.dumps({"text": "a" * 1_000_000}).encode(),
    "non-UTF-8": '{"text": "caf\u00e9"}'.encode("latin-1"),
}


def ag_news_texts(limit: int = 2000) -> list[str]:
    from bertfit.data.presets import data_dir

    with open(data_dir() / "ag_news" / "test.csv", newline="", encoding="utf-8") as file:
        return [f"{title} {body}" for _, title, body in csv.reader(file)][:limit]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_server(run: Path, backend: str, port: int, args: argparse.Namespace) -> subprocess.Popen:
    command = [sys.executable, "-m", "bertfit.cli", "serve", str(run), "--host", HOST, "--port", str(port),
               "--backend", backend, "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "BERTFIT_API_KEY": ""})
    return wait_until_healthy(child, port, f"server for {backend}", lambda: child.stderr.read()[-2000:])


def wait_until_healthy(child: subprocess.Popen, port: int, what: str, error_text: Callable[[], str],
                       seconds: float = 120) -> subprocess.Popen:
    """The child once GET /health answers 200; exits with `error_text()` when it dies first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"{what} exited: {error_text()}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                return child
        except httpx.TransportError:
            time.sleep(0.3)
    child.kill()
    raise SystemExit(f"{what} did not start in {seconds:.0f} s")


async def client(http: httpx.AsyncClient, url: str, texts: list[str], offset: int, stop_at: float,
                 latencies: list[float], failures: list[str]) -> None:
    i = offset
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            response = await http.post(url, json={"text": texts[i % len(texts)]})
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.text[:200]}")
        except httpx.HTTPError as error:
            failures.append(repr(error))
        latencies.append(time.perf_counter() - started)
        i += 7


async def load(base: str, texts: list[str], clients: int, duration: float) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        for text in texts[:20]:  # warm-up: first calls allocate buffers and fill caches
            await http.post(f"{base}/predict", json={"text": text})
        before = (await http.get(f"{base}/health")).json()
        started = time.perf_counter()
        await asyncio.gather(*(client(http, f"{base}/predict", texts, k * 97, started + duration, latencies, failures)
                               for k in range(clients)))
        elapsed = time.perf_counter() - started
        after = (await http.get(f"{base}/health")).json()
    ms = np.asarray(latencies) * 1000
    batches = after["batches_run"] - before["batches_run"]
    texts_run = after["texts_run"] - before["texts_run"]
    return {"requests": len(latencies), "failed": len(failures), "failures_sample": failures[:5],
            "seconds": round(elapsed, 1), "texts_per_second": round((len(latencies) - len(failures)) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "mean_batch_texts": round(texts_run / max(batches, 1), 2)}


def bad_inputs(base: str) -> dict:
    result = {}
    for name, body in BAD_REQUESTS.items():
        response = httpx.post(f"{base}/predict", content=body, headers={"content-type": "application/json"}, timeout=30)
        still_up = httpx.post(f"{base}/predict", json={"text": "still serving?"}, timeout=30).status_code == 200
        result[name] = {"status": response.status_code, "service_ok_after": still_up}
    return result


def accuracy_of(run: Path, backend: str) -> float | None:
    """Accuracy on the export check's rows (the same rows for every backend); auto: the recorded choice's."""
    from bertfit.artifacts import read_export_meta

    if not (run / "export" / "export.json").is_file():
        return None
    export = read_export_meta(run / "export")
    backend = export.default_variant() if backend == "auto" else backend
    if backend == "torch":
        return export.check["torch_accuracy"]
    return (export.check or {}).get(backend, {}).get("accuracy")


def machine() -> dict:
    """CPU model, cores and the flags that decide int8 speed, with the load average when measured."""
    from bertfit.runtime.cpu import cpu_features

    return {**cpu_features(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx-fp32", "onnx-int8"])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per backend")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, help="server CPU threads per model call (default: all cores)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    texts = ag_news_texts()
    rows = []
    for backend in args.backends:
        port = free_port()
        child = start_server(args.run, backend, port, args)
        base = f"http://{HOST}:{port}"
        try:
            result = {"backend": backend, "run": str(args.run), "clients": args.clients,
                      "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "threads": args.threads,
                      **asyncio.run(load(base, texts, args.clients, args.duration)),
                      "accuracy": accuracy_of(args.run, backend), "bad_inputs": bad_inputs(base),
                      "cpu": machine(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(60)
        (args.out / f"serve_{backend}.json").write_text(json.dumps(result, indent=2) + "\n")
        rows.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "bad_inputs"}), flush=True)
    (args.out / "serve_summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    base_rate = next((r["texts_per_second"] for r in rows if r["backend"] == "torch"), None)
    print("\n| backend | texts/s | vs torch | p50 ms | p95 ms | p99 ms | mean batch | failed | accuracy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speedup = f"{r['texts_per_second'] / base_rate:.2f}x" if base_rate else "-"
        accuracy = f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "-"
        print(f"| {r['backend']} | {r['texts_per_second']} | {speedup} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
              f"| {r['mean_batch_texts']} | {r['failed']}/{r['requests']} | {accuracy} |")


if __name__ == "__main__":
    main()
