"""Long texts on IMDb: head truncation vs head+tail vs sliding windows (pooled logits), at several lengths.

    python bench/long_texts.py                                       # defaults: 2,000 train / 2,000 test rows
    python bench/long_texts.py --train-rows 800 --eval-rows 500      # a small CPU run
    python bench/long_texts.py --eval-rows 25000 --train-each        # the full test set (a GPU machine)
    python bench/long_texts.py --train-length 128 --train-rows 400 --eval-rows 200   # one model: a busy CPU

Per max_length, by default ONE model is fine-tuned (head truncation, 1 epoch on a seeded slice of
IMDb train) and the same weights are evaluated three ways on a seeded slice of the IMDb test set:
`head` (keep_head 1), `head+tail` (keep_head 0.25) and `windows` (half-overlapping windows, logits
pooled per review). That isolates how a long text is read at inference. `--train-each` instead
fine-tunes one model per strategy, cut the same way in training (windows: every window is an example,
at most model.max_windows per review) - three times the training cost. Metrics count reviews, never
windows. `--train-length N` fine-tunes a single model at N tokens and evaluates it at every length
(the cheapest comparison of inference strategies). Writes bench/out/long_texts.json (or --out) and prints
a markdown table. Runs unchanged on CUDA
(train.device auto; add --precision bf16 there).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import common
import numpy as np

from bertfit.config import DataConfig, load_config
from bertfit.metrics import classification_metrics

STRATEGIES = ("head", "head+tail", "windows")


def strategy_settings(strategy: str, max_length: int, pooling: str) -> dict:
    """The model.* fields (and bertfit.json keys) that make a strategy."""
    if strategy == "head":
        return {"keep_head": 1.0, "window_stride": 0}
    if strategy == "head+tail":
        return {"keep_head": 0.25, "window_stride": 0}
    return {"keep_head": 1.0, "window_stride": (max_length - 2) // 2, "window_pooling": pooling}


def fine_tune(args: argparse.Namespace, max_length: int, settings: dict, out_dir: Path) -> tuple[Path, float]:
    """1 epoch on a seeded slice of IMDb train; validation and test inside train() are capped small (they only log)."""
    overrides = {"data.train": "imdb", "data.max_train_rows": args.train_rows, "data.max_eval_rows": args.validation_rows,
                 "model.max_length": max_length, "model.max_windows": args.max_windows, "train.epochs": 1,
                 "train.batch_size": args.batch_size, "train.lr": args.lr, "train.precision": args.precision,
                 "train.seed": args.seed, "train.tensorboard": False, "train.progress": False,
                 "train.checkpoint_every_steps": 0, "output_dir": str(out_dir),
                 "name": f"len{max_length}-{settings['keep_head']}-{settings['window_stride']}",
                 **{f"model.{key}": value for key, value in settings.items()}}
    from bertfit.training.recipe import train

    config = load_config(None, [item for key, value in overrides.items() for item in (f"--{key}", str(value))])
    result = train(config)
    return result.run_dir, result.train_seconds  # the training loop only: no data loading or evaluation


def evaluate_strategy(run_dir: Path, max_length: int, settings: dict, texts: list[str], labels: np.ndarray,
                      names: tuple[str, ...], args: argparse.Namespace) -> dict:
    """The run's weights, reading the texts as `settings` say (pooling windows per review)."""
    from bertfit import artifacts
    from bertfit.infer.engine import InferenceContext, split_logits, tokenize_like_training

    loaded = artifacts.load_model(run_dir)
    context = InferenceContext.create(loaded.tokenizer.pad_token_id, args.eval_batch_size, "auto", args.precision)
    # with --train-length the model was trained shorter
    meta = dataclasses.replace(loaded.meta, max_length=max_length, **settings)
    started = time.perf_counter()
    split = tokenize_like_training(meta, loaded.tokenizer, texts, labels)
    logits = split_logits(loaded.model.to(context.device), split, context)
    seconds = time.perf_counter() - started
    metrics = classification_metrics(logits, labels, names)
    return {"accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"], "eval_seconds": round(seconds, 2),
            "texts_per_second": round(len(texts) / seconds, 2), "model_rows": len(split),
            "windows_per_text": round(len(split) / len(texts), 3)}


def run(args: argparse.Namespace) -> list[dict]:
    from bertfit.data.splits import load_dataset

    dataset = load_dataset(DataConfig(train="imdb", max_eval_rows=args.eval_rows), args.seed)
    test = dataset.splits["test"]
    labels, names = np.asarray(test.labels), dataset.labels.names
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        shared = None
        for max_length in args.max_lengths:
            if args.train_length is None:
                shared = None  # one model per length (or per strategy with --train-each)
            for strategy in args.strategies:
                settings = strategy_settings(strategy, max_length, args.pooling)
                if shared is None or args.train_each:
                    trained_as = settings if args.train_each else strategy_settings("head", max_length, args.pooling)
                    run_dir, train_seconds = fine_tune(args, args.train_length or max_length, trained_as, Path(scratch))
                    shared = (run_dir, train_seconds, trained_as)
                run_dir, train_seconds, trained_as = shared
                row = {"max_length": max_length, "strategy": strategy,
                       "trained_as": f"{_describe(trained_as)} @ {args.train_length or max_length}",
                       "train_seconds": round(train_seconds, 1),
                       **evaluate_strategy(run_dir, max_length, settings, test.texts, labels, names, args)}
                print(json.dumps(row), flush=True)
                results.append(row)
    return results


def _describe(settings: dict) -> str:
    if settings["window_stride"]:
        return f"windows stride {settings['window_stride']}"
    return "head" if settings["keep_head"] >= 1 else f"head+tail {settings['keep_head']}"


def table(results: list[dict]) -> str:
    lines = ["| max_length | strategy | trained as | accuracy | macro F1 | windows/text | train s | eval s | texts/s |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['max_length']} | {r['strategy']} | {r['trained_as']} | {r['accuracy']:.4f} | "
                     f"{r['f1_macro']:.4f} | {r['windows_per_text']:.2f} | {r['train_seconds']:.0f} | "
                     f"{r['eval_seconds']:.1f} | {r['texts_per_second']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-lengths", type=lambda v: [int(x) for x in v.split(",")], default=[128, 256, 512])
    parser.add_argument("--strategies", type=lambda v: v.split(","), default=list(STRATEGIES))
    parser.add_argument("--train-rows", type=int, default=2000, help="seeded slice of IMDb train to fine-tune on")
    parser.add_argument("--eval-rows", type=int, default=2000, help="seeded slice of IMDb test (25000: all of it)")
    parser.add_argument("--validation-rows", type=int, default=100,
                        help="held-out train rows scored during training (1 epoch: it only logs)")
    parser.add_argument("--train-each", action="store_true", help="fine-tune one model per strategy, cut alike")
    parser.add_argument("--train-length", type=int, help="fine-tune one model (head, at this many tokens) for all lengths")
    parser.add_argument("--pooling", default="mean", choices=["mean", "max"])
    parser.add_argument("--max-windows", type=int, default=8, help="windows per training review (--train-each)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--precision", default="auto", help="auto: fp32 on CPU, bf16 on a GPU")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=common.OUT / "long_texts.json", help="where the JSON summary goes")
    args = parser.parse_args()
    if args.train_each and args.train_length:
        parser.error("--train-each and --train-length exclude each other: pick one training plan")
    import torch

    record = common.provenance()
    results = run(args)
    summary = {**record, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
               "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "train_rows": args.train_rows, "eval_rows": args.eval_rows, "train_length": args.train_length,
               "train_each": args.train_each, "results": results}
    common.write_json(args.out, summary)
    print(table(results))


if __name__ == "__main__":
    main()
