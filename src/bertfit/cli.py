"""The `bertfit` command: parses arguments, calls the public API, prints. Exit 2 on bad input."""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

from bertfit.errors import BertfitError

# Kept here (not imported from bertfit.predict) so `bertfit --help` does not wait for torch.
BACKENDS = ("auto", "torch", "onnx", "onnx-fp32", "onnx-int8")

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("train", "search"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.handler(args, extra)
    except BertfitError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    from bertfit import __version__

    parser = argparse.ArgumentParser(prog="bertfit", description="Fine-tune, evaluate and serve BERT-family text classifiers.")
    parser.add_argument("--version", action="version", version=f"bertfit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune a model into runs/NAME",
                                description="Any config field can be given as a flag: --train.lr 3e-5, --data.train x.csv. "
                                            "Run `bertfit config` to list them.")
    train.add_argument("--config", type=Path, help="YAML config file (fields as in `bertfit config`)")
    train.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run from its checkpoint")
    train.add_argument("--init-from", metavar="RUN", help="start from RUN's weights; its labels keep their ids and "
                                                          "new labels get new head rows (same as --model.init_from)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    train.add_argument("--quiet", action="store_true", help="log warnings only")
    train.set_defaults(handler=_train)

    search = commands.add_parser("search", help="hyperparameter search (Optuna): many trials of one config",
                                 description="Field flags (--train.epochs 2) change the base config of every trial.")
    search.add_argument("--config", type=Path, help="base YAML config of every trial")
    search.add_argument("--space", required=True, help="search space YAML, or a preset: lr-grid, lr-range")
    search.add_argument("--trials", type=int, default=10, help="trials to run in this process (default: 10)")
    search.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///runs/search.db (default) or "
                                          "postgresql://user@host/db to share a study between machines")
    search.add_argument("--study-name", help="study to create or join (default: the config's name, else 'search')")
    search.add_argument("--sampler", default="auto", choices=("auto", "tpe", "random", "grid"), help="auto (grid for all-choice spaces, else tpe), tpe, random, grid")
    search.add_argument("--pruner", default="median", choices=("median", "asha", "none"), help="median, asha (successive halving) or none")
    search.add_argument("--seed", type=int, help="sampler seed (default: unseeded, so several machines differ)")
    search.add_argument("--quiet", action="store_true", help="log warnings only")
    search.set_defaults(handler=_search)

    evaluate = commands.add_parser("evaluate", help="metrics of a trained run on labelled data")
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument("--data", help="file, preset or hub name (default: the run's test data)")
    evaluate.add_argument("--split", default="test", help="split of a preset or hub dataset (default: test)")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--max-rows", type=int, help="evaluate only the first N rows")
    evaluate.add_argument("--no-calibrate", action="store_true", help="keep the stored temperature instead of fitting one")
    evaluate.add_argument("--no-baselines", action="store_true", help="skip majority / TF-IDF / untrained-model baselines")
    evaluate.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    evaluate.set_defaults(handler=_evaluate)

    _add_evaluation_commands(commands)

    predict = commands.add_parser("predict", help="labels and probabilities for texts or a file")
    predict.add_argument("run", type=Path)
    predict.add_argument("texts", nargs="*", help="texts to classify")
    predict.add_argument("--file", type=Path, help="CSV/TSV/JSONL/Parquet file of texts")
    predict.add_argument("--text-column", default="text")
    predict.add_argument("--out", type=Path, help="write predictions as CSV here (default: print)")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--device", default="auto")
    predict.add_argument("--backend", default="auto", choices=BACKENDS,
                         help="auto: ONNX Runtime when RUN/export exists and the device is the CPU, else PyTorch")
    predict.set_defaults(handler=_predict)

    merge = commands.add_parser("merge", help="write a standalone model folder with LoRA adapters merged in")
    merge.add_argument("run", type=Path, help="run directory or model folder")
    merge.add_argument("out", type=Path, help="folder to write the merged model to")
    merge.set_defaults(handler=_merge)
    _add_export(commands)
    _add_serve(commands)

    env = commands.add_parser("env", help="versions, device and precision a run would use")
    env.add_argument("--device", default="auto")
    env.set_defaults(handler=_env)

    config = commands.add_parser("config", help="list every config field with its default and meaning")
    config.set_defaults(handler=_config)

    presets = commands.add_parser("presets", help="list the named local datasets")
    presets.set_defaults(handler=_presets)
    return parser


def _add_evaluation_commands(commands) -> None:
    """inspect, report, compare, explain: the commands that look at data and results."""
    inspect = commands.add_parser("inspect", help="sizes, class balance, token lengths and duplicates of a dataset")
    inspect.add_argument("--data", required=True, help="train data: file or preset (validation/test as in train)")
    inspect.add_argument("--validation", help="validation data (default: the preset's, if any)")
    inspect.add_argument("--test", help="test data (default: the preset's, if any)")
    inspect.add_argument("--text-column", default="text", help="text column(s), comma-separated")
    inspect.add_argument("--label-column", default="label")
    inspect.add_argument("--model", default="embedded", help="tokenizer to count tokens with (default: embedded)")
    inspect.add_argument("--max-length", type=int, default=128, help="current max_length, to report truncation")
    inspect.add_argument("--out", type=Path, help="also write the full report as JSON here")
    inspect.add_argument("--drop-duplicates", type=Path, metavar="DIR",
                         help="write each split to DIR/<split>.csv without near-duplicates, empty texts and train rows seen in test")
    inspect.set_defaults(handler=_inspect)

    report = commands.add_parser("report", help="one self-contained HTML page and the model card of an evaluated run")
    report.add_argument("run", type=Path)
    report.add_argument("--split", default="test")
    report.add_argument("--explain-errors", type=int, default=5, help="token attributions for the top N errors (0: none)")
    report.add_argument("--out", type=Path, help="HTML file (default: RUN/report.html)")
    report.set_defaults(handler=_report)

    compare = commands.add_parser("compare", help="evaluated runs side by side in one HTML page")
    compare.add_argument("runs", type=Path, nargs="+")
    compare.add_argument("--split", default="test")
    compare.add_argument("--out", type=Path, default=Path("compare.html"))
    compare.set_defaults(handler=_compare)

    explain = commands.add_parser("explain", help="token attributions (integrated gradients) for a text, as HTML")
    explain.add_argument("run", type=Path)
    explain.add_argument("text")
    explain.add_argument("--label", help="class to explain (default: the predicted one)")
    explain.add_argument("--steps", type=int, default=32, help="integration steps")
    explain.add_argument("--out", type=Path, default=Path("explain.html"))
    explain.add_argument("--device", default="auto")
    explain.set_defaults(handler=_explain)


def _add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a run for deployment (ONNX, optionally int8) and check it")
    export.add_argument("run", type=Path)
    export.add_argument("--onnx", action="store_true", help="write RUN/export/model.onnx (the only format so far)")
    export.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8 quantisation)")
    export.add_argument("--max-rows", type=int, help="check the export on at most N test rows (default: all)")
    export.add_argument("--batch-size", type=int, default=64)
    export.set_defaults(handler=_export)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="HTTP service (FastAPI): POST /predict, GET /health, /metadata, / (a page)")
    serve.add_argument("run", type=Path)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--backend", default="auto", choices=BACKENDS)
    serve.add_argument("--device", default="auto")
    serve.add_argument("--threads", type=int, help="CPU threads per model call (default: all cores)")
    serve.add_argument("--max-batch", type=int, default=32, help="texts per model call when batching requests")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to join")
    serve.add_argument("--max-texts", type=int, default=256, help="texts per request")
    serve.add_argument("--max-text-chars", type=int, default=20_000, help="characters per text")
    serve.add_argument("--max-body-bytes", type=int, default=2_000_000, help="request body size")
    serve.add_argument("--api-key-env", default="BERTFIT_API_KEY",
                       help="environment variable holding the API key; when set, requests need header X-API-Key")
    serve.set_defaults(handler=_serve)


def _train(args: argparse.Namespace, overrides: list[str]) -> int:
    from bertfit.config import load_config
    from bertfit.train import train

    if args.resume is not None:
        if args.config is not None or overrides:
            raise BertfitError("--resume continues a run with its saved config; drop --config and field flags")
        result = train(resume=args.resume)
    else:
        if args.init_from is not None:
            overrides = [*overrides, "--model.init_from", str(args.init_from)]
        result = train(load_config(args.config, overrides), overwrite=args.overwrite)
    if result.interrupted:
        print(f"interrupted after step {result.steps}; resume with: bertfit train --resume {result.run_dir}")
        return EXIT_INTERRUPTED
    print(f"run: {result.run_dir}")
    print(f"training: {result.train_seconds:.1f} s, {result.samples_per_second:.1f} samples/s")
    print(f"best validation (step {result.best_step}): " + _summary(result.validation))
    if result.test is not None:
        print("test: " + _summary(result.test))
    return 0


def _search(args: argparse.Namespace, overrides: list[str]) -> int:
    from bertfit.config import load_config
    from bertfit.search import load_space, run_search

    config = load_config(args.config, overrides)
    result = run_search(config, load_space(args.space), args.trials, args.storage, args.study_name, args.sampler,
                        args.pruner, args.seed)
    print(f"study {result.study_name} ({result.storage}): " + ", ".join(f"{n} {k.lower()}" for k, n in result.states.items()))
    print(f"results: {result.table}")
    if result.best_config is None:
        print("no trial completed")
        return 1
    print(f"best {config.train.metric} {result.best_value:.4f} with {result.best_params}; config: {result.best_config}")
    return 0


def _evaluate(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.evaluate import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.split, args.batch_size, args.device, args.max_rows,
                           calibrate=not args.no_calibrate, baselines=not args.no_baselines, figures=not args.no_figures)
    print(f"{metrics['data']} ({metrics['rows']} rows): " + _summary(metrics) + f", ece {metrics['ece']:.4f}")
    if "calibration" in metrics:
        c = metrics["calibration"]
        print(f"temperature {c['temperature']:.3f}: test ECE {c['test_ece_before']:.4f} -> {c['test_ece_after']:.4f}")
    for name, scores in metrics.get("baselines", {}).items():
        print(f"baseline {name}: " + (f"skipped ({scores['skipped']})" if "skipped" in scores else _summary(scores)))
    if metrics.get("overfitting_warning"):
        print(f"warning: {metrics['overfitting_warning']}")
    print(f"written: {args.run / 'eval' / args.split}/ (metrics.json, errors.csv, figures)")
    return 0


def _inspect(args: argparse.Namespace, _: list[str]) -> int:
    import json

    from bertfit.config import DataConfig
    from bertfit.inspection import drop_duplicates, inspect_data, summary_lines
    from bertfit.model import load_tokenizer

    config = DataConfig(train=args.data, validation=args.validation, test=args.test, label_column=args.label_column,
                        text_columns=tuple(c.strip() for c in args.text_column.split(",")))
    report = inspect_data(config, load_tokenizer(args.model), args.max_length)
    print("\n".join(summary_lines(report)))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"written: {args.out}")
    if args.drop_duplicates is not None:
        for name, counts in drop_duplicates(config, args.drop_duplicates).items():
            print(f"{name}: kept {counts['kept']} of {counts['rows']} rows -> {args.drop_duplicates / (name + '.csv')}")
    return 0


def _report(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.model_card import render_model_card
    from bertfit.report import render_report

    print(f"report: {render_report(args.run, args.split, args.explain_errors, args.out)}")
    print(f"model card: {render_model_card(args.run, args.split)}")
    return 0


def _compare(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.report import render_compare

    print(f"comparison: {render_compare(args.runs, args.out, args.split)}")
    return 0


def _explain(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.explain import explain_page, integrated_gradients, special_tokens_of, top_tokens
    from bertfit.predict import Predictor

    predictor = Predictor(args.run, device=args.device)
    target = None
    if args.label is not None:
        if args.label not in predictor.labels.label2id:
            raise BertfitError(f"--label {args.label!r} is not a label of this model ({', '.join(predictor.labels.names)})")
        target = predictor.labels.label2id[args.label]
    attribution = integrated_gradients(predictor, args.text, target, args.steps)
    args.out.write_text(explain_page(attribution, special_tokens_of(predictor)), encoding="utf-8")
    words = ", ".join(f"{w} {s:+.3f}" for w, s in top_tokens(attribution, special_tokens_of(predictor)))
    print(f"{attribution.label} ({attribution.confidence:.3f}); strongest words: {words}")
    print(f"written: {args.out}")
    return 0


def _predict(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.predict import Predictor

    texts, columns = list(args.texts), None
    if args.file is not None:
        columns = _read_text_file(args.file, args.text_column)
        texts += [str(t) for t in columns[args.text_column]]
    if not texts:
        raise BertfitError("nothing to predict: give texts as arguments or --file FILE")
    predictor = Predictor(args.run, device=args.device, batch_size=args.batch_size, backend=args.backend)
    predictions = predictor.predict(texts)
    if args.out is None:
        for p in predictions:
            probabilities = ", ".join(f"{k}={v:.3f}" for k, v in p.probabilities.items())
            print(f"{p.label}\t{p.confidence:.3f}\t{probabilities}\t{p.text[:80]}")
        return 0
    names = list(predictions[0].probabilities)
    with open(args.out, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label", "confidence", *(f"prob_{n}" for n in names)])
        for p in predictions:
            writer.writerow([p.text, p.label, f"{p.confidence:.6f}", *(f"{p.probabilities[n]:.6f}" for n in names)])
    print(f"{len(predictions)} predictions written to {args.out}")
    return 0


def _export(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.export import export_run

    if not args.onnx:
        raise BertfitError("choose an export format: --onnx (add --int8 for a quantised copy)")
    if args.max_rows is not None and args.max_rows < 1:
        raise BertfitError(f"--max-rows must be >= 1, got {args.max_rows}")
    meta = export_run(args.run, int8=args.int8, max_rows=args.max_rows, batch_size=args.batch_size)
    check = meta["check"]
    print(f"exported to {args.run / 'export'} ({', '.join(meta['files'].values())})")
    print(f"check on {check['rows']} {check['split']} rows: torch accuracy {check['torch_accuracy']:.4f}")
    for kind in meta["files"]:
        c = check[kind]
        print(f"  {kind}: accuracy {c['accuracy']:.4f} ({c['accuracy_change_points']:+.2f} points), "
              f"max probability difference {c['max_probability_difference']:.2e}")
    return 0


def _serve(args: argparse.Namespace, _: list[str]) -> int:
    import os

    from bertfit.serve import ServeSettings, serve

    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts,
                             max_text_chars=args.max_text_chars, max_body_bytes=args.max_body_bytes,
                             api_key=os.environ.get(args.api_key_env) or None)
    print(f"serving {args.run} on http://{args.host}:{args.port} (docs: /docs); Ctrl-C stops after in-flight requests")
    serve(args.run, settings, host=args.host, port=args.port, backend=args.backend, device=args.device,
          threads=args.threads)
    return 0


def _read_text_file(path: Path, column: str) -> dict[str, list]:
    from bertfit.config import DataConfig
    from bertfit.data import read_file

    if not path.is_file():
        raise BertfitError(f"--file {path}: file not found")
    columns = read_file(path, DataConfig())
    if column not in columns:
        raise BertfitError(f"{path}: column {column!r} not found (columns: {', '.join(map(str, columns))}); "
                           "set --text-column")
    return columns


def _merge(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.artifacts import save_merged

    print(f"merged model written to {save_merged(args.run, args.out)}")
    return 0


def _env(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.runtime import environment

    facts = environment(args.device)
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    if not facts["cuda_available"]:
        print("\nno GPU: training runs on the CPU in fp32 (set train.precision=bf16 to try bf16 autocast"
              + (", which this CPU supports)" if facts["cpu_bf16"] else ")"))
    return 0


def _config(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.config import field_help

    for name, help_text, default in field_help():
        shown = ",".join(default) if isinstance(default, tuple) else default
        print(f"--{name:<32} {help_text} [default: {shown}]")
    return 0


def _presets(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.presets import PRESETS

    for name, preset in PRESETS.items():
        print(f"{name:<10} {preset.description}; labels: {', '.join(preset.label_names)}")
    return 0


def _summary(metrics: dict[str, float]) -> str:
    keys = [k for k in ("accuracy", "f1_macro", "loss") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)


if __name__ == "__main__":
    sys.exit(main())
