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
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import common
from common import HOST

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
    flags = ["--backend", args.backend, "--max-batch", str(args.max_batch)]
    return common.start_server(run, port, flags, log=log, seconds=180)


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


def normal_load(port: int, texts: list[str], args: argparse.Namespace) -> dict:
    result = asyncio.run(common.clients(f"http://{HOST}:{port}", texts, args.clients, args.duration, timeout=120))
    health = result.pop("health_after")
    del result["health_before"]
    return {**result, "requests_per_second": round(result["requests"] / result["seconds"], 2),
            "server_dropped_requests": health.get("dropped_requests")}


def phase(port: int, texts: list[str], args: argparse.Namespace, with_abuse: bool) -> dict:
    common.warm_up(f"http://{HOST}:{port}", texts)
    if not with_abuse:
        return normal_load(port, texts, args)
    results: multiprocessing.Queue = multiprocessing.Queue()
    abusers = multiprocessing.Process(target=abuse_process, args=(port, texts, args, results))
    abusers.start()
    time.sleep(2)  # the idle sockets are open before the measured load starts
    measured = normal_load(port, texts, args)
    counters = results.get(timeout=120)
    abusers.join(30)
    return {**measured, **counters}


def run_phase(texts: list[str], args: argparse.Namespace, abuse: bool, logs: Path) -> dict:
    port = common.free_port()
    log = logs / f"server_{'abuse' if abuse else 'baseline'}.log"
    child = start_server(args.run, port, args, log)
    try:
        result = phase(port, texts, args, abuse)
    finally:
        common.stop_server(child)
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
    parser.add_argument("--out", type=Path, default=common.OUT)
    args = parser.parse_args()
    limits = raise_open_file_limit()
    if limits[0] < args.idle_sockets + args.clients + 100:
        raise SystemExit(f"open-file limit {limits[0]} is too low for {args.idle_sockets} idle sockets; raise ulimit -n")
    texts, _ = common.ag_news_test(2000)
    record = common.provenance()
    with tempfile.TemporaryDirectory() as logs:
        baseline = run_phase(texts, args, abuse=False, logs=Path(logs))
        print(json.dumps({"baseline": baseline}), flush=True)
        abused = run_phase(texts, args, abuse=True, logs=Path(logs))
        print(json.dumps({"abuse": abused}), flush=True)
    ratio = abused["p99_ms"] / baseline["p99_ms"]
    summary = {**record, "load_average_after": common.load_average(), "open_file_limit": limits[0],
               "clients": args.clients, "duration_s": args.duration, "idle_sockets": args.idle_sockets,
               "abandon_every_s": args.abandon_every_s,
               "baseline": baseline, "abuse": abused, "p99_ratio": round(ratio, 2),
               "target": "abuse phase: 0 failed normal requests and p99 <= 2x baseline",
               "passed": abused["failed"] == 0 and ratio <= 2.0}
    common.write_json(args.out / "serve_abuse.json", summary)
    print(f"\nnormal clients: baseline {baseline['failed']}/{baseline['requests']} failed, p99 {baseline['p99_ms']} ms; "
          f"under abuse {abused['failed']}/{abused['requests']} failed, p99 {abused['p99_ms']} ms ({ratio:.2f}x); "
          f"passed: {summary['passed']}")


if __name__ == "__main__":
    main()
