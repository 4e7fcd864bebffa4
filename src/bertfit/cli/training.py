"""`bertfit train | distill | search | stack`: the commands that fine-tune models (and fit what goes with them)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bertfit.cli import EXIT_INTERRUPTED
from bertfit.cli.evaluation import kept_validation, summary
from bertfit.errors import BertfitError, brief

if TYPE_CHECKING:
    from bertfit.training.plan import RunPlan
    from bertfit.training.recipe import TrainResult

QUICK_CHECK_ROWS = 1000  # the ONNX copy is fp32: it matches PyTorch to rounding, a short check confirms it


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="fine-tune a model into runs/NAME",
                                description="Any config field can be given as a flag: --train.lr 3e-5, --data.train x.csv. "
                                            "Run `bertfit config` to list them.")
    train.add_argument("--config", type=Path, help="YAML config file (fields as in `bertfit config`)")
    train.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run from its checkpoint")
    train.add_argument("--init-from", metavar="RUN", help="start from RUN's weights; its labels keep their ids and "
                                                          "new labels get new head rows (same as --model.init_from)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    train.add_argument("--plan", action="store_true", help="read the data, print the run's plan (every setting, its "
                                                           "stages and their estimated time here) and stop")
    train.add_argument("--quiet", action="store_true", help="log warnings only")
    train.set_defaults(handler=_train)

    distill = commands.add_parser("distill", help="train a student model on a teacher run's softened probabilities",
                                  description="The student is an ordinary run (evaluate, export, serve; resume it with "
                                              "bertfit train --resume). Field flags change its config: --train.lr 1e-4.")
    distill.add_argument("teacher", type=Path, metavar="TEACHER_RUN", help="the trained teacher's run directory")
    distill.add_argument("--student", required=True, help="the student's model.name: a registry name (minilm-l3), "
                                                          "folder or hub name; static: token vectors distilled from the "
                                                          "teacher's encoder (model2vec) and a linear head, run in NumPy")
    distill.add_argument("--unlabelled", metavar="FILE", help="unlabelled texts the teacher labels for the student")
    distill.add_argument("--temperature", type=float, help="softening temperature (default 2)")
    distill.add_argument("--alpha", type=float, help="weight of the teacher on labelled rows (default 0.5)")
    distill.add_argument("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    distill.add_argument("--quiet", action="store_true", help="log warnings only")
    distill.set_defaults(handler=_distill)

    search = commands.add_parser("search", help="hyperparameter search (Optuna): many trials of one config",
                                 description="Field flags (--train.epochs 2) change the base config of every trial.")
    search.add_argument("--config", type=Path, help="base YAML config of every trial")
    search.add_argument("--space", required=True, help="search space YAML, or a preset: lr-grid, lr-range")
    search.add_argument("--trials", type=int, default=10, help="trials to run in this process (default: 10)")
    search.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///runs/search.db (default) or "
                                          "postgresql://user@host/db to share a study between machines")
    search.add_argument("--study-name", help="study to create or join (default: the config's name, else 'search')")
    search.add_argument("--sampler", default="auto", choices=("auto", "tpe", "random", "grid"),
                        help="auto (grid for all-choice spaces, else tpe), tpe, random, grid")
    search.add_argument("--pruner", default="median", choices=("median", "asha", "none"),
                        help="median, asha (successive halving) or none")
    search.add_argument("--seed", type=int, help="sampler seed (default: unseeded, so several machines differ)")
    search.add_argument("--quiet", action="store_true", help="log warnings only")
    search.set_defaults(handler=_search)

    stack = commands.add_parser("stack", help="add a stacked ensemble (model + TF-IDF, weighted on validation) to a run",
                                description="Fits TF-IDF + logistic regression on the run's train split and mixes its "
                                            "probabilities with the model's at the weight best on validation "
                                            "(train.metric; never worse there than either part). predict, serve, "
                                            "evaluate and a new export use it; train.stack auto does this at the end "
                                            "of training when TF-IDF wins.")
    stack.add_argument("run", type=Path, help="a finished run directory")
    stack.add_argument("--device", default="auto", help="where the model scores the validation and test texts")
    stack.add_argument("--batch-size", type=int, default=128)
    stack.add_argument("--quiet", action="store_true", help="log warnings only")
    stack.set_defaults(handler=_stack)


def _train(args: argparse.Namespace, overrides: list[str]) -> int:
    from bertfit.config import load_config
    from bertfit.training.recipe import plan_run, train

    if args.resume is not None:
        if args.config is not None or overrides or args.plan:
            raise BertfitError("--resume continues a run with its saved config and plan; drop --config, --plan and "
                               "field flags")
        return _finished(train(resume=args.resume))
    if args.init_from is not None:
        overrides = [*overrides, "--model.init_from", str(args.init_from)]
    config = load_config(args.config, overrides)
    if args.plan:
        return _print_plan(plan_run(config), args, overrides)
    return _finished(train(config, overwrite=args.overwrite))


def _print_plan(plan: RunPlan, args: argparse.Namespace, overrides: list[str]) -> int:
    """The plan, its notes, and the command that starts it."""
    import shlex

    print("\n".join(plan.lines() + [f"note: {note}" for note in plan.notes]))
    command = ["bertfit", "train", *(["--config", str(args.config)] if args.config else []), *overrides,
               *(["--overwrite"] if args.overwrite else [])]
    if plan.encoder:  # model.name auto: the command starts what was planned, not a new choice on new timings
        command += ["--model.name", plan.config.model.name]
        if plan.config.train.method == "standard" and "--train.method" not in overrides:
            command += ["--train.method", "standard"]
    print(f"start it with: {shlex.join(command)}")
    return 0


def _distill(args: argparse.Namespace, overrides: list[str]) -> int:
    from bertfit.training.distill import distill_config
    from bertfit.training.recipe import train

    for field in ("unlabelled", "temperature", "alpha"):
        if getattr(args, field) is not None:
            overrides = [*overrides, f"--distill.{field}", str(getattr(args, field))]
    if args.student == "static":
        return _print_static(args.teacher, overrides, args.overwrite)
    return _print_result(train(distill_config(args.teacher, args.student, overrides), overwrite=args.overwrite))


def _print_static(teacher: Path, overrides: list[str], overwrite: bool) -> int:
    from bertfit.training.static import distill_static

    result = distill_static(teacher, overrides, overwrite)
    print(f"run: {result.run_dir} (static student: predicts in NumPy; backend static)")
    print(f"training: {result.train_seconds:.1f} s")
    if result.validation:
        print("validation: " + summary(result.validation))
    if result.accuracy_loss_points is not None:
        print(f"validation accuracy: {result.validation['accuracy']:.4f}, teacher {result.teacher_accuracy:.4f} "
              f"({-result.accuracy_loss_points:+.2f} points against the teacher)")
    if result.test is not None:
        print("test: " + summary(result.test))
    if result.warning:
        print(f"warning: {result.warning}")
    return 0


def _finished(result: TrainResult) -> int:
    code = _print_result(result)
    if code == 0:
        _onnx_copy(result)
    return code


def _onnx_copy(result: TrainResult) -> None:
    """After a finished run (train.onnx_copy): the checked fp32 ONNX copy predict and serve start from in about a
    second; on the main process only, and never where it cannot be written (said, not failed)."""
    import importlib.util
    import os

    from bertfit import artifacts

    if int(os.environ.get("RANK", "0")) != 0:
        return
    config = artifacts.read_run_config(result.run_dir)
    if not config.train.onnx_copy:
        return
    if config.data.multi_label or importlib.util.find_spec("onnxruntime") is None:
        why = "multi-label runs are not exported" if config.data.multi_label else "onnxruntime is not installed"
        print(f"no ONNX copy ({why}): predict and serve load PyTorch, which takes several seconds to start")
        return
    from bertfit.deploy.export import export_run

    print("writing the fp32 ONNX copy predict and serve start from (train.onnx_copy false skips it) ...")
    try:
        meta = export_run(result.run_dir, int8=False, max_rows=QUICK_CHECK_ROWS)
    except (BertfitError, RuntimeError, ValueError) as error:  # the run is trained and saved whatever happens here
        print(f"no ONNX copy ({brief(error)}): predict and serve load PyTorch; `bertfit export` tries again")
        return
    check = meta.check["onnx-fp32"]
    print(f"ONNX copy: {result.run_dir / artifacts.EXPORT_DIR} (accuracy {check['accuracy_change_points']:+.2f} points "
          f"against PyTorch on {meta.check['rows']} held-out rows); faster variants: bertfit export {result.run_dir} "
          "--target auto")


def _print_result(result: TrainResult) -> int:
    if result.interrupted:
        where = f"after step {result.steps}" if result.steps else "in the contrastive encoder stage"  # before the loop
        print(f"interrupted {where}; resume with: bertfit train --resume {result.run_dir}")
        return EXIT_INTERRUPTED
    print(f"run: {result.run_dir}")
    print(f"training: {result.train_seconds:.1f} s, {result.samples_per_second:.1f} samples/s")
    if result.validation:
        print(kept_validation(result))
    else:
        print(f"no validation rows held out: the last weights (step {result.best_step}) are kept"
              + ("" if result.test is not None else f"; score them with: bertfit evaluate {result.run_dir} --data TEST_FILE"))
    if result.test is not None:
        print("test: " + summary(result.test))
    if result.overfitting_warning:
        print(f"warning: {result.overfitting_warning}")
    if result.stack is not None:
        print(stack_lines(result.stack, result.run_dir))
    if result.test and "forgetting_points" in result.test:
        test = result.test
        print(f"earlier labels: accuracy {test['accuracy/old_labels_before']:.4f} before, {test['accuracy/old_labels']:.4f} "
              f"after ({test['forgetting_points']:+.2f} points forgotten); new labels: "
              f"{test.get('accuracy/new_labels', float('nan')):.4f}")
    return 0


def _stack(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.training.stack import build_stack

    if args.batch_size < 1:
        raise BertfitError(f"batch_size: must be >= 1, got {args.batch_size}")
    print(stack_lines(build_stack(args.run, args.device, args.batch_size), args.run))
    return 0


def stack_lines(record: dict, run_dir: Path) -> str:
    """What a stack record says: the parts and the mix on validation (and test), and what to run."""
    from bertfit.metrics import MIN_VALIDATION_ROWS, is_improvement
    from bertfit.training.stack import stack_advice

    validation, metric, weight = record["validation"], record["metric"], record["model_weight"]
    if not record["built"]:
        tfidf_wins = is_improvement(metric, validation["tfidf"][metric], validation["model"][metric])
        hint = f"; TF-IDF wins: {stack_advice(run_dir, record.get('validation_rows', MIN_VALIDATION_ROWS))}" \
            if tfidf_wins else ""
        return f"TF-IDF + logistic regression on validation: {summary(validation['tfidf'])}; no stack{hint}"
    lines = [f"stack: {weight:.2f} x model + {1 - weight:.2f} x TF-IDF (weight chosen on validation {metric}); "
             "predict, serve, evaluate and export use it"]
    for split in ("validation", "test"):
        if record.get(split):
            lines.append(f"  {split}: " + "; ".join(f"{part} {summary(record[split][part])}"
                                                     for part in ("model", "tfidf", "stack")))
    return "\n".join(lines)


def _search(args: argparse.Namespace, overrides: list[str]) -> int:
    from bertfit.config import load_config
    from bertfit.training.search import load_space, run_search

    config = load_config(args.config, overrides)
    result = run_search(config, load_space(args.space), args.trials, storage=args.storage, study_name=args.study_name,
                        sampler=args.sampler, pruner=args.pruner, seed=args.seed)
    print(f"study {result.study_name} ({result.storage}): " + ", ".join(f"{n} {k.lower()}" for k, n in result.states.items()))
    print(f"results: {result.table}")
    if result.best_config is None:
        print("no trial completed")
        return 1
    print(f"best {config.train.metric} {result.best_value:.4f} with {result.best_params}; config: {result.best_config}")
    return 0
