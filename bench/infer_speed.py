"""Inference speed on the 7,600 AG News test texts: bertfit's Predictor vs transformers' pipeline.

    python bench/train_speed.py          # first: leaves bench/out/bertfit-run and bench/out/trainer-model
    python bench/infer_speed.py

Variants: `bertfit` (length-sorted batches of 64, order restored, inference_mode), `bertfit-bf16`
(the same under CPU bf16 autocast; not in the default list: it answers whether bf16 pays on this CPU),
`pipeline-default` (pipeline("text-classification") as most users call it) and `pipeline-b64`
(batch_size=64). Each runs in its own subprocess; results in bench/out/infer_speed.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import common

OUT = common.OUT
VARIANTS = ("bertfit", "pipeline-default", "pipeline-b64")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=OUT / "bertfit-run")
    parser.add_argument("--hf-model", type=Path, default=OUT / "trainer-model")
    parser.add_argument("--rows", type=int, default=7600)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        common.write_json(OUT / f"infer_{args.only}.json", run_variant(args.only, args))
        return
    results = {}
    for variant in args.variants.split(","):
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", variant], check=True)
        results[variant] = json.loads((OUT / f"infer_{variant}.json").read_text())
    base = results.get("bertfit", {}).get("texts_per_second")
    speedups = {f"bertfit_vs_{k}": round(base / v["texts_per_second"], 2) for k, v in results.items() if base and k != "bertfit"}
    common.write_json(OUT / "infer_speed.json", {**common.provenance(), "results": results, "ratios": speedups})
    lines = ["| variant | texts/s | seconds | accuracy | peak RSS MiB |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {r['texts_per_second']} | {r['seconds']} | {r['accuracy']:.4f} | {r['peak_rss_mib']} |"
              for k, r in results.items()]
    print("\n".join(lines + [""] + [f"{k}: {v}x" for k, v in speedups.items()]))


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    import numpy as np

    from bertfit.config import DataConfig
    from bertfit.data.splits import load_dataset

    test = load_dataset(DataConfig(train="ag_news"), seed=42).splits["test"]
    texts, labels = test.texts[: args.rows], np.asarray(test.labels[: args.rows])
    if variant.startswith("bertfit"):
        from bertfit.infer.predictor import Predictor
        predictor = Predictor(args.run, batch_size=64, precision="bf16" if variant == "bertfit-bf16" else "auto")
        predictor.predict_proba(texts[:64])  # warm-up, as for the pipeline below
        started = time.perf_counter()
        predicted = predictor.predict_proba(texts).argmax(-1)
    else:
        from transformers import pipeline
        batch = {} if variant == "pipeline-default" else {"batch_size": 64}
        classify = pipeline("text-classification", model=str(args.hf_model), device="cpu", truncation=True,
                            max_length=128, **batch)
        classify(texts[:64])
        label_ids = classify.model.config.label2id
        started = time.perf_counter()
        predicted = np.array([label_ids[out["label"]] for out in classify(texts)])
    seconds = time.perf_counter() - started
    return {"variant": variant, "seconds": round(seconds, 2), "texts_per_second": round(len(texts) / seconds, 1),
            "accuracy": round(float((predicted == labels).mean()), 4),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


if __name__ == "__main__":
    main()
