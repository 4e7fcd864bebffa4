"""Every CPU backend on this machine: model-only and served texts/s against PyTorch, and test accuracy.

    bertfit export runs/demo --target auto                 # writes every variant, records the choice
    python bench/cpu_backends.py runs/demo                 # defaults: the full-scale run

1. Accuracy of PyTorch and of every exported variant on the AG News test set (--accuracy-rows, default
   all 7,600), with the paired change against PyTorch and its 95% interval (bertfit.deploy.check).
2. Model-only texts/s: `Predictor.predict_proba` (tokenisation included) on --rows test texts in
   batches of --batch-size, --threads threads, every backend once per round, --rounds interleaved rounds;
   ratios to PyTorch are taken per round (median, range).
3. Served texts/s: `bertfit serve` under the serving benchmarks' load (bench/common.py) (--clients clients, --duration s),
   PyTorch and the auto choice alternating for --served-pairs pairs, then every other variant once.
Writes bench/out/cpu_backends.json (CPU flags, load averages, every figure) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import common


def accuracy(run: Path, backends: list[str], rows: int) -> dict[str, dict]:
    """Accuracy per backend on the first `rows` AG News test rows, paired against PyTorch."""
    import numpy as np

    from bertfit.deploy.check import compare
    from bertfit.infer.predictor import Predictor

    texts, label_ids = common.ag_news_test(rows)
    labels = np.array(label_ids)
    probabilities = {b: Predictor(run, backend=b, batch_size=64).predict_proba(texts) for b in backends}
    reference = probabilities["torch"]
    result = {"torch": {"accuracy": float(np.mean(reference.argmax(-1) == labels))}}
    result.update({b: compare(reference, p, labels) for b, p in probabilities.items() if b != "torch"})
    return {"rows": len(texts), **result}


def model_only(run: Path, backends: list[str], args: argparse.Namespace) -> dict[str, dict]:
    from bertfit.infer.predictor import Predictor

    texts, _ = common.ag_news_test(args.rows)
    predictors = {b: Predictor(run, backend=b, batch_size=args.batch_size, threads=args.threads) for b in backends}
    speeds: dict[str, list[float]] = {b: [] for b in backends}
    for predictor in predictors.values():
        predictor.predict_proba(texts[:args.batch_size])  # warm-up
    for _ in range(args.rounds):
        for name, predictor in predictors.items():
            speeds[name].append(common.predict_rate(predictor, texts, args.batch_size))
    return {b: {"texts_per_second": round(statistics.median(v), 1), "range": [round(min(v), 1), round(max(v), 1)],
                "vs_torch": common.against(v, speeds["torch"])["median"],
                "vs_torch_range": common.against(v, speeds["torch"])["range"]}
            for b, v in speeds.items()}


def served(run: Path, backend: str, args: argparse.Namespace) -> dict:
    import httpx

    port = common.free_port()
    child = common.start_server(run, port, common.serve_flags(backend, args))
    base = f"http://{common.HOST}:{port}"
    try:
        before = common.load_average()
        result = common.served_load(base, common.ag_news_test(2000)[0], args.clients, args.duration)
        health = httpx.get(f"{base}/health", timeout=10).json()
    finally:
        common.stop_server(child)
    return {"backend": backend, "served_by": health.get("backend"), **result, "load_average_before": before,
            "load_average_after": common.load_average()}


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
    summary = {**common.provenance(), "choice": export.default_variant(), "selection": export.selection,
               "export_check": export.check}
    steps = {"accuracy": lambda: accuracy(args.run, backends, args.accuracy_rows),
             "model": lambda: model_only(args.run, backends, args),
             "served": lambda: serving(args.run, export.default_variant(),
                                       [v for v in variants if v != export.default_variant()] if args.served_others
                                       else [], args)}
    for step, measure in steps.items():
        if step not in args.skip:
            summary[f"{step}_load_average_before"] = common.load_average()
            summary[step] = measure()
            summary[f"{step}_load_average_after"] = common.load_average()
            common.write_json(common.OUT / "cpu_backends.json", summary)
            print(json.dumps({step: summary[step]}), flush=True)


if __name__ == "__main__":
    main()
