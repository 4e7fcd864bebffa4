"""Does abuse of `bertfit serve` harm its normal clients? The same load with and without abusers.

    python bench/serve_abuse.py RUN --clients 20 --duration 60 --idle-sockets 1000

Two phases, each on a fresh `bertfit serve RUN` child process on 127.0.0.1:
1. baseline: CLIENTS normal clients post one AG News text per request in a loop for DURATION s;
2. abuse: the same normal load while abusive clients, in a second process (so their event loop
   never delays the normal clients' clocks; they share the CPU with the server, as on one machine),
   - hold IDLE_SOCKETS connections open (half send nothing, half trickle a header byte now and then),
     reopening each one the server closes;
   - send poison requests in a loop: a lone surrogate, an empty text, an over-long text, malformed
     JSON, wrong types, non-UTF-8 bytes (each must get a 4xx);
   - send a large request (256 long texts) every ABANDON_EVERY_S seconds and abandon it right after
     sending (the server drops it at the next model call; each costs at most one call).
Compares the normal clients' failed requests and p99 latency (target: 0 failed, p99 within 2x of the
baseline) and counts traceback lines in the server's log. Raises this process's open-file limit to
its hard limit first (the server raises its own). Writes bench/out/serve_abuse.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import HOST, ag_news_texts, client, free_port, wait_until_healthy  # noqa: E402  (the sibling bench's helpers)

from bertfit.runtime.cpu import cpu_features  # noqa: E402

POISON = {
    "lone surrogate": b'{"texts": ["a fine text", "\\ud800"]}',
    "empty text": b'{"text": "   "}',
    "over-long text": json.dumps({"text": "a" * 30_000}).encode(),
    "malformed JSON": b'{"texts": [',
    "wrong type": b'{"texts": [1, 2]}',
    "non-UTF-8": '{"text": "caf\u00e9"}'.encode("latin-1"),
}


def raise_open_file_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def start_server(run: Path, port: int, args: argparse.Namespace, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "bertfit.cli", "serve", str(run), "--host", HOST, "--port", str(port),
               "--backend", args.backend, "--max-batch", str(args.max_batch)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                             env={**os.environ, "BERTFIT_API_KEY": ""})
    return wait_until_healthy(child, port, "server", lambda: log.read_text()[-2000:], seconds=180)


async def idle_holder(port: int, slow_header: bool, stop_at: float, stats: dict) -> None:
    """Keep one connection open doing nothing useful (or trickling a header byte every 5 s); reopen it
    whenever the server closes it."""
    while time.perf_counter() < stop_at:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["opened"] += 1
        try:
            if slow_header:
                writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            while (left := stop_at - time.perf_counter()) > 0:
                try:
                    if await asyncio.wait_for(reader.read(1024), timeout=min(left, 5) if slow_header else left) == b"":
                        stats["closed_by_server"] += 1
                        break
                except asyncio.TimeoutError:
                    if slow_header:
                        writer.write(b"X")  # one more header byte now and then
        except OSError:
            stats["closed_by_server"] += 1
        finally:
            writer.close()


async def raw_post(port: int, body: bytes, read_answer: bool) -> int | None:
    """POST /predict on a fresh connection; the status code, or None when the answer is not awaited."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        if not read_answer:
            await asyncio.sleep(0.05)
            return None
        status_line = await asyncio.wait_for(reader.readline(), timeout=60)
        return int(status_line.split()[1])
    finally:
        writer.close()


async def poisoner(port: int, stop_at: float, statuses: dict) -> None:
    while time.perf_counter() < stop_at:
        for name, body in POISON.items():
            try:
                status = await raw_post(port, body, read_answer=True)
            except (OSError, asyncio.TimeoutError, IndexError, ValueError) as error:
                status = type(error).__name__
            statuses.setdefault(name, {}).setdefault(str(status), 0)
            statuses[name][str(status)] += 1
        await asyncio.sleep(0.1)


async def abandoner(port: int, texts: list[str], stop_at: float, every_s: float, stats: dict) -> None:
    body = json.dumps({"texts": [(t + " ") * 8 for t in texts[:256]]}).encode()  # 256 long texts
    while time.perf_counter() < stop_at:
        try:
            await raw_post(port, body, read_answer=False)
            stats["abandoned"] += 1
        except OSError:
            stats["abandon_errors"] += 1
        await asyncio.sleep(every_s)


async def abuse(port: int, texts: list[str], duration: float, idle_sockets: int, abandon_every_s: float) -> dict:
    """Every abuser for `duration` seconds; their counters."""
    stop_at = time.perf_counter() + duration
    idle = {"opened": 0, "closed_by_server": 0, "connect_errors": 0}
    poison: dict = {}
    abandoned = {"abandoned": 0, "abandon_errors": 0}
    await asyncio.gather(*(idle_holder(port, k % 2 == 1, stop_at, idle) for k in range(idle_sockets)),
                         poisoner(port, stop_at, poison), abandoner(port, texts, stop_at, abandon_every_s, abandoned))
    return {"idle_sockets": idle, "poison_statuses": poison, "abandoned_large_requests": abandoned}


def abuse_process(port: int, texts: list[str], args: argparse.Namespace, results: multiprocessing.Queue) -> None:
    """The abusers in their own process: their event loop never delays the normal clients' timing."""
    raise_open_file_limit()
    results.put(asyncio.run(abuse(port, texts, args.duration + 4, args.idle_sockets, args.abandon_every_s)))


async def normal_load(port: int, texts: list[str], args: argparse.Namespace) -> dict:
    base = f"http://{HOST}:{port}"
    latencies: list[float] = []
    failures: list[str] = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http, f"{base}/predict", texts, k * 97, started + args.duration, latencies,
                                             failures) for k in range(args.clients)))
        elapsed = time.perf_counter() - started
        health = (await http.get(f"{base}/health")).json()
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "failed": len(failures), "failures_sample": failures[:5],
            "seconds": round(elapsed, 1), "requests_per_second": round(len(latencies) / elapsed, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "server_dropped_requests": health.get("dropped_requests")}


def phase(port: int, texts: list[str], args: argparse.Namespace, with_abuse: bool) -> dict:
    for text in texts[:20]:  # warm-up
        httpx.post(f"http://{HOST}:{port}/predict", json={"text": text}, timeout=120)
    if not with_abuse:
        return asyncio.run(normal_load(port, texts, args))
    results: multiprocessing.Queue = multiprocessing.Queue()
    abusers = multiprocessing.Process(target=abuse_process, args=(port, texts, args, results))
    abusers.start()
    time.sleep(2)  # the idle sockets are open before the measured load starts
    measured = asyncio.run(normal_load(port, texts, args))
    counters = results.get(timeout=120)
    abusers.join(30)
    return {**measured, **counters}


def run_phase(texts: list[str], args: argparse.Namespace, abuse: bool, logs: Path) -> dict:
    port = free_port()
    log = logs / f"server_{'abuse' if abuse else 'baseline'}.log"
    child = start_server(args.run, port, args, log)
    try:
        result = phase(port, texts, args, abuse)
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(60)
    text = log.read_text(errors="replace")
    result["server_log"] = {"bytes": len(text), "lines": text.count("\n"), "traceback_lines": text.count("Traceback")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of normal load per phase")
    parser.add_argument("--idle-sockets", type=int, default=1000)
    parser.add_argument("--abandon-every-s", type=float, default=5.0,
                        help="seconds between abandoned large requests (each costs at most one model call)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    limits = raise_open_file_limit()
    if limits[0] < args.idle_sockets + args.clients + 100:
        raise SystemExit(f"open-file limit {limits[0]} is too low for {args.idle_sockets} idle sockets; raise ulimit -n")
    texts = ag_news_texts()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as logs:
        baseline = run_phase(texts, args, abuse=False, logs=Path(logs))
        print(json.dumps({"baseline": baseline}), flush=True)
        abused = run_phase(texts, args, abuse=True, logs=Path(logs))
        print(json.dumps({"abuse": abused}), flush=True)
    ratio = abused["p99_ms"] / baseline["p99_ms"]
    summary = {"command": " ".join(["python", "bench/serve_abuse.py", *sys.argv[1:]]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "cpu": cpu_features(), "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()], "open_file_limit": limits[0],
               "clients": args.clients, "duration_s": args.duration, "idle_sockets": args.idle_sockets,
               "abandon_every_s": args.abandon_every_s,
               "baseline": baseline, "abuse": abused, "p99_ratio": round(ratio, 2),
               "target": "abuse phase: 0 failed normal requests and p99 <= 2x baseline",
               "passed": abused["failed"] == 0 and ratio <= 2.0}
    (args.out / "serve_abuse.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nnormal clients: baseline {baseline['failed']}/{baseline['requests']} failed, p99 {baseline['p99_ms']} ms; "
          f"under abuse {abused['failed']}/{abused['requests']} failed, p99 {abused['p99_ms']} ms ({ratio:.2f}x); "
          f"passed: {summary['passed']}")


if __name__ == "__main__":
    main()
