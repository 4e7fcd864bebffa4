"""`bertfit audit | suggest`: the commands that make the data better (label errors, what to label next)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertfit.cli.evaluation import kept_validation, summary
from bertfit.errors import BertfitError

if TYPE_CHECKING:
    from bertfit.config import RunConfig


def add_commands(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser(
        "audit", help="likely label errors and conflicting near-duplicates of the training data (cleanlab)",
        usage="bertfit audit [RUN | --config FILE] [--section.field VALUE ...] [options]",
        description="Out-of-fold probabilities for every training row (k-fold cross-fitting), ranked by confident "
                    "learning. Give a RUN (writes RUN/audit/; field flags after it change its saved config) or a "
                    "config and field flags (--data.train x.csv). "
                    "Review label_issues.csv (fill new_label: a label, DROP, or empty to keep) and pass it to --relabel.")
    audit.add_argument("--config", type=Path, help="YAML config whose data.train to audit (instead of a RUN)")
    audit.add_argument("--folds", type=int, default=5, help="k of the k-fold cross-fitting (default: 5)")
    audit.add_argument("--method", default="features", choices=("features", "finetune"),
                       help="features: frozen encoder + logistic regression per fold (fast, default); "
                            "finetune: fine-tune the configured model per fold")
    audit.add_argument("--similarity", type=float, default=0.95,
                       help="cosine at or above which two rows count as near-duplicates (default: 0.95)")
    audit.add_argument("--seed", type=int, help="fold assignment seed (default: train.seed)")
    audit.add_argument("--out", type=Path, help="audit folder (default: RUN/audit, or ./audit with --config)")
    audit.add_argument("--relabel", type=Path, metavar="FILE",
                       help="apply a reviewed label_issues.csv and train again (changes.csv lists every change)")
    audit.add_argument("--name", help="--relabel: name of the new run, made beside RUN (default: NAME-relabelled)")
    audit.add_argument("--overwrite", action="store_true", help="--relabel: replace an existing run of that name")
    audit.add_argument("--quiet", action="store_true", help="log warnings only")
    audit.set_defaults(handler=_audit)

    suggest = commands.add_parser(
        "suggest", help="the next texts to label from an unlabelled pool: uncertain and diverse",
        usage="bertfit suggest RUN --pool FILE [--n N] [--out FILE] [--data.field VALUE ...]",
        description="The pool is read with the run's own data settings; field flags after RUN change them "
                    "(--data.text_columns '[title, body]'). The file to label keeps the run's column names.")
    suggest.add_argument("run", type=Path)
    suggest.add_argument("--pool", type=Path, required=True, help="unlabelled texts (CSV/TSV/JSON/JSONL/Parquet, the "
                                                                   "run's text column(s), no labels)")
    suggest.add_argument("--n", type=int, default=50, help="how many texts to suggest (default: 50)")
    suggest.add_argument("--out", type=Path, default=Path("suggestions.csv"),
                         help="file to label, CSV unless its extension names another format (default: suggestions.csv)")
    suggest.add_argument("--overwrite", action="store_true", help="replace an existing --out file (it may hold labels "
                                                                  "filled in by hand, so it is kept by default)")
    suggest.add_argument("--device", default="auto")
    suggest.add_argument("--quiet", action="store_true", help="log warnings only")
    suggest.set_defaults(handler=_suggest)


def _audit(args: argparse.Namespace, overrides: list[str]) -> int:
    from bertfit import artifacts
    from bertfit.config import load_config
    from bertfit.curate.audit import AuditSettings, audit, run_config

    # RUN is read here, not by argparse: a positional would swallow the value of a field flag (--data.train x.csv)
    args.run = Path(overrides.pop(0)) if overrides and not overrides[0].startswith("-") else None
    if args.run is not None and args.config is not None:
        raise BertfitError("a RUN is audited with its saved config (field flags change it); drop --config")
    if args.run is not None:
        config, out = run_config(args.run, overrides), args.out or args.run / artifacts.AUDIT_DIR
    else:
        config, out = load_config(args.config, overrides), args.out or Path(artifacts.AUDIT_DIR)
    if args.relabel is not None:
        return _relabel(config, args, out)
    settings = AuditSettings(args.folds, args.method, args.similarity,
                             seed=config.train.seed if args.seed is None else args.seed)
    result = audit(config, out, settings)
    print(f"{result.rows} rows audited ({settings.folds}-fold, {settings.method}) in {result.seconds:.1f} s")
    print(f"likely label errors: {len(result.flagged)}; conflicting near-duplicate pairs: {result.conflicts}")
    print(f"written: {out}/ ({artifacts.AUDIT_ISSUES}, {artifacts.AUDIT_CONFLICTS}, {artifacts.AUDIT_SUMMARY})")
    print(f"review: fill new_label in {out / artifacts.AUDIT_ISSUES} (a label, DROP, or empty to keep the row), "
          "then apply it and train again:")
    where = [str(args.run)] if args.run is not None else (["--config", str(args.config)] if args.config else [])
    chosen_out = ["--out", str(args.out)] if args.out is not None else []
    print("  " + shlex.join(["bertfit", "audit", *where, *overrides, *chosen_out, *_audit_options(args),
                             "--relabel", str(out / artifacts.AUDIT_ISSUES)]))
    if args.run is not None and args.out is None:
        print("or review them in the browser: " + shlex.join(["bertfit", "review", str(args.run)]))
    return 0


def _relabel(config: RunConfig, args: argparse.Namespace, out: Path) -> int:
    from bertfit.curate.relabel import relabel_and_train

    name = args.name or (f"{args.run.name}-relabelled" if args.run is not None else None)
    relabelling, result = relabel_and_train(config, args.relabel, out, name, args.overwrite)
    print(f"relabelled {relabelling.relabelled} rows, dropped {relabelling.dropped}, confirmed "
          f"{relabelling.confirmed} as given; every change: {relabelling.changes_file}")
    print(f"corrected training data: {relabelling.train_file}")
    print(f"run: {result.run_dir}")
    print(kept_validation(result))
    if result.test is not None:
        print("test: " + summary(result.test))
    print("audit the corrected data in its turn:")
    print("  " + shlex.join(["bertfit", "audit", str(result.run_dir), *_audit_options(args)]))
    return 0


def _audit_options(args: argparse.Namespace) -> list[str]:
    """The audit options given that differ from their defaults, to repeat them in a printed command."""
    given = [("--folds", args.folds, 5), ("--method", args.method, "features"), ("--similarity", args.similarity, 0.95),
             ("--seed", args.seed, None)]
    return [part for flag, value, default in given if value != default for part in (flag, str(value))]


def _suggest(args: argparse.Namespace, overrides: list[str]) -> int:
    from bertfit import artifacts
    from bertfit.config import FILE_FORMATS, override
    from bertfit.config_values import parse_overrides
    from bertfit.curate.suggest import suggest

    suggestions = suggest(args.run, args.pool, args.n, args.out, args.device, args.overwrite, overrides)
    config = override(artifacts.read_run_config(args.run), dict(parse_overrides(overrides)))
    print(f"{len(suggestions)} texts to label (smallest margin {min(s.margin for s in suggestions):.3f}): {args.out}")
    print(f"fill in its {config.data.label_column!r} column (the run's labels: "
          f"{', '.join(artifacts.read_model_meta(args.run).labels)}), then train on it from the run's weights "
          "(or add the rows to the training file and train again):")
    reading = {"data.format": "auto" if args.out.suffix.lower() in FILE_FORMATS else "csv", "data.header": True}
    print("  " + shlex.join(["bertfit", "train", "--init-from", str(args.run), "--data.train", str(args.out),
                             *carried_flags(config, reading)]))
    print("or label them in the browser: " + shlex.join(["bertfit", "review", str(args.run), "--suggestions", str(args.out)]))
    return 0


CARRIED_FIELDS = ("model.name", "model.max_length", "model.keep_head", "model.pooling", "data.text_columns",
                  "data.label_column", "data.label_names", "data.format", "data.header")


def carried_flags(config: RunConfig, reading: dict[str, Any]) -> list[str]:
    """Field flags that make a new run build its model as `config` did (init_from needs the same model.name)
    and read a file in the run's columns: each field whose value (or `reading`'s) differs from the default."""
    from bertfit.config import RunConfig, config_to_dict, flatten

    wanted, defaults = flatten(config_to_dict(config)), flatten(config_to_dict(RunConfig()))
    wanted.update(reading)
    return [part for field in CARRIED_FIELDS if wanted[field] != defaults[field]
            for part in (f"--{field}", flag_value(wanted[field]))]


def flag_value(value: Any) -> str:
    """A field flag's value that reads back as `value` (flags are read as YAML): plain where YAML keeps it as
    written, JSON otherwise ('["title", "body"]', '"0"', 'true')."""
    import json

    import yaml

    if isinstance(value, str) and value.strip() and yaml.safe_load(value) == value:
        return value
    return json.dumps(list(value) if isinstance(value, tuple) else value)
