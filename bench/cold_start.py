"""Cold start: how long a fresh `bertfit predict RUN "text"` takes, and how long `bertfit serve RUN` needs to answer /health.

    python bench/cold_start.py [--run runs/demo-ag-news] [--repeats 5] [--backends auto,torch]
                               [--out bench/out/cold_start.json]

Every repeat is a new Python process (nothing imported or cached in memory; the OS file cache is warm
after the first, as it is for a user running the command twice). predict: wall time of the whole
command. serve: from starting the process to the first 200 from GET /health, then stopped with SIGINT.
`auto` uses the run's ONNX export when there is one (the torch-free path); `torch` forces PyTorch.
Targets: predict <= 3 s, serve ready <= 4 s, on 2 cores; the predictions of every repeat
must equal the first one's. Beside the wall time the CPU time the process used is recorded (predict:
the whole command; serve: until it was ready): on a machine shared with other work the wall time
stretches with the load, the CPU time much less, and on an idle machine startup takes about its CPU time.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import common
from common import HOST, ROOT

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


def time_serve(run: Path, backend: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) from starting `bertfit serve` to its first 200 on /health."""
    port = common.free_port()
    command = [sys.executable, "-m", "bertfit", "serve", str(run), "--port", str(port), "--backend", backend]
    start = time.perf_counter()
    server = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"serve exited: {server.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - start, common.cpu_seconds(server.pid)
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


def measure(run: Path, backend: str, repeats: int) -> dict:
    predict = [time_predict(run, backend) for _ in range(repeats)]
    serve = [time_serve(run, backend) for _ in range(repeats)]
    outputs = {output for _, _, output in predict}
    result = {"predict_seconds": common.spread([p[0] for p in predict]),
              "predict_cpu_seconds": common.spread([p[1] for p in predict]),
              "serve_ready_seconds": common.spread([s[0] for s in serve]),
              "serve_cpu_seconds": common.spread([s[1] for s in serve]),
              "same_predictions_every_repeat": len(outputs) == 1, "prediction": sorted(outputs)[0]}
    result["met"] = {name: result[name]["median"] <= target for name, target in TARGETS.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo-ag-news", help="a trained run (make demo)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="auto,torch", help="comma-separated: auto, torch, onnx, ...")
    parser.add_argument("--out", type=Path, default=common.OUT / "cold_start.json")
    args = parser.parse_args()
    if not (args.run / "model").is_dir():
        raise SystemExit(f"{args.run}: no trained run; run `make demo` or pass --run")

    record = common.provenance()
    results = {backend: measure(args.run, backend, args.repeats) for backend in args.backends.split(",")}
    report = {**record, "run": str(args.run), "has_export": (args.run / "export" / "export.json").is_file(),
              "repeats": args.repeats, "targets": TARGETS, "results": results,
              "load_average_after": common.load_average()}
    common.write_json(args.out, report)
    for backend, result in results.items():
        print(f"{backend}: predict median {result['predict_seconds']['median']:.2f} s "
              f"(CPU {result['predict_cpu_seconds']['median']:.2f} s), serve ready median "
              f"{result['serve_ready_seconds']['median']:.2f} s (CPU {result['serve_cpu_seconds']['median']:.2f} s), "
              f"met {result['met']}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
