"""Model-only speed of PyTorch vs ONNX fp32 vs ONNX int8, interleaved in one process.

    python bench/onnx_speed.py runs/demo --batch-size 10 --rounds 5 --threads 1

RUN must have an export (`bertfit export RUN --onnx --int8`). Each round times every backend's
`Predictor.predict_proba` (tokenisation included, as in `bertfit serve`) on the same AG News test
texts in batches of BATCH_SIZE (about what the serve micro-batcher merges with 20 clients), one
backend after another, so machine load hits all backends alike; the ratios against PyTorch are taken
per round and reported as median and range. Accuracy is the export's self-check (RUN/export/export.json).
Writes bench/out/onnx_speed.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import common

BACKENDS = ("torch", "onnx-fp32", "onnx-int8")


def summarise(speeds: dict[str, list[float]], check: dict) -> dict[str, dict]:
    """Median and range of texts/s and of the per-round ratio against PyTorch, plus self-check accuracy."""
    results = {}
    for backend, values in speeds.items():
        ratio = common.against(values, speeds["torch"])
        kind = backend  # the check is keyed by variant (onnx-fp32, onnx-int8); older export.json files are mapped on read
        accuracy = check.get(kind, {}).get("accuracy", check.get("torch_accuracy") if backend == "torch" else None)
        results[backend] = {"texts_per_second_median": round(statistics.median(values), 1),
                            "texts_per_second_range": [round(min(values), 1), round(max(values), 1)],
                            "vs_torch_median": ratio["median"], "vs_torch_range": ratio["range"],
                            "self_check_accuracy": accuracy,
                            "accuracy_change_points": check.get(kind, {}).get("accuracy_change_points", 0.0)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--rows", type=int, default=300, help="AG News test texts per round")
    parser.add_argument("--batch-size", type=int, default=10, help="texts per model call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per model call (0: all)")
    args = parser.parse_args()
    from bertfit.artifacts import EXPORT_DIR, read_export_meta
    from bertfit.infer.predictor import Predictor

    texts, _ = common.ag_news_test(args.rows)
    backends = ["torch", *[b for b in args.backends if b != "torch"]]  # ratios need PyTorch
    predictors = {b: Predictor(args.run, backend=b, batch_size=args.batch_size, threads=args.threads or None)
                  for b in backends}
    for predictor in predictors.values():
        common.predict_rate(predictor, texts[: 3 * args.batch_size], args.batch_size)  # warm-up
    speeds: dict[str, list[float]] = {b: [] for b in backends}
    record = common.provenance()
    for _ in range(args.rounds):
        for backend, predictor in predictors.items():
            speeds[backend].append(common.predict_rate(predictor, texts, args.batch_size))
    check = read_export_meta(args.run / EXPORT_DIR).check or {}
    summary = {**record, "load_average_after": common.load_average(), "rows": len(texts),
               "batch_size": args.batch_size, "rounds": args.rounds, "threads": args.threads,
               "self_check_rows": check.get("rows"), "results": summarise(speeds, check)}
    common.write_json(common.OUT / "onnx_speed.json", summary)
    lines = ["| backend | texts/s median (range) | vs PyTorch median (range) | self-check accuracy |", "|---|---|---|---|"]
    for backend, r in summary["results"].items():
        lo, hi = r["vs_torch_range"]
        lines.append(f"| {backend} | {r['texts_per_second_median']} ({r['texts_per_second_range'][0]}-"
                     f"{r['texts_per_second_range'][1]}) | {r['vs_torch_median']}x ({lo}-{hi}) | {r['self_check_accuracy']} |")
    print("\n".join(lines + ["", f"load average before/after: {record['cpu']['load_average']} / "
                                 f"{summary['load_average_after']}"]))


if __name__ == "__main__":
    main()
