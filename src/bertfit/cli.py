"""The `bertfit` command: parses arguments, calls the public API, prints. Exit 2 on bad input.

The evaluation commands live in cli_evaluation.py, export and serve in cli_deploy.py.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

from bertfit import cli_deploy, cli_evaluation
from bertfit.cli_deploy import BACKENDS
from bertfit.cli_evaluation import summary
from bertfit.errors import BertfitError

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

    _add_training_commands(commands)
    cli_evaluation.add_commands(commands)

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
    cli_deploy.add_commands(commands)

    env = commands.add_parser("env", help="versions, device and precision a run would use")
    env.add_argument("--device", default="auto")
    env.set_defaults(handler=_env)

    config = commands.add_parser("config", help="list every config field with its default and meaning")
    config.set_defaults(handler=_config)

    presets = commands.add_parser("presets", help="list the named local datasets")
    presets.set_defaults(handler=_presets)
    return parser


def _add_training_commands(commands: argparse._SubParsersAction) -> None:
    """train and search: the commands that fine-tune models."""
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
    print(f"best validation (step {result.best_step}): " + summary(result.validation))
    if result.test is not None:
        print("test: " + summary(result.test))
    if result.test and "forgetting_points" in result.test:
        test = result.test
        print(f"earlier labels: accuracy {test['accuracy/old_labels_before']:.4f} before, {test['accuracy/old_labels']:.4f} "
              f"after ({test['forgetting_points']:+.2f} points forgotten); new labels: "
              f"{test.get('accuracy/new_labels', float('nan')):.4f}")
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


if __name__ == "__main__":
    sys.exit(main())
