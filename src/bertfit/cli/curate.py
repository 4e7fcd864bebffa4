"""`bertfit audit | suggest`: the commands that make the data better (label errors, what to label next)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bertfit.cli.evaluation import kept_validation, summary
from bertfit.errors import BertfitError


def add_commands(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser(
        "audit", help="likely label errors and conflicting near-duplicates of the training data (cleanlab)",
        usage="bertfit audit [RUN | --config FILE] [--section.field VALUE ...] [options]",
        description="Out-of-fold probabilities for every training row (k-fold cross-fitting), ranked by confident "
                    "learning. Give a RUN (writes RUN/audit/) or a config and field flags (--data.train x.csv). "
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
    audit.add_argument("--name", help="--relabel: name of the new run (default: NAME-relabelled)")
    audit.add_argument("--overwrite", action="store_true", help="--relabel: replace an existing run of that name")
    audit.add_argument("--quiet", action="store_true", help="log warnings only")
    audit.set_defaults(handler=_audit)

    suggest = commands.add_parser("suggest", help="the next texts to label from an unlabelled pool: uncertain and diverse")
    suggest.add_argument("run", type=Path)
    suggest.add_argument("--pool", type=Path, required=True, help="unlabelled texts (CSV/TSV/JSON/JSONL/Parquet, the "
                                                                   "run's text column(s), no labels)")
    suggest.add_argument("--n", type=int, default=50, help="how many texts to suggest (default: 50)")
    suggest.add_argument("--out", type=Path, default=Path("suggestions.csv"), help="CSV to label (default: suggestions.csv)")
    suggest.add_argument("--device", default="auto")
    suggest.add_argument("--quiet", action="store_true", help="log warnings only")
    suggest.set_defaults(handler=_suggest)


def _audit(args: argparse.Namespace, overrides: list[str]) -> int:
    from bertfit import artifacts
    from bertfit.config import load_config
    from bertfit.curate.audit import AuditSettings, audit

    # RUN is read here, not by argparse: a positional would swallow the value of a field flag (--data.train x.csv)
    args.run = Path(overrides.pop(0)) if overrides and not overrides[0].startswith("-") else None
    if args.run is not None and (args.config is not None or overrides):
        raise BertfitError("a RUN is audited with its saved config; drop --config and field flags")
    if args.run is not None:
        config, out = artifacts.read_run_config(args.run), args.out or args.run / artifacts.AUDIT_DIR
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
    print(f"review: fill new_label in {out / artifacts.AUDIT_ISSUES}, then "
          f"bertfit audit {args.run or '--config ...'} --relabel REVIEWED.csv")
    return 0


def _relabel(config, args: argparse.Namespace, out: Path) -> int:
    from bertfit.curate.relabel import relabel_and_train

    relabelling, result = relabel_and_train(config, args.relabel, out, args.name, args.overwrite)
    print(f"relabelled {relabelling.relabelled} rows, dropped {relabelling.dropped}, confirmed "
          f"{relabelling.confirmed} as given; every change: {relabelling.changes_file}")
    print(f"corrected training data: {relabelling.train_file}")
    print(f"run: {result.run_dir}")
    print(kept_validation(result))
    if result.test is not None:
        print("test: " + summary(result.test))
    return 0


def _suggest(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.curate.suggest import suggest

    suggestions = suggest(args.run, args.pool, args.n, args.out, args.device)
    print(f"{len(suggestions)} texts to label (smallest margin {min(s.margin for s in suggestions):.3f}): {args.out}")
    print(f"fill in the label column, then train on them: bertfit train --init-from {args.run} --data.train {args.out} "
          "(or add them to the training file and retrain)")
    return 0
