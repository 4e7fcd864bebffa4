"""What does the full evaluation cost on top of prediction? AG News test set (7,600 rows), CPU.

    python bench/eval_overhead.py [--rows N] [--with-extras] [--out bench/out/eval_overhead.json]

Builds a throwaway run of the embedded model (a few training steps: the weights do not change the
cost), then times, in one process:
  predict      Predictor.logits over the test texts (tokenise + forward), the reference
  evaluate     evaluate_run(calibrate=False, baselines=False): read data, predict, metrics.json,
               errors.csv, the three PNGs. overhead = evaluate - its own predict time.
  extras       (--with-extras) calibration (one pass over validation) and the three baselines
               (one more full forward pass for the untrained model, TF-IDF fit): reported apart,
               since they are extra model passes, not bookkeeping.
Target: overhead < 10% of predict.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="test rows (default: all 7,600)")
    parser.add_argument("--with-extras", action="store_true", help="also time calibration and baselines")
    parser.add_argument("--out", type=Path, default=common.OUT / "eval_overhead.json")
    args = parser.parse_args()

    import torch

    from bertfit.config import DataConfig, load_config
    from bertfit.data.read import read_split
    from bertfit.evaluate.run import evaluate_run
    from bertfit.infer.predictor import Predictor
    from bertfit.training.recipe import train

    work = Path(tempfile.mkdtemp(prefix="bertfit-bench-"))
    run = train(load_config(None, ["--data.train", "ag_news", "--data.max_train_rows", "64", "--data.max_eval_rows", "64",
                                   "--train.epochs", "1", "--train.method", "standard", "--train.device", "cpu",
                                   "--train.progress", "false",
                                   "--train.tensorboard", "false", "--output_dir", str(work), "--cache_dir", str(work / "cache"),
                                   "--name", "bench"])).run_dir
    texts = read_split("ag_news", "test", DataConfig()).texts[: args.rows]
    predictor = Predictor(run, device="cpu", batch_size=128)
    predictor.logits(texts[:256])  # warm-up: first-call allocations are not what we measure
    start = time.perf_counter()
    predictor.logits(texts)
    predict_seconds = time.perf_counter() - start

    start = time.perf_counter()
    result = evaluate_run(run, split="test", device="cpu", max_rows=args.rows, calibrate=False, baselines=False)
    evaluate_seconds = time.perf_counter() - start
    inner_predict = result["timings"]["predict_seconds"]
    overhead = evaluate_seconds - inner_predict
    report = {
        **common.provenance(), "rows": len(texts), "device": "cpu", "torch_threads": torch.get_num_threads(),
        "predict_seconds": round(predict_seconds, 3), "evaluate_seconds": round(evaluate_seconds, 3),
        "evaluate_inner_predict_seconds": inner_predict, "overhead_seconds": round(overhead, 3),
        "overhead_fraction_of_predict": round(overhead / predict_seconds, 4),
        "overhead_breakdown": result["timings"], "target": "overhead_fraction_of_predict < 0.10",
        "passed": overhead / predict_seconds < 0.10,
    }
    if args.with_extras:
        extras = evaluate_run(run, split="test", device="cpu", max_rows=args.rows, calibrate=True, baselines=True)["timings"]
        report["extras_seconds"] = {k: extras[k] for k in ("calibration_seconds", "baselines_seconds")}
    common.write_json(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
