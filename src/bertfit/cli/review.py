"""`bertfit review RUN`: label in the browser (audit fixes, suggested texts), train the next run on the result,
and hand the queues to Label Studio or Argilla and back."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from bertfit.errors import BertfitError, require

REVIEWED_ISSUES, ADDED_ROWS = "reviewed_issues.csv", "added.csv"  # in RUN/review/: what --apply trained on


def add_commands(commands: argparse._SubParsersAction) -> None:
    review = commands.add_parser(
        "review", help="review audit flags and label suggested texts in the browser; --apply trains the next run",
        usage="bertfit review RUN [--suggestions FILE] [--port N] | --apply [--name NAME] | --export FORMAT OUT | "
              "--import FILE",
        description="A local page with two queues: audit (rows `bertfit audit` flagged) and label (texts `bertfit "
                    "suggest` picked). Keys: 1-9 or a letter pick a label, d drops an audit row, Enter accepts, s skips, "
                    "u or Backspace undoes, Tab switches queue. Every decision is saved in RUN/review/ at once.")
    review.add_argument("run", type=Path)
    review.add_argument("--suggestions", type=Path, metavar="FILE",
                        help="file `bertfit suggest` wrote: its texts join the label queue (kept in RUN/review/)")
    review.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: this machine only)")
    review.add_argument("--port", type=int, default=8100)
    review.add_argument("--api-key-env", default="BERTFIT_API_KEY",
                        help="environment variable holding the API key; when set, the page asks for it")
    review.add_argument("--allow-public", action="store_true",
                        help="serve a non-loopback --host without an API key (anyone who reaches it can label)")
    review.add_argument("--device", default="auto")
    review.add_argument("--no-explain", action="store_true",
                        help="do not show the words that drove the model (integrated gradients, a few model passes a text)")
    review.add_argument("--open", action="store_true", help="open the page in the default browser")
    review.add_argument("--apply", action="store_true",
                        help="train the next run on the run's data with the audit fixes and the newly labelled texts")
    review.add_argument("--name", help="--apply: name of the new run, made beside RUN (default: NAME-reviewed)")
    review.add_argument("--overwrite", action="store_true", help="--apply: replace an existing run of that name")
    review.add_argument("--export", nargs=2, metavar=("FORMAT", "OUT"),
                        help="write the queues for labelstudio (OUT: tasks JSON, plus OUT.xml, the labeling config) or "
                             "argilla (OUT: a folder for rg.Dataset.from_disk)")
    review.add_argument("--import", dest="import_file", type=Path, metavar="FILE",
                        help="read annotations back: Label Studio's JSON export or Argilla's records.json")
    review.add_argument("--quiet", action="store_true", help="log warnings only")
    review.set_defaults(handler=_review)


def _review(args: argparse.Namespace, _: list[str]) -> int:
    chosen = [flag for flag, given in (("--apply", args.apply), ("--export", args.export is not None),
                                       ("--import", args.import_file is not None)) if given]
    if len(chosen) > 1:
        raise BertfitError(f"{' and '.join(chosen)}: give one of them at a time")
    if args.apply:
        return _apply(args)
    if args.export is not None:
        return _export(args)
    if args.import_file is not None:
        return _import(args)
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    import os
    import webbrowser

    require("serve", "bertfit review", "fastapi", "uvicorn")
    from bertfit.deploy.review import serve_review
    from bertfit.deploy.serve import ServeSettings

    settings = ServeSettings(api_key=os.environ.get(args.api_key_env) or None)
    url = f"http://{'localhost' if args.host in ('127.0.0.1', 'localhost') else args.host}:{args.port}/"
    print(f"reviewing {args.run} on {url}; every decision is saved in {args.run / 'review'}; Ctrl-C stops", flush=True)
    if args.open:
        webbrowser.open(url)
    serve_review(args.run, settings, host=args.host, port=args.port, allow_public=args.allow_public,
                 suggestions=args.suggestions, device=args.device, explain=not args.no_explain)
    return 0


def _opened(args: argparse.Namespace) -> Any:
    from bertfit.deploy.review_sources import open_review

    return open_review(args.run, args.suggestions)


def _export(args: argparse.Namespace) -> int:
    from bertfit.deploy.review_formats import export_review

    fmt, out = args.export[0], Path(args.export[1])
    written = export_review(_opened(args), fmt, out, args.run.name)
    print(f"written: {', '.join(map(str, written))}")
    print(f"after annotating, export from {fmt} and read it back: bertfit review {shlex.quote(str(args.run))} "
          "--import FILE")
    return 0


def _import(args: argparse.Namespace) -> int:
    from bertfit.deploy.review_formats import import_annotations
    from bertfit.deploy.review_state import REVIEW_DIR, review_lock

    with review_lock(args.run / REVIEW_DIR):
        state = _opened(args)
        counts = import_annotations(state, args.import_file)
    print(f"{counts['imported']} decisions imported ({counts['unchanged']} already so) into {state.journal}")
    for queue in ("audit", "label"):
        progress = state.progress(queue)
        print(f"  {queue}: {progress['decided']} of {progress['total']} decided, {progress['changed']} changed")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from bertfit import artifacts
    from bertfit.cli.evaluation import summary
    from bertfit.config import replace
    from bertfit.curate.audit import run_config
    from bertfit.deploy.review_state import REVIEW_DIR, review_lock
    from bertfit.training.recipe import train

    config = run_config(args.run)
    name = args.name or f"{args.run.name}-reviewed"
    artifacts.check_run_dir_free(replace(config, name=name), args.overwrite)
    with review_lock(args.run / REVIEW_DIR):
        state = _opened(args)
        new_config, counts = reviewed_config(config, state, name)
    print(f"audit: {counts['relabelled']} rows relabelled, {counts['dropped']} dropped, {counts['confirmed']} kept as "
          f"given; label: {counts['added']} new rows; training data: {new_config.data.train}")
    result = train(new_config, overwrite=args.overwrite)
    print(f"run: {result.run_dir}")
    before, after = artifacts.read_results(args.run).get("test"), result.test
    if before is None or after is None:
        print("no test split to compare on (set data.test): validation " + summary(result.validation))
        return 0
    print(f"test ({config.data.test}), the same rows for both runs:")
    print(f"  {args.run.name}: {summary(before)}")
    print(f"  {name}: {summary(after)}")
    print("  change: " + ", ".join(f"{key} {100 * (after[key] - before[key]):+.2f} points"
                                   for key in ("accuracy", "f1_macro") if key in before and key in after))
    return 0


def reviewed_config(config: Any, state: Any, name: str) -> tuple[Any, dict[str, int]]:
    """The config of the next run: the run's training data with the audit decisions applied (curate.relabel, every
    change in RUN/review/NAME/changes.csv) and the labelled texts added (RUN/review/NAME/added.csv)."""
    from bertfit.atomic import write_text_atomic
    from bertfit.curate.relabel import apply_review
    from bertfit.curate.tables import csv_text

    fixes, labelled = state.labelled("audit"), state.labelled("label")
    if not fixes and not labelled:
        raise BertfitError(f"{state.folder}: nothing reviewed yet; open the page first (bertfit review RUN)")
    review = state.folder / REVIEWED_ISSUES
    write_text_atomic(review, csv_text(("row", "text", "new_label"), [
        (state.items[i]["row"], state.items[i]["text"], label) for i, label in fixes.items()]))
    relabelling = apply_review(config, review, state.folder, name)
    added = [(state.items[i], label) for i, label in labelled.items()]
    add_rows(relabelling.config, relabelling.train_file, added)
    write_text_atomic(relabelling.train_file.parent / ADDED_ROWS, csv_text(("text", "label"), [
        (item["text"], label) for item, label in added]))
    return relabelling.config, {"relabelled": relabelling.relabelled, "dropped": relabelling.dropped,
                                "confirmed": relabelling.confirmed, "added": len(added)}


def add_rows(config: Any, train_file: Path, added: list[tuple[dict[str, Any], str]]) -> None:
    """Append the labelled texts to the corrected training file, in its own columns and format: each text column
    from the suggestion's own values (or the joined text, for a file of one text column the run did not have)."""
    from bertfit.curate.tables import write_table
    from bertfit.data.read import read_file

    if not added:
        return
    data = config.data
    columns = read_file(train_file, data)
    text_columns = [str(c) for c in data.text_columns]
    for item, label in added:
        values = item["values"] if set(item["values"]) == set(text_columns) else {text_columns[0]: item["text"]}
        for column, cells in columns.items():
            key = str(column)
            cells.append(label if key == str(data.label_column) else values.get(key))
    write_table(train_file, columns, data.file_format(train_file) or "csv", data.header)
