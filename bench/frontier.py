"""The accuracy / speed frontier on AG News: gold-label models, an MPNet teacher, and students distilled from it.

    python bench/frontier.py                       # the full plan (about 3 hours on 2 CPU cores)
    python bench/frontier.py --teacher-epochs 1 --epochs 2 --unlabelled-rows 500 --test-rows 2000 \
        --speed-texts 256 --rounds 3 --skip "minilm-l3 gold"   # the scale docs/benchmarks.md reports: 84 minutes
    python bench/frontier.py --reuse --test-rows 7600 ...       # the same models scored on all 7,600 test rows

--reuse keeps every model already trained and exported under --work; one tested on other test rows than this
invocation's is scored again on them, so every accuracy in the table is on the same rows.

Models (all through bertfit's API, as `bertfit train` / `bertfit distill` / `bertfit export` run them):
  minilm-l6 gold    the embedded MiniLM-L6 on the gold labels of the AG News train subset (5,000 rows)
  mpnet-base gold   all-mpnet-base-v2 on the gold labels: the teacher (--teacher-rows of the subset)
  minilm-l6 distil  MiniLM-L6 distilled from the teacher (train subset + unlabelled AG News descriptions)
  minilm-l3 distil  MiniLM-L3 distilled from the teacher (same texts)
  minilm-l3 gold    MiniLM-L3 on the gold labels alone (what distillation adds)
Test: the official 7,600 test rows (--test-rows: a seeded sample of them). Unlabelled texts: the alps AG
News train descriptions that are in neither the test set nor the train subset. Speed: Predictor texts/s
(tokenising included) with PyTorch and with the int8 ONNX export, rounds interleaved over every model and
backend so machine load hits all alike; int8 accuracy on the same test rows. Writes bench/out/frontier.json
and bench/out/frontier.png, prints a Markdown table with each target met or not.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import time
from pathlib import Path

import common

OUT = common.OUT
LABELS = ("World", "Sports", "Business", "Sci/Tech")
TARGETS = {"minilm-l6 gold": "accuracy >= 92.5", "mpnet-base gold": "accuracy >= 93.5",
           "minilm-l6 distilled": "within 0.5 points of the teacher",
           "minilm-l3 distilled": "accuracy >= 91.5 and >= 1.8x the texts/s of minilm-l6 gold"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=None, help="rows of the train subset for the students "
                                                                      "(default: all 5,000; 10%% are held out for validation)")
    parser.add_argument("--teacher-rows", type=int, default=None, help="rows for the MPNet teacher (default: all)")
    parser.add_argument("--test-rows", type=int, default=7600, help="seeded sample of the official test rows")
    parser.add_argument("--unlabelled-rows", type=int, default=None, help="unlabelled texts for distillation (default: all)")
    parser.add_argument("--validation-fraction", type=float, default=0.1, help="of the train subset, held out")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--speed-texts", type=int, default=1024, help="test texts per speed round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds")
    parser.add_argument("--teacher-freeze", default="none", help="model.freeze of the teacher (encoder: a frozen MPNet "
                                                                 "whose head trains on its cached vectors, far cheaper)")
    parser.add_argument("--reuse", action="store_true", help="keep models already trained and exported under --work")
    parser.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (0: all cores)")
    parser.add_argument("--skip", nargs="*", default=[], help="models to leave out, e.g. 'minilm-l3 gold'")
    parser.add_argument("--find-links", type=Path, help="install registry models from this folder of wheels")
    parser.add_argument("--work", type=Path, default=OUT / "frontier", help="runs and data files")
    return parser.parse_args()


def write_data(work: Path, test_rows: int, unlabelled_rows: int | None) -> tuple[Path, Path, list[str], list[int]]:
    """The test sample and the unlabelled texts as CSV files; the test texts and gold ids for the speed rounds."""
    from bertfit.data.presets import data_dir

    root = data_dir() / "ag_news"
    every_test = list(zip(*common.ag_news_test()))
    test = random.Random(0).sample(every_test, min(test_rows, len(every_test)))
    with open(root / "subsets" / "lst11111" / "train_subset.csv", newline="", encoding="utf-8") as file:
        train_blob = "\n".join(row[0] for row in csv.reader(file))
    test_blob = "\n".join(text for text, _ in every_test)
    with open(root / "subsets" / "alps" / "dev_from_train.tsv", encoding="utf-8") as file:
        descriptions = dict.fromkeys(line.split("\t")[0].strip() for line in file)
    # Texts the students may see unlabelled: in neither the test set nor (as a description) the train subset.
    unlabelled = [d for d in descriptions if len(d) > 20 and d not in test_blob and d not in train_blob]
    unlabelled = unlabelled[:unlabelled_rows]
    work.mkdir(parents=True, exist_ok=True)
    test_csv = common.write_csv(work / "test.csv", [text for text, _ in test], [LABELS[label] for _, label in test])
    unlabelled_csv = work / "unlabelled.csv"
    with open(unlabelled_csv, "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([("text",), *((text,) for text in unlabelled)])
    return test_csv, unlabelled_csv, [t for t, _ in test], [label for _, label in test]


def plans(args: argparse.Namespace, test_csv: Path, unlabelled_csv: Path, work: Path) -> list[dict]:
    """(name, model.name, teacher or None, field flags) for every model, in training order."""
    shared = ["--data.train", "ag_news", "--data.test", str(test_csv), "--model.max_length", str(args.max_length),
              "--data.validation_fraction", str(args.validation_fraction),
              "--output_dir", str(work / "runs"), "--train.progress", "false", "--train.tensorboard", "false",
              "--train.batch_size", "16", "--train.metric", "accuracy"]
    rows = lambda n: ["--data.max_train_rows", str(n)] if n else []  # noqa: E731
    small = [*shared, *rows(args.train_rows), "--train.lr", "1e-4", "--train.epochs", str(args.epochs)]
    teacher = [*shared, *rows(args.teacher_rows), "--train.lr", "3e-5" if args.teacher_freeze == "none" else "1e-2",
               "--train.epochs", str(args.teacher_epochs), "--model.freeze", args.teacher_freeze]
    distil = [*rows(args.train_rows), "--train.lr", "1e-4", "--train.epochs", str(args.epochs),
              "--distill.unlabelled", str(unlabelled_csv)]
    return [
        {"name": "minilm-l6 gold", "model": "minilm-l6", "teacher": None, "flags": small},
        {"name": "mpnet-base gold", "model": "mpnet-base", "teacher": None, "flags": teacher},
        {"name": "minilm-l6 distilled", "model": "minilm-l6", "teacher": "mpnet-base gold", "flags": distil},
        {"name": "minilm-l3 distilled", "model": "minilm-l3", "teacher": "mpnet-base gold", "flags": distil},
        {"name": "minilm-l3 gold", "model": "minilm-l3", "teacher": None, "flags": small},
    ]


def train_one(plan: dict, run_dirs: dict[str, Path], work: Path, reuse: bool, test: tuple[list[str], list[int]]) -> dict:
    """Train (or distil) and export one model; with `reuse`, a model already trained and exported is kept (and
    scored again on this invocation's test rows if it was tested on others)."""
    from bertfit.config import load_config
    from bertfit.deploy.export import export_run
    from bertfit.training.distill import distill_config
    from bertfit.training.recipe import train

    name = plan["name"].replace(" ", "-")
    run_dir = work / "runs" / name
    started = time.perf_counter()
    if not (reuse and (run_dir / "export" / "export.json").is_file()):
        flags = [*plan["flags"], "--name", name]
        config = load_config(None, ["--model.name", plan["model"], *flags]) if plan["teacher"] is None else \
            distill_config(run_dirs[plan["teacher"]], plan["model"], flags)
        run_dir = train(config, overwrite=True).run_dir
        export_run(run_dir, int8=True, max_rows=32)
    run_dirs[plan["name"]] = run_dir
    results = json.loads((run_dir / "results.json").read_text())
    export = json.loads((run_dir / "export" / "export.json").read_text())
    accuracy, f1 = 100 * results["test"]["accuracy"], results["test"]["f1_macro"]
    if results["rows"]["test"] != len(test[0]):
        accuracy, f1 = score(run_dir, *test)
    rows = {**results["rows"], "test": len(test[0])}  # the rows scored here
    return {"run": str(run_dir), "rows": rows, "train_seconds": results["train_seconds"],
            "train_samples_per_second": results["train_samples_per_second"],
            "wall_seconds_with_export": round(time.perf_counter() - started, 1), "export_seconds": export["export_seconds"],
            "test_accuracy": round(accuracy, 2), "test_f1_macro": round(f1, 4)}


def score(run_dir: Path, texts: list[str], gold: list[int]) -> tuple[float, float]:
    """PyTorch test accuracy (%) and macro-F1 of a run on `texts`."""
    import numpy as np

    from bertfit.infer.predictor import Predictor
    from bertfit.metrics import classification_metrics

    logits = Predictor(run_dir, backend="torch").logits(texts)
    metrics = classification_metrics(logits, np.asarray(gold), LABELS)
    return 100 * metrics["accuracy"], metrics["f1_macro"]


def measure_speed(run_dirs: dict[str, Path], texts: list[str], gold: list[int], args: argparse.Namespace) -> dict[str, dict]:
    """Texts/s of PyTorch and int8 ONNX per model (interleaved rounds, medians), and int8 test accuracy."""
    import numpy as np

    from bertfit.infer.predictor import Predictor

    predictors = {(name, backend): Predictor(run, backend=backend, batch_size=32, threads=args.threads or None)
                  for name, run in run_dirs.items() for backend in ("torch", "onnx-int8")}
    sample = texts[:args.speed_texts]
    for predictor in predictors.values():
        predictor.predict_proba(sample[:32])  # warm-up
    speeds: dict[tuple[str, str], list[float]] = {key: [] for key in predictors}
    for _ in range(args.rounds):
        for key, predictor in predictors.items():
            started = time.perf_counter()
            predictor.predict_proba(sample)
            speeds[key].append(len(sample) / (time.perf_counter() - started))
    out = {}
    for name in run_dirs:
        probabilities = predictors[(name, "onnx-int8")].predict_proba(texts)
        out[name] = {"torch_texts_per_second": round(statistics.median(speeds[(name, "torch")]), 1),
                     "int8_texts_per_second": round(statistics.median(speeds[(name, "onnx-int8")]), 1),
                     "torch_rounds": [round(s, 1) for s in speeds[(name, "torch")]],
                     "int8_rounds": [round(s, 1) for s in speeds[(name, "onnx-int8")]],
                     "int8_test_accuracy": round(100 * float((np.argmax(probabilities, -1) == np.asarray(gold)).mean()), 2)}
    return out


def verdicts(models: dict[str, dict]) -> dict[str, str]:
    """Each target, met or not, from the measured figures."""
    def accuracy(name: str) -> float | None:
        return models.get(name, {}).get("test_accuracy")

    out = {}
    if accuracy("minilm-l6 gold") is not None:
        out["minilm-l6 gold"] = "met" if accuracy("minilm-l6 gold") >= 92.5 else "not met"
    if accuracy("mpnet-base gold") is not None:
        out["mpnet-base gold"] = "met" if accuracy("mpnet-base gold") >= 93.5 else "not met"
    if accuracy("minilm-l6 distilled") is not None and accuracy("mpnet-base gold") is not None:
        gap = accuracy("mpnet-base gold") - accuracy("minilm-l6 distilled")
        out["minilm-l6 distilled"] = "met" if gap <= 0.5 else f"not met ({gap:.2f} points below the teacher)"
    l3, l6 = models.get("minilm-l3 distilled"), models.get("minilm-l6 gold")
    if l3 and l6:
        ratios = [l3[k] / l6[k] for k in ("torch_texts_per_second", "int8_texts_per_second")]
        ok = l3["test_accuracy"] >= 91.5 and min(ratios) >= 1.8
        out["minilm-l3 distilled"] = ("met" if ok else "not met") + \
            f" (accuracy {l3['test_accuracy']}, speed {ratios[0]:.2f}x PyTorch, {ratios[1]:.2f}x int8)"
    return out


def plot(models: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    for index, (name, m) in enumerate(models.items()):
        speeds = [m["torch_texts_per_second"], m["int8_texts_per_second"]]
        accuracies = [m["test_accuracy"], m["int8_test_accuracy"]]
        axis.plot(speeds, accuracies, color=f"C{index}", linewidth=0.8, alpha=0.5)  # one model's two backends
        for speed, accuracy, marker, backend in zip(speeds, accuracies, "os", ("PyTorch", "int8 ONNX")):
            axis.scatter(speed, accuracy, marker=marker, s=50, color=f"C{index}", label=f"{name} ({backend})")
        axis.annotate(name, (speeds[0], accuracies[0]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlabel("texts/s on this CPU (log scale; circles PyTorch, squares int8 ONNX)")
    axis.set_ylabel("AG News test accuracy (%)")
    axis.set_title("bertfit: accuracy vs speed (bench/frontier.py)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()

    from bertfit.registry.install import install

    common.limit_threads(args.threads)
    for name in ("minilm-l6", "mpnet-base", "minilm-l3"):
        install(name, find_links=args.find_links)
    test_csv, unlabelled_csv, texts, gold = write_data(args.work, args.test_rows, args.unlabelled_rows)
    record, started = common.provenance(), time.perf_counter()
    run_dirs: dict[str, Path] = {}
    models = {}
    for plan in plans(args, test_csv, unlabelled_csv, args.work):
        if plan["name"] not in args.skip:
            models[plan["name"]] = train_one(plan, run_dirs, args.work, args.reuse, (texts, gold))
            print(f"{plan['name']}: {models[plan['name']]}", flush=True)
    for name, speed in measure_speed(run_dirs, texts, gold, args).items():
        models[name] |= speed
    summary = {**record, "load_average_before": record["cpu"]["load_average"],
               "load_average_after": common.load_average(), "wall_seconds": round(time.perf_counter() - started),
               "test_rows": len(texts), "unlabelled_rows": sum(1 for _ in open(unlabelled_csv)) - 1,
               "settings": {k: str(v) for k, v in vars(args).items()}, "models": models, "targets": TARGETS,
               "verdicts": verdicts(models)}
    common.write_json(OUT / "frontier.json", summary)
    plot(models, OUT / "frontier.png")
    print(markdown(summary))


def markdown(summary: dict) -> str:
    """The frontier table as docs/benchmarks.md shows it."""
    header = "| model | train rows | train s | test acc % | int8 acc % | PyTorch texts/s | int8 texts/s | target |"
    rows = [f"| {name} | {m['rows']['train']} | {m['train_seconds']} | {m['test_accuracy']} | {m['int8_test_accuracy']} | "
            f"{m['torch_texts_per_second']} | {m['int8_texts_per_second']} | {summary['verdicts'].get(name, '-')} |"
            for name, m in summary["models"].items()]
    load = f"load average {summary['load_average_before']} before, {summary['load_average_after']} after"
    return "\n".join([header, "|---|---|---|---|---|---|---|---|", *rows, "", f"{load}; wall {summary['wall_seconds']} s"])

if __name__ == "__main__":
    main()
