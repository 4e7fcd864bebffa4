"""Every CPU backend on this machine: model-only and served texts/s against PyTorch, and test accuracy.

    bertfit export runs/demo --target auto                 # writes every variant, records the choice
    python bench/cpu_backends.py runs/demo                 # defaults: the full-scale run

1. Accuracy of PyTorch and of every exported variant on the AG News test set (--accuracy-rows, default
   all 7,600), with the paired change against PyTorch and its 95% interval (bertfit.deploy.check).
2. Model-only texts/s: `Predictor.predict_proba` (tokenisation included) on --rows test texts in
   batches of --batch-size, --threads threads, every backend once per round, --rounds interleaved rounds;
   ratios to PyTorch are taken per round (median, range).
3. Served texts/s: `bertfit serve` under bench/serve_load.py's load (--clients clients, --duration s),
   PyTorch and the auto choice alternating for --served-pairs pairs, then every other variant once.
Writes bench/out/cpu_backends.json (CPU flags, load averages, every figure) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_load  # noqa: E402  (the load generator and server start-up are shared)

OUT = Path(__file__).resolve().parent / "out"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def accuracy(run: Path, backends: list[str], rows: int) -> dict[str, dict]:
    """Accuracy per backend on the first `rows` AG News test rows, paired against PyTorch."""
    import csv

    from bertfit.data.presets import data_dir
    from bertfit.deploy.check import compare
    from bertfit.infer.predictor import Predictor

    with open(data_dir() / "ag_news" / "test.csv", newline="", encoding="utf-8") as file:
        rows_read = [(f"{title} {body}", int(label) - 1) for label, title, body in csv.reader(file)][:rows]
    texts, labels = [t for t, _ in rows_read], np.array([label for _, label in rows_read])
    probabilities = {b: Predictor(run, backend=b, batch_size=64).predict_proba(texts) for b in backends}
    reference = probabilities["torch"]
    result = {"torch": {"accuracy": float(np.mean(reference.argmax(-1) == labels))}}
    result.update({b: compare(reference, p, labels) for b, p in probabilities.items() if b != "torch"})
    return {"rows": len(texts), **result}


def model_only(run: Path, backends: list[str], args: argparse.Namespace) -> dict[str, dict]:
    from bertfit.infer.predictor import Predictor

    texts = serve_load.ag_news_texts(args.rows)
    predictors = {b: Predictor(run, backend=b, batch_size=args.batch_size, threads=args.threads) for b in backends}
    speeds: dict[str, list[float]] = {b: [] for b in backends}
    for predictor in predictors.values():
        predictor.predict_proba(texts[:args.batch_size])  # warm-up
    for _ in range(args.rounds):
        for name, predictor in predictors.items():
            started = time.perf_counter()
            for start in range(0, len(texts), args.batch_size):
                predictor.predict_proba(texts[start:start + args.batch_size])
            speeds[name].append(len(texts) / (time.perf_counter() - started))
    return {b: {"texts_per_second": round(statistics.median(v), 1), "range": [round(min(v), 1), round(max(v), 1)],
                "vs_torch": round(statistics.median([x / t for x, t in zip(v, speeds["torch"])]), 2),
                "vs_torch_range": [round(min(x / t for x, t in zip(v, speeds["torch"])), 2),
                                   round(max(x / t for x, t in zip(v, speeds["torch"])), 2)]}
            for b, v in speeds.items()}


def served(run: Path, backend: str, args: argparse.Namespace) -> dict:
    port = serve_load.free_port()
    child = serve_load.start_server(run, backend, port, args)
    try:
        before = load_average()
        result = asyncio.run(serve_load.load(f"http://{serve_load.HOST}:{port}", serve_load.ag_news_texts(),
                                             args.clients, args.duration))
        health = serve_load.httpx.get(f"http://{serve_load.HOST}:{port}/health", timeout=10).json()
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(60)
    return {"backend": backend, "served_by": health.get("backend"), **result, "load_average_before": before,
            "load_average_after": load_average()}


def serving(run: Path, choice: str, others: list[str], args: argparse.Namespace) -> list[dict]:
    """PyTorch and the choice alternating (torch, choice, choice, torch, ...), then every other variant once."""
    rows = []
    for pair in range(args.served_pairs):
        for backend in (("torch", "auto") if pair % 2 == 0 else ("auto", "torch")):
            rows.append({"pair": pair, **served(run, backend, args)})
            print(json.dumps(rows[-1]), flush=True)
    for backend in others:
        rows.append(served(run, backend, args))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--accuracy-rows", type=int, default=7600)
    parser.add_argument("--rows", type=int, default=300, help="model-only: texts per round")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=45.0, help="served: seconds per backend run")
    parser.add_argument("--served-pairs", type=int, default=2, help="served: alternating torch/choice pairs")
    parser.add_argument("--served-others", action=argparse.BooleanOptionalAction, default=True,
                        help="served: also run every other variant once")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["accuracy", "model", "served"])
    args = parser.parse_args()
    from bertfit.artifacts import read_export_meta

    export = read_export_meta(args.run / "export")
    variants = list(export.files)
    backends = ["torch", *variants]
    summary = {"command": " ".join(["python", "bench/cpu_backends.py", *sys.argv[1:]]), "cpu": serve_load.machine(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "choice": export.default_variant(),
               "selection": export.selection, "export_check": export.check}
    OUT.mkdir(exist_ok=True)
    steps = {"accuracy": lambda: accuracy(args.run, backends, args.accuracy_rows),
             "model": lambda: model_only(args.run, backends, args),
             "served": lambda: serving(args.run, export.default_variant(),
                                       [v for v in variants if v != export.default_variant()] if args.served_others
                                       else [], args)}
    for step, measure in steps.items():
        if step not in args.skip:
            summary[f"{step}_load_average_before"] = load_average()
            summary[step] = measure()
            summary[f"{step}_load_average_after"] = load_average()
            (OUT / "cpu_backends.json").write_text(json.dumps(summary, indent=2) + "\n")
            print(json.dumps({step: summary[step]}), flush=True)


if __name__ == "__main__":
    main()
