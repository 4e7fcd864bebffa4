"""A teacher against its static student (`bertfit distill RUN --student static`): test accuracy and texts/s on a CPU.

    python bench/static_student.py                         # the full run: a MiniLM-L6 teacher on 5,000 AG News rows,
                                                           # every one of the 7,600 test rows, 60 s of serving each
    python bench/static_student.py --teacher runs/x        # an existing teacher run instead of training one
    python bench/static_student.py --data sst2             # a sentiment set (its preset's test split)
    python bench/static_student.py --limit 40 --teacher-rows 64 --speed-texts 64 --rounds 1 --serve-seconds 3

Accuracy: the official AG News test rows (--limit: the first N of them), PyTorch for the teacher, NumPy for the
student. Offline: Predictor texts/s (tokenising included) in batches of --batch-size, rounds interleaved over both
models so machine load hits them alike. Served: `bertfit serve` with --clients concurrent clients posting one text
a request for --serve-seconds. Writes bench/out/static_student.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import common

LABELS = ("World", "Sports", "Business", "Sci/Tech")  # ag_news_test's label ids in order


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="static_student.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ag_news", help="the preset the teacher learns and both are tested on "
                                                           "(ag_news; a sentiment set: sst2, emotion)")
    parser.add_argument("--teacher", type=Path, help="an existing teacher run on --data (default: train one)")
    parser.add_argument("--teacher-rows", type=int, default=5000, help="AG News train rows the teacher learns from")
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--static-epochs", type=int, default=5, help="distill.static_epochs")
    parser.add_argument("--limit", type=int, help="test rows scored (default: all 7,600)")
    parser.add_argument("--speed-texts", type=int, default=1000, help="test texts per offline timing round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved offline timing rounds")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per offline predict call")
    parser.add_argument("--serve-seconds", type=float, default=60.0, help="served load per model (0: skip serving)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients while serving")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, help="CPU threads per model call (default: all cores)")
    parser.add_argument("--work", type=Path, default=common.OUT / "static_student", help="where the runs are written")
    return parser.parse_args()


def _teacher(args: argparse.Namespace) -> Path:
    from bertfit.config import load_config
    from bertfit.training.recipe import train

    if args.teacher is not None:
        return args.teacher
    config = load_config(None, ["--name", f"teacher-{args.data}", "--output_dir", str(args.work), "--data.train", args.data,
                                "--data.max_train_rows", str(args.teacher_rows), "--train.epochs", str(args.teacher_epochs),
                                "--train.method", "standard", "--train.stack", "never", "--train.progress", "false",
                                "--data.max_eval_rows", "1000", "--model.name", "embedded"])
    return train(config, overwrite=True).run_dir


def _test_rows(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The test split's texts and label names: AG News's official 7,600 rows, else the preset's test split."""
    if args.data == "ag_news":
        texts, ids = common.ag_news_test(args.limit)
        return texts, [LABELS[i] for i in ids]
    dataset = common.preset(args.data)
    test = dataset.splits["test"]
    return list(test.texts[:args.limit]), [dataset.labels.names[i] for i in test.labels[:args.limit]]


def _accuracy(predictor, texts: list[str], labels: list[str]) -> float:
    names = predictor.meta.labels
    predicted = predictor.predict_proba(texts).argmax(-1)
    return sum(names[p] == label for p, label in zip(predicted, labels)) / len(labels)


def _served(run: Path, backend: str, texts: list[str], args: argparse.Namespace) -> dict:
    port = common.free_port()
    child = common.start_server(run, port, common.serve_flags(backend, args))
    try:
        return common.served_load(f"http://{common.HOST}:{port}", texts, args.clients, args.serve_seconds)
    finally:
        common.stop_server(child)


def main() -> None:
    args = _arguments()
    from bertfit.infer.predictor import Predictor
    from bertfit.training.static import distill_static

    common.limit_threads(args.threads)
    teacher = _teacher(args)
    student = distill_static(teacher, ["--name", f"static-{args.data}", "--output_dir", str(args.work),
                                       "--train.progress", "false", "--distill.static_epochs", str(args.static_epochs)],
                             overwrite=True)
    texts, labels = _test_rows(args)
    models = {"teacher": (teacher, "pytorch"), "static": (student.run_dir, "static")}
    export = teacher / "export" / "export.json"
    if export.is_file() and "onnx-int8" in json.loads(export.read_text())["files"]:  # the teacher's int8 export too
        models["teacher-int8"] = (teacher, "onnx-int8")
    predictors = {name: Predictor(run, backend=backend, device="cpu", threads=args.threads)
                  for name, (run, backend) in models.items()}
    accuracy = {name: round(_accuracy(p, texts, labels), 4) for name, p in predictors.items()}
    speed_texts = texts[:args.speed_texts]
    rates: dict[str, list[float]] = {name: [] for name in predictors}
    for predictor in predictors.values():
        common.predict_rate(predictor, speed_texts[:args.batch_size], args.batch_size)  # warm-up
    for _ in range(args.rounds):
        for name, predictor in predictors.items():
            rates[name].append(common.predict_rate(predictor, speed_texts, args.batch_size))
    served = {name: _served(run, backend, texts, args) for name, (run, backend) in models.items()} \
        if args.serve_seconds > 0 else {}
    result = {**common.provenance(), "data": args.data, "test_rows": len(texts), "accuracy": accuracy,
              "accuracy_change_points": round(100 * (accuracy["static"] - accuracy["teacher"]), 2),
              "distill": {"validation_accuracy_loss_points": student.accuracy_loss_points, "warning": student.warning,
                          "train_seconds": round(student.train_seconds, 1)},
              "offline_texts_per_second": {name: common.spread(values, 1) for name, values in rates.items()},
              "offline_speedup": common.against(rates["static"], rates["teacher"]),
              "served": served, "runs": {name: str(run) for name, (run, _) in models.items()}}
    if served:
        result["served_speedup"] = {name: round(served["static"]["texts_per_second"] /
                                                max(served[name]["texts_per_second"], 1e-9), 2)
                                    for name in served if name != "static"}
    if "teacher-int8" in rates:
        result["offline_speedup_over_int8"] = common.against(rates["static"], rates["teacher-int8"])
    suffix = "" if args.data == "ag_news" else f"_{args.data}"
    path = common.write_json(common.OUT / f"static_student{suffix}.json", result)
    _plot(result, rates, common.OUT / f"static_student{suffix}.png")
    print(f"test accuracy on {len(texts)} rows: teacher {accuracy['teacher']:.4f}, static {accuracy['static']:.4f} "
          f"({result['accuracy_change_points']:+.2f} points)")
    print("offline texts/s: " + ", ".join(f"{name} {statistics.median(values):.0f}" for name, values in rates.items())
          + f" ({result['offline_speedup']['median']}x)")
    for name, load in served.items():
        print(f"served texts/s ({args.clients} clients): {name} {load['texts_per_second']} (p95 {load['p95_ms']} ms)")
    print(f"written: {path}")


def _plot(result: dict, rates: dict[str, list[float]], path: Path) -> None:
    """Test accuracy against offline texts/s (log scale) for each model: the frontier the student moves along."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, values in rates.items():
        speed, accuracy = statistics.median(values), 100 * result["accuracy"][name]
        axes.scatter(speed, accuracy, s=40)
        axes.annotate(name, (speed, accuracy), textcoords="offset points", xytext=(6, 4))
    axes.set_xscale("log")
    axes.set_xlabel("offline texts/s (log scale)")
    axes.set_ylabel(f"test accuracy, % ({result['test_rows']:,} rows)")
    axes.set_title(f"{result['data']}: teacher and static student, {', '.join(result['cpu']['flags'])}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
