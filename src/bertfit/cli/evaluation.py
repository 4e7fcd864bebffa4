"""`bertfit evaluate | inspect | tokenize | report | compare | explain`: the commands that look at data and results."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bertfit.training.recipe import TrainResult


def add_commands(commands: argparse._SubParsersAction) -> None:
    """evaluate, inspect, tokenize, report, compare, explain: the commands that look at data and results."""
    evaluate = commands.add_parser("evaluate", help="metrics of a trained run on labelled data")
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument("--data", help="file, preset or hub name (default: the run's own data of --split); other data "
                                         "is written to RUN/eval/<its name>/, never over the run's own results")
    evaluate.add_argument("--split", default="test", help="split of a preset or hub dataset (default: test)")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--max-rows", type=int, help="evaluate only the first N rows")
    calibrate = evaluate.add_mutually_exclusive_group()
    calibrate.add_argument("--calibrate", action="store_true", default=None,
                           help="fit a temperature on the run's validation split (at least 100 rows) and store it with "
                                "the model, also when evaluating other data (default: only on the run's own data)")
    calibrate.add_argument("--no-calibrate", dest="calibrate", action="store_false", default=None,
                           help="keep the stored temperature instead of fitting one")
    evaluate.add_argument("--no-baselines", action="store_true", help="skip majority / TF-IDF / untrained-model baselines")
    evaluate.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    evaluate.set_defaults(handler=_evaluate)

    _add_data_commands(commands)

    report = commands.add_parser("report", help="one self-contained HTML page and the model card of an evaluated run")
    report.add_argument("run", type=Path)
    report.add_argument("--split", default="test", help="the run's own split that was evaluated (default: test)")
    report.add_argument("--data", help="report an evaluation of other data: the data as given to evaluate (with "
                                       "its --split), or its name under RUN/eval/; written to RUN/report-<name>.html")
    report.add_argument("--explain-errors", type=int, default=5, help="token attributions for the top N errors (0: none)")
    report.add_argument("--out", type=Path, help="HTML file (default: RUN/report.html)")
    report.set_defaults(handler=_report)

    compare = commands.add_parser("compare", help="evaluated runs side by side in one HTML page")
    compare.add_argument("runs", type=Path, nargs="+")
    compare.add_argument("--split", default="test")
    compare.add_argument("--data", help="compare the runs' evaluations of this other data (as given to evaluate)")
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


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    """inspect and tokenize: what a dataset holds, and how a model reads one text."""
    inspect = commands.add_parser("inspect", help="sizes, class balance, token lengths and duplicates of a dataset")
    inspect.add_argument("--data", required=True, help="train data: file or preset (validation/test as in train)")
    inspect.add_argument("--validation", help="validation data (default: the preset's, if any)")
    inspect.add_argument("--test", help="test data (default: the preset's, if any)")
    inspect.add_argument("--text-column", default="text", help="text column(s), comma-separated")
    inspect.add_argument("--label-column", default="label", help="label column (a number with --no-header)")
    inspect.add_argument("--no-header", action="store_true",
                         help="CSV/TSV files have no header row: name columns by number, e.g. --text-column 1 --label-column 0")
    inspect.add_argument("--model", default="embedded", help="tokenizer to count tokens with (default: embedded)")
    inspect.add_argument("--max-length", type=int, default=128, help="current max_length, to report truncation")
    inspect.add_argument("--out", type=Path, help="also write the full report as JSON here")
    inspect.add_argument("--drop-duplicates", type=Path, metavar="DIR",
                         help="write each split to DIR/<split>.csv without near-duplicates, empty texts "
                              "and train rows seen in test")
    # inspect's flags set DataConfig fields: errors that name the fields show the flags
    inspect.set_defaults(handler=_inspect, field_flags={"data.text_columns": "--text-column",
                                                        "data.label_column": "--label-column",
                                                        "data.header false": "--no-header"})

    tokenize = commands.add_parser("tokenize", help="show how a model reads a text: tokens, ids, attention mask, length")
    tokenize.add_argument("model", help="a run directory or model folder (its own max_length), or a model name "
                                        "(embedded, a folder, a hub name)")
    tokenize.add_argument("text")
    tokenize.add_argument("--max-length", type=int, help="tokens kept, for a model name (default: 128)")
    tokenize.set_defaults(handler=_tokenize)


def _evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    from bertfit.config_values import parse_overrides
    from bertfit.errors import BertfitError
    from bertfit.evaluate.report import evaluation_label
    from bertfit.evaluate.run import evaluate_run

    fields = dict(parse_overrides(overrides))
    if any(not field.startswith("data.") for field in fields):
        others = ", ".join(field for field in fields if not field.startswith("data."))
        raise BertfitError(f"evaluate takes data fields after RUN (--data.text_columns ...), not {others}")
    metrics = evaluate_run(args.run, args.data, args.split, batch_size=args.batch_size, device=args.device,
                           max_rows=args.max_rows, calibrate=args.calibrate, baselines=not args.no_baselines,
                           figures=not args.no_figures, data_fields=fields)
    micro = f", f1_micro {metrics['f1_micro']:.4f}" if "per_label" in metrics else ""
    print(f"{evaluation_label(metrics)}: " + summary(metrics) + micro
          + (f", ece {metrics['ece']:.4f}" if "ece" in metrics else ""))
    _print_calibration(metrics, args.run)
    for name, scores in metrics.get("baselines", {}).items():
        print(f"baseline {name}: " + (f"skipped ({scores['skipped']})" if "skipped" in scores else summary(scores)))
    if "stack" in metrics:  # what predict and serve give: the model mixed with TF-IDF
        stack, weight = metrics["stack"]["scores"], metrics["stack"]["model_weight"]
        print(f"stack ({weight:.2f} x model + {1 - weight:.2f} x TF-IDF, what predict and serve use): "
              f"{summary(stack['stack'])}; parts: model {summary(stack['model'])}, TF-IDF {summary(stack['tfidf'])}")
    if metrics.get("overfitting_warning"):
        print(f"warning: {metrics['overfitting_warning']}")
    name = metrics["evaluation"]
    print(f"written: {args.run / 'eval' / name}/ ({', '.join(metrics['files'])}) and {args.run / 'eval' / name}.json")
    print("one page of it all (figures, errors, the model card):")
    print("  " + report_command(args.run, name, args.split))
    return 0


def _print_calibration(metrics: dict, run: Path) -> None:
    """Whether evaluate fitted and stored a temperature (which changes what predict and serve give), and if not why."""
    if "calibration" in metrics:
        c = metrics["calibration"]
        print(f"temperature {c['temperature']:.3f} fitted on {c['fitted_on']}, stored in "
              f"{run / 'model' / 'bertfit.json'} (predict and serve use it): ECE {c['test_ece_before']:.4f} -> "
              f"{c['test_ece_after']:.4f} on the evaluated rows")
    elif "calibration_skipped" in metrics:
        print(f"temperature {metrics['temperature']:.3f} kept, none fitted: {metrics['calibration_skipped']}")


def report_command(run: Path, name: str, split: str) -> str:
    """The command that renders evaluation `name` of `run` (the run's own split, or other data by its name)."""
    import shlex

    tail = (["--split", split] if split != "test" else []) if name == split else ["--data", name]
    return shlex.join(["bertfit", "report", str(run), *tail])


def _inspect(args: argparse.Namespace, _: list[str]) -> int:
    import json

    from bertfit.config import DataConfig
    from bertfit.data.inspection import drop_duplicates, inspect_data, summary_lines
    from bertfit.model import load_tokenizer

    config = DataConfig(train=args.data, validation=args.validation, test=args.test, label_column=args.label_column,
                        text_columns=tuple(c.strip() for c in args.text_column.split(",")), header=not args.no_header)
    report = inspect_data(config, load_tokenizer(args.model), args.max_length)
    print("\n".join(summary_lines(report)))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"written: {args.out}")
    if args.drop_duplicates is not None:
        for name, counts in drop_duplicates(config, args.drop_duplicates).items():
            print(f"{name}: kept {counts['kept']} of {counts['rows']} rows -> {args.drop_duplicates / (name + '.csv')}")
    return 0


def _tokenize(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.infer.token_view import view_tokens

    view = view_tokens(args.model, args.text, args.max_length)
    for number, (tokens, ids, mask) in enumerate(zip(view.tokens, view.ids, view.attention_mask), start=1):
        if len(view.ids) > 1:
            print(f"window {number} of {len(view.ids)}:")
        print("tokens:         " + " ".join(tokens))
        print("ids:            " + " ".join(map(str, ids)))
        print("attention_mask: " + " ".join(map(str, mask)) + "  (padding in a batch gets 0)")
    kept = sum(map(len, view.ids))
    cut = f"; {view.cut_tokens} tokens cut and never read" if view.cut_tokens else ""
    print(f"length: {view.text_tokens} tokens with special tokens, max_length {view.max_length}, "
          f"{kept} read in {len(view.ids)} row(s){cut}")
    return 0


def _report(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.evaluate.model_card import card_evaluation, render_model_card
    from bertfit.evaluate.report import choose_evaluation, render_report

    name = choose_evaluation(args.run, args.data, args.split)
    print(f"report: {render_report(args.run, args.split, args.explain_errors, args.out, args.data)} (eval/{name})")
    card = card_evaluation(args.run, args.split, args.data)
    print(f"model card: {render_model_card(args.run, args.split, args.data)} (eval/{card})")
    return 0


def _compare(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.evaluate.report import render_compare

    print(f"comparison: {render_compare(args.runs, args.out, args.split, args.data)}")
    return 0


def _explain(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.evaluate.explain import explain_page, explain_text, top_tokens

    attribution, special = explain_text(args.run, args.text, args.label, args.steps, args.device)
    args.out.write_text(explain_page(attribution, special), encoding="utf-8")
    words = ", ".join(f"{w} {s:+.3f}" for w, s in top_tokens(attribution, special))
    print(f"{attribution.label} ({attribution.confidence:.3f}); strongest words: {words}")
    print(f"written: {args.out}")
    return 0


def summary(metrics: dict[str, float]) -> str:
    keys = [k for k in ("accuracy", "f1_macro", "loss") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def kept_validation(result: TrainResult) -> str:
    """The validation scores of the weights a run kept: its best evaluation's, or its last (train.keep)."""
    if result.kept == "best":
        return f"best validation (step {result.best_step}): " + summary(result.validation)
    return f"validation of the last weights (step {result.best_step}, train.keep last): " + summary(result.validation)
