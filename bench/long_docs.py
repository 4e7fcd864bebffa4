"""Long documents (IMDb): bertfit with no settings (train.stack auto) vs its TF-IDF baseline vs the stacked ensemble.

    python bench/long_docs.py --threads 1                    # 2,000 train rows (seeded sample), all 25,000 test reviews
    python bench/long_docs.py --threads 1 --test-rows 2000   # a seeded sample of the test split: a busy CPU
    python bench/long_docs.py --seeds 0 1 2                  # repeats with other training samples
    python bench/long_docs.py --keep runs/imdb --test-rows 5000        # keeps the trained runs, then:
    python bench/long_docs.py --keep runs/imdb --reuse --out bench/out/long_docs_25000.json  # scores them again

Per seed, 2,000 reviews are drawn (seeded) from IMDb train and given to bertfit as a CSV with nothing
else: it holds out its own validation share and chooses its settings (at 128 tokens most reviews are
longer, so it reads them in sliding windows), and `train.stack auto` builds the stack only when TF-IDF
beats the model on validation. The test reviews (all 25,000, or `--test-rows` drawn with the seed) are
read once by the model; every system is scored on the same rows:

    bertfit defaults     what `bertfit predict` / `serve` give for the run: the stack if auto built it, else the model
    model alone          the fine-tuned model's probabilities (Predictor.model_proba)
    tf-idf baseline      TF-IDF + logistic regression fitted on bertfit's own train split (the stack's TF-IDF part)
    stacked ensemble     the stack; where auto did not build it, `bertfit stack` adds it (row marked "added")

Accuracy, macro-F1 and seconds of training: for bertfit the whole `train` call (tokenising, the loop, the
end-of-training TF-IDF and stack; the loop alone is in the JSON), for TF-IDF its fit, for an added stack
`bertfit stack`'s time on top. Device: bertfit's auto (a GPU when there is one).
Writes bench/out/long_docs.json (or --out) with the machine and load, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import common
import numpy as np

from bertfit.config import DataConfig
from bertfit.data.read import read_split
from bertfit.metrics import probability_metrics

SYSTEMS = ("bertfit defaults", "model alone", "tf-idf baseline", "stacked ensemble")


def imdb(split: str) -> tuple[list[str], list[str]]:
    part = read_split("imdb", split, DataConfig(train="imdb"))
    names = part.label_names or ("negative", "positive")
    return part.texts, [names[int(label)] for label in part.raw_labels]


def sample(rows: int, count: int | None, seed: int) -> np.ndarray:
    """`count` row indices drawn with `seed` (all rows, in order, when count is None or covers them)."""
    if count is None or count >= rows:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, count, replace=False))


def train_bertfit(texts: list[str], labels: list[str], seed: int, folder: Path) -> tuple[Path, dict]:
    from bertfit import artifacts

    path = common.write_csv(folder / f"train-{seed}.csv", texts, labels)
    started = time.perf_counter()
    result = common.train_on_rows(path, folder, f"run-{seed}", seed)
    wall = time.perf_counter() - started
    saved = artifacts.read_run_config(result.run_dir)
    return result.run_dir, {"train_seconds": round(result.train_seconds, 1), "wall_seconds": round(wall, 1),
                            "steps": result.steps, "stack": result.stack, "window_stride": saved.model.window_stride,
                            "epochs": saved.train.epochs, "lr": saved.train.lr, "method": saved.train.method}


def score_systems(run_dir: Path, test: tuple[list[str], list[str]], chunk: int, auto_built: bool) -> dict:
    """Every system's scores from one pass of the model over the test texts (in chunks); `auto_built`: the
    stack is what bertfit with no settings serves."""
    from bertfit import artifacts
    from bertfit.infer.predictor import Predictor
    from bertfit.infer.stack import model_probabilities, open_stack

    texts, labels = test
    predictor = Predictor(run_dir, backend="torch", batch_size=32)
    names = predictor.labels.names
    truth = np.array([names.index(label) for label in labels])
    logits = np.concatenate([predictor.logits(texts[i:i + chunk]) for i in range(0, len(texts), chunk)])
    meta = artifacts.read_model_meta(run_dir)
    stack = open_stack(artifacts.model_folder(run_dir), meta)
    parts = stack.parts(texts, logits)
    served = parts["stack"] if auto_built else model_probabilities(logits, meta.temperature, False)
    probabilities = {"bertfit defaults": served, "model alone": parts["model"], "tf-idf baseline": parts["tfidf"],
                     "stacked ensemble": parts["stack"]}
    out = {}
    for system, values in probabilities.items():
        metrics = probability_metrics(values, truth, names)
        out[system] = {"accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"]}
    return out


def train_seed(seed: int, args: argparse.Namespace, folder: Path) -> dict:
    """Trains bertfit on the seed's sample of IMDb train (adding the stack where auto left it out): what it measured."""
    from bertfit.training.stack import build_stack

    train_texts, train_labels = imdb("train")
    rows = sample(len(train_texts), args.train_rows, seed)
    run_dir, training = train_bertfit([train_texts[i] for i in rows], [train_labels[i] for i in rows], seed, folder)
    stack_seconds = None
    if not (training["stack"] or {}).get("built"):  # auto kept the model alone: add the stack to compare it too
        started = time.perf_counter()
        build_stack(run_dir)
        stack_seconds = round(time.perf_counter() - started, 1)
    return {"run_dir": str(run_dir), "train_rows": len(rows), **training, "stack_command_seconds": stack_seconds}


def run_seed(seed: int, args: argparse.Namespace, folder: Path) -> dict:
    """Scores the seed's run: trained now, or with --reuse the one --keep holds (its trained-SEED.json says what
    training measured)."""
    from bertfit import artifacts

    trained = folder / f"trained-{seed}.json"
    if not args.reuse:
        trained.write_text(json.dumps(train_seed(seed, args, folder)))
    training = json.loads(trained.read_text())
    run_dir, added = Path(training.pop("run_dir")), training["stack_command_seconds"] is not None
    test_texts, test_labels = imdb("test")
    chosen = sample(len(test_texts), args.test_rows, seed)
    started = time.perf_counter()
    test = [test_texts[i] for i in chosen], [test_labels[i] for i in chosen]
    scores = score_systems(run_dir, test, args.chunk, auto_built=not added)
    meta = artifacts.read_model_meta(run_dir)
    return {"seed": seed, "test_rows": len(chosen), **training, "reused": args.reuse,
            "stack_built_by": "bertfit stack (added)" if added else "train.stack auto", "model_weight": meta.stack.model_weight,
            "stack_validation": meta.stack.validation, "score_seconds": round(time.perf_counter() - started, 1),
            "tfidf_fit_seconds": tfidf_seconds(run_dir), "scores": scores}


def tfidf_seconds(run_dir: Path) -> float:
    """Seconds to fit the TF-IDF part on the run's own train split (what the baseline costs to train)."""
    from bertfit import artifacts
    from bertfit.data.splits import load_dataset
    from bertfit.infer.tfidf import fit_tfidf

    config = artifacts.read_run_config(run_dir)
    dataset = load_dataset(config.data, config.train.seed)
    train_split = dataset.splits["train"]
    started = time.perf_counter()
    fit_tfidf(train_split.texts, np.asarray(train_split.labels), len(dataset.labels), config.train.seed)
    return round(time.perf_counter() - started, 2)


def table(runs: list[dict]) -> str:
    lines = ["| system | test accuracy | macro-F1 | train s |", "|---|---|---|---|"]
    for system in SYSTEMS:
        accuracy = [100 * r["scores"][system]["accuracy"] for r in runs]
        f1 = [100 * r["scores"][system]["f1_macro"] for r in runs]
        seconds = [_seconds(r, system) for r in runs]
        lines.append(f"| {system} | {_mean(accuracy)} | {_mean(f1)} | {_mean(seconds, 0)} |")
    return "\n".join(lines)


def _seconds(run: dict, system: str) -> float:
    if system == "tf-idf baseline":
        return run["tfidf_fit_seconds"]
    extra = (run["stack_command_seconds"] or 0.0) if system == "stacked ensemble" else 0.0
    return run["wall_seconds"] + extra


def _mean(values: list[float], digits: int = 1) -> str:
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=2000, help="IMDb train reviews drawn per seed")
    parser.add_argument("--test-rows", type=int, help="IMDb test reviews drawn with the seed (default: all 25,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, help="CPU threads for torch and BLAS (default: all cores)")
    parser.add_argument("--chunk", type=int, default=1000, help="test reviews per model call (bounds memory)")
    parser.add_argument("--keep", type=Path, help="folder that keeps the trained runs (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="score the runs --keep holds again, without training")
    parser.add_argument("--out", type=Path, default=common.OUT / "long_docs.json")
    args = parser.parse_args()
    if args.reuse and not args.keep:
        parser.error("--reuse scores the runs kept by an earlier --keep: give that folder with --keep")
    common.limit_threads(args.threads)
    results = {**common.provenance(), "runs": []}
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            run = run_seed(seed, args, folder)
            print(json.dumps({k: v for k, v in run.items() if k != "stack_validation"}), flush=True)
            results["runs"].append(run)
            # after every seed: a cut-short run keeps its seeds
            common.write_json(args.out, {**results, "load_after": common.load_average()})
    print(table(results["runs"]))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
