"""Cold start: how long a fresh `bertfit predict RUN "text"` takes, and how long `bertfit serve RUN` needs to answer /health.

    python bench/cold_start.py [--run runs/demo-ag-news] [--repeats 5] [--backends auto,torch]
                               [--out bench/out/cold_start.json]

Every repeat is a new Python process (nothing imported or cached in memory; the OS file cache is warm
after the first, as it is for a user running the command twice). predict: wall time of the whole
command. serve: from starting the process to the first 200 from GET /health, then stopped with SIGINT.
`auto` uses the run's ONNX export when there is one (the torch-free path); `torch` forces PyTorch.
Targets (issue 12): predict <= 3 s, serve ready <= 4 s, on 2 cores; the predictions of every repeat
must equal the first one's. Beside the wall time the CPU time the process used is recorded (predict:
the whole command; serve: until it was ready): on a machine shared with other work the wall time
stretches with the load, the CPU time much less, and on an idle machine startup takes about its CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bertfit.runtime.cpu import cpu_features

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"predict_seconds": 3.0, "serve_ready_seconds": 4.0}
TEXT = "Stocks rallied on Wall Street after the central bank held interest rates"


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def time_predict(run: Path, backend: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, printed prediction) of one cold `bertfit predict`."""
    command = [sys.executable, "-m", "bertfit", "predict", str(run), TEXT, "--backend", backend]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"predict failed: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, done.stdout.strip()


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def time_serve(run: Path, backend: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) from starting `bertfit serve` to its first 200 on /health."""
    port = _free_port()
    command = [sys.executable, "-m", "bertfit", "serve", str(run), "--port", str(port), "--backend", backend]
    start = time.perf_counter()
    server = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"serve exited: {server.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - start, _cpu_seconds(server.pid)
            except OSError:
                time.sleep(0.02)
            if time.perf_counter() - start > 600:
                raise SystemExit("serve did not become ready in 600 s")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def summary(values: list[float]) -> dict[str, float | list[float]]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3),
            "all": [round(v, 3) for v in values]}


def measure(run: Path, backend: str, repeats: int) -> dict:
    predict = [time_predict(run, backend) for _ in range(repeats)]
    serve = [time_serve(run, backend) for _ in range(repeats)]
    outputs = {output for _, _, output in predict}
    result = {"predict_seconds": summary([p[0] for p in predict]), "predict_cpu_seconds": summary([p[1] for p in predict]),
              "serve_ready_seconds": summary([s[0] for s in serve]), "serve_cpu_seconds": summary([s[1] for s in serve]),
              "same_predictions_every_repeat": len(outputs) == 1, "prediction": sorted(outputs)[0]}
    result["met"] = {name: result[name]["median"] <= target for name, target in TARGETS.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo-ag-news", help="a trained run (make demo)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="auto,torch", help="comma-separated: auto, torch, onnx, ...")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "cold_start.json")
    args = parser.parse_args()
    if not (args.run / "model").is_dir():
        raise SystemExit(f"{args.run}: no trained run; run `make demo` or pass --run")

    load_before = os.getloadavg()
    results = {backend: measure(args.run, backend, args.repeats) for backend in args.backends.split(",")}
    report = {"run": str(args.run), "has_export": (args.run / "export" / "export.json").is_file(),
              "repeats": args.repeats, "targets": TARGETS, "results": results, "cpu": cpu_features(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "python": sys.version.split()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for backend, result in results.items():
        print(f"{backend}: predict median {result['predict_seconds']['median']:.2f} s "
              f"(CPU {result['predict_cpu_seconds']['median']:.2f} s), serve ready median "
              f"{result['serve_ready_seconds']['median']:.2f} s (CPU {result['serve_cpu_seconds']['median']:.2f} s), "
              f"met {result['met']}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
