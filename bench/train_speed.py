"""Training speed, side by side: bertfit vs Hugging Face Trainer, same model, data and hyper-parameters.

    python bench/train_speed.py                                   # CPU: embedded MiniLM-L6, AG News, 1 epoch
    python bench/train_speed.py --model bert-base-random --rows 14000 --batch-size 128 --precision bf16 \
        --eval-rows 1000 --variants bertfit,trainer-maxlen,trainer-dynamic,bertfit-compile   # a GPU (gpu_check.sh)

Variants: `bertfit`, `trainer-maxlen` (padding="max_length", as in most notebooks),
`trainer-dynamic` (DataCollatorWithPadding) and `bertfit-compile` (train.compile; its train time
includes compiling). Each runs in its own subprocess so peak memory is its own; each writes
bench/out/train_<variant>.json, and the parent writes bench/out/train_speed.json (after every
variant, so a run stopped by --max-seconds or a kill keeps what finished) with ratios plus a markdown
table on stdout. Accuracy is on the official 7,600-row AG News test set (or its first --eval-rows).

On a GPU each variant also reports model FLOPs utilisation on real tokens: training FLOPs
6 x N x real tokens (N: the encoder layers' and head's weights; embeddings are lookups) plus the
attention term 12 x layers x hidden x length^2 per text, over the train time and the GPU's dense
peak (--peak-tflops, default by device name: H100/H200 SXM 989 bf16). Padding is never credited.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import common

OUT = common.OUT
VARIANTS = ("bertfit", "trainer-maxlen", "trainer-dynamic")  # the default set; bertfit-compile on request
# Dense bf16 tensor-core peaks; looked up by substring of the device name, first match wins (PCIe first).
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded, bert-base-random, or a checkpoint folder")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                        help="both sides: bertfit train.precision; Trainer bf16=True (with use_cpu=True without a GPU); "
                             "auto: bertfit's own choice (runtime.device.choose_precision), Trainer's default (fp32)")
    parser.add_argument("--compile", action="store_true", help="bertfit side only: train.compile true")
    parser.add_argument("--eval-rows", type=int, help="test rows both sides score (default: all 7,600; small for smoke runs)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense peak for --precision (default: by device name)")
    parser.add_argument("--max-seconds", type=float, help="stop starting (and stop) variants once this much time has passed")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    if args.only:
        common.write_json(OUT / f"train_{args.only}.json", run_variant(args.only, args))
        return
    results, stopped, started = {}, {}, time.monotonic()
    for variant in args.variants.split(","):
        left = None if args.max_seconds is None else args.max_seconds - (time.monotonic() - started)
        outcome = run_child(variant, left) if left is None or left >= 10 else "not started: --max-seconds reached"
        (results if isinstance(outcome, dict) else stopped)[variant] = outcome
        write_summary(results, stopped)
    print(table(results, ratios(results)))


def run_child(variant: str, seconds: float | None) -> dict | str:
    """One variant in its own process: its result, or why there is none."""
    (OUT / f"train_{variant}.json").unlink(missing_ok=True)
    try:
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", variant], check=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return "stopped: --max-seconds reached"
    except subprocess.CalledProcessError as error:
        return f"failed: exit code {error.returncode}"
    return json.loads((OUT / f"train_{variant}.json").read_text())


def write_summary(results: dict, stopped: dict) -> None:
    common.write_json(OUT / "train_speed.json", {**common.provenance(), **accelerator(), "results": results,
                                                 "not_measured": stopped, "ratios": ratios(results)})


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    import torch

    torch.manual_seed(0)
    model_path = model_folder(args.model)
    train_split, test_split, names = load_data(args.rows, args.eval_rows)
    started = time.perf_counter()
    if variant.startswith("bertfit"):
        result = run_bertfit(model_path, args, compile=args.compile or variant == "bertfit-compile")
    else:
        result = run_trainer(model_path, train_split, test_split, len(names), args, dynamic=variant == "trainer-dynamic")
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    lengths = real_lengths(train_split.texts, args.max_length, model_path)
    result["tokens_per_second"] = round(int(lengths.sum()) * args.epochs / result["train_seconds"], 1)  # real tokens
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if torch.cuda.is_available():
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        # MFU against the bf16 peak means something for bf16 runs only (fp32 runs would look 10x worse).
        peak = args.peak_tflops or peak_tflops(torch.cuda.get_device_name())
        if args.precision == "bf16" and peak:
            flops = training_flops(model_path, lengths) * args.epochs
            result |= {"mfu": round(flops / result["train_seconds"] / (peak * 1e12), 4), "peak_tflops": peak,
                       "model_tflops_per_second": round(flops / result["train_seconds"] / 1e12, 1)}
    return {"variant": variant, **result}


def run_bertfit(model_path: str, args: argparse.Namespace, compile: bool) -> dict:
    from bertfit.config import load_config
    from bertfit.training.recipe import train

    with tempfile.TemporaryDirectory() as tmp:  # a fresh token cache: tokenising is part of the job
        config = load_config(None, [
            "--name", "bertfit-run", "--output_dir", str(OUT), "--cache_dir", f"{tmp}/cache", "--model.name", model_path,
            "--model.max_length", str(args.max_length), "--data.train", "ag_news", "--data.max_train_rows", str(args.rows),
            "--train.method", "standard",  # what Trainer does, at any row count
            "--train.epochs", str(args.epochs), "--train.batch_size", str(args.batch_size), "--train.lr", str(args.lr),
            "--train.precision", args.precision, "--train.progress", "false", "--train.tensorboard", "false",
            "--train.checkpoint_every_steps", "0", "--train.compile", str(compile).lower(),
            *(["--data.max_eval_rows", str(args.eval_rows)] if args.eval_rows else [])])
        result = train(config, overwrite=True)  # kept in bench/out for bench/infer_speed.py
    return {"train_seconds": round(result.train_seconds, 2), "samples_per_second": round(result.samples_per_second, 2),
            "test_accuracy": round(result.test["accuracy"], 4)}


def run_trainer(model_path: str, train_split, test_split, num_labels: int, args: argparse.Namespace, dynamic: bool) -> dict:
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def encode(split) -> list[dict]:  # a list of feature dicts is a dataset to Trainer (no `datasets` needed)
        encoded = tokenizer(split.texts, truncation=True, max_length=args.max_length,
                            padding=False if dynamic else "max_length")
        return [{**{key: values[i] for key, values in encoded.items()}, "label": int(label)}
                for i, label in enumerate(split.labels)]
    train_set, test_set = encode(train_split), encode(test_split)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=num_labels)
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=128,
            num_train_epochs=args.epochs, learning_rate=args.lr, weight_decay=0.01, warmup_steps=0.06,
            lr_scheduler_type="linear", eval_strategy="no", save_strategy="no", logging_strategy="no",
            report_to="none", seed=42, bf16=args.precision == "bf16", disable_tqdm=True, dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available())  # Trainer takes the GPU by itself when there is one
        collator = DataCollatorWithPadding(tokenizer) if dynamic else default_data_collator
        trainer = Trainer(model=model, args=training_args, train_dataset=train_set, data_collator=collator)
        metrics = trainer.train().metrics
        predictions = trainer.predict(test_set)
        if dynamic:  # kept for bench/infer_speed.py's pipeline side
            trainer.save_model(str(OUT / "trainer-model"))
            tokenizer.save_pretrained(str(OUT / "trainer-model"))
    accuracy = float((np.argmax(predictions.predictions, -1) == np.asarray(test_split.labels)).mean())
    seconds = metrics["train_runtime"]
    return {"train_seconds": round(seconds, 2), "samples_per_second": round(len(train_split) * args.epochs / seconds, 2),
            "test_accuracy": round(accuracy, 4)}


def load_data(rows: int, eval_rows: int | None = None):
    """The same rows bertfit uses for `--data.train ag_news --data.max_train_rows N [--data.max_eval_rows M]` (seed 42)."""
    from bertfit.config import DataConfig
    from bertfit.data.splits import load_dataset

    dataset = load_dataset(DataConfig(train="ag_news", max_train_rows=rows, max_eval_rows=eval_rows), seed=42)
    return dataset.splits["train"], dataset.splits["test"], dataset.labels.names


def real_lengths(texts: list[str], max_length: int, model_path: str):
    """Tokens per training row after truncation: the work both sides must do; padding is waste."""
    import numpy as np
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]])


def model_folder(name: str) -> str:
    """'bert-base-random': bert-base-uncased's architecture with random weights (speed does not depend on weights)."""
    from bertfit.model import resolve_model_name

    if name != "bert-base-random":
        return resolve_model_name(name)
    folder = OUT / "bert-base-random"
    if not (folder / "config.json").is_file():
        from transformers import AutoTokenizer, BertConfig, BertModel
        BertModel(BertConfig()).save_pretrained(folder)
        AutoTokenizer.from_pretrained(resolve_model_name("embedded")).save_pretrained(folder)
    return str(folder)


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)


def training_flops(model_path: str, lengths, num_labels: int = 4) -> float:
    """One epoch's training FLOPs on the real tokens of texts of `lengths` (forward + backward = 3 x forward).

    Weights: 6 x N per token, N = per layer 4h^2 (attention projections) + 2h x intermediate (MLP), plus
    the head. Attention: scores and weighted values are 4 x h x length^2 per layer forward, 12 x in training.
    """
    import numpy as np
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    hidden, layers = config.hidden_size, config.num_hidden_layers
    weights = layers * (4 * hidden ** 2 + 2 * hidden * config.intermediate_size) + hidden * num_labels
    lengths = np.asarray(lengths, dtype=np.float64)
    return float(6 * weights * lengths.sum() + 12 * layers * hidden * (lengths ** 2).sum())


def accelerator() -> dict:
    """The GPU a run would use (or none) and torch's version: the CPU is cpu_features()'s."""
    import torch

    return {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "torch": torch.__version__}


def ratios(results: dict) -> dict:
    return {f"{ours}_vs_{k}": round(results[ours]["samples_per_second"] / v["samples_per_second"], 2)
            for ours in ("bertfit", "bertfit-compile") if ours in results
            for k, v in results.items() if k.startswith("trainer")}


def table(results: dict, speedups: dict) -> str:
    gpu = any("peak_gpu_mib" in r for r in results.values())
    extra = " peak GPU MiB | MFU |" if gpu else ""
    lines = ["| variant | samples/s | tokens/s | train s | test accuracy | peak RSS MiB |" + extra,
             "|---|---|---|---|---|---|" + ("---|---|" if gpu else "")]
    for name, r in results.items():
        lines.append(f"| {name} | {r['samples_per_second']} | {r['tokens_per_second']} | {r['train_seconds']} | "
                     f"{r['test_accuracy']:.4f} | {r['peak_rss_mib']} |"
                     + (f" {r.get('peak_gpu_mib')} | {r.get('mfu')} |" if gpu else ""))
    return "\n".join(lines + [""] + [f"{k}: {v}x" for k, v in speedups.items()])


if __name__ == "__main__":
    main()
