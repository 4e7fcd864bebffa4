"""Fitting the stacked ensemble: TF-IDF + logistic regression on the run's train split, mixed with the
fine-tuned model's probabilities at the weight that scores best on validation (bertfit.infer.stack applies it).

The weight is searched on a grid from 0 (TF-IDF alone) to 1 (the model alone); every mix is scored on
the validation split with train.metric (multi-label: at cut-offs tuned for that mix), so the stack is
never worse on validation than either part, and a tie keeps the weight nearer the model. At the end of
training `train.stack` decides: auto builds the stack when TF-IDF beats the model on validation, always
builds it, never only reports; `bertfit stack RUN` (`build_stack`) builds it for a finished run. A weight
is chosen on 100 validation rows or more (metrics.MIN_VALIDATION_ROWS), by auto and by `bertfit stack` alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertfit import artifacts
from bertfit.atomic import write_json_atomic
from bertfit.config import RunConfig
from bertfit.data.labels import LabelMap
from bertfit.data.splits import Split, TextDataset, load_dataset
from bertfit.errors import BertfitError
from bertfit.infer.engine import InferenceContext, text_logits
from bertfit.infer.stack import STACK_DIR, STACK_FILE, Stack, mix, model_probabilities, summary
from bertfit.infer.tfidf import TfidfModel, fit_tfidf
from bertfit.meta import ModelMeta, StackMeta
from bertfit.metrics import MIN_VALIDATION_ROWS, is_improvement, probability_metrics, tune_thresholds

log = logging.getLogger(__name__)

WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)  # model weights tried: 0, 0.05, ..., 1


@dataclass(frozen=True)
class WeightChoice:
    """The model weight chosen on validation, the metrics of both parts and of the mix, their cut-offs (multi-label)."""

    model_weight: float
    validation: dict[str, dict[str, float]]  # model, tfidf, stack -> metrics
    thresholds: dict[str, np.ndarray | None]  # model, tfidf, stack -> cut-offs tuned on validation (multi-label)


def choose_weight(model: np.ndarray, tfidf: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
                  metric: str) -> WeightChoice:
    """The weight w of p = w * model + (1 - w) * tfidf that scores best on `labels` by `metric`."""
    labels = np.asarray(labels)
    scored = {float(w): _score(mix(model, tfidf, float(w)), labels, names) for w in WEIGHTS[::-1]}
    best = 1.0
    for weight, (metrics, _) in scored.items():  # the model alone first: another weight must be strictly better
        if is_improvement(metric, metrics[metric], scored[best][0][metric]):
            best = weight
    parts = {"model": 1.0, "tfidf": 0.0, "stack": best}
    return WeightChoice(best, {part: summary(scored[w][0]) for part, w in parts.items()},
                        {part: scored[w][1] for part, w in parts.items()})


def _score(probabilities: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> tuple[dict, np.ndarray | None]:
    thresholds = tune_thresholds(probabilities, labels) if labels.ndim == 2 else None
    return probability_metrics(probabilities, labels, names, thresholds), thresholds


@dataclass(frozen=True)
class StackInputs:
    """What fitting a stack reads: the run's splits in the model's label order and the model's raw document
    logits on validation (and test)."""

    splits: dict[str, Split]
    logits: dict[str, np.ndarray]
    names: tuple[str, ...]
    multi_label: bool


def fit_stack(inputs: StackInputs, metric: str, seed: int, temperature: float) -> tuple[TfidfModel, WeightChoice]:
    """TF-IDF fitted on train, the weight chosen on validation (the model part at `temperature`)."""
    train, validation = inputs.splits["train"], inputs.splits["validation"]
    tfidf = fit_tfidf(train.texts, np.asarray(train.labels), len(inputs.names), seed, inputs.multi_label)
    model = model_probabilities(inputs.logits["validation"], temperature, inputs.multi_label)
    choice = choose_weight(model, tfidf.proba(validation.texts), np.asarray(validation.labels), inputs.names, metric)
    return tfidf, choice


def write_stack(run_dir: Path, names: tuple[str, ...], tfidf: TfidfModel, choice: WeightChoice, temperature: float,
                metric: str) -> ModelMeta:
    """model/stack/tfidf.npz and the stack record in model/bertfit.json (the file first: a crash leaves no record
    pointing at a missing file); returns the model's metadata with the stack."""
    tfidf.save(artifacts.model_folder(run_dir) / STACK_DIR / STACK_FILE)

    def cuts(part: str) -> dict[str, float] | None:
        found = choice.thresholds[part]
        return None if found is None else dict(zip(names, map(float, found)))

    stack = StackMeta(f"{STACK_DIR}/{STACK_FILE}", choice.model_weight, temperature, metric, choice.validation,
                      cuts("stack"), cuts("tfidf"))
    return artifacts.update_model_meta(run_dir, stack=stack)


def drop_stack(run_dir: Path) -> ModelMeta:
    """Remove a stack left by an earlier finish of this run (a resumed run decides afresh); returns the model's
    metadata without it."""
    meta = artifacts.read_model_meta(run_dir)
    if meta.stack is None:
        return meta
    without = artifacts.update_model_meta(run_dir, stack=None)  # the record first: none points at a missing file
    (artifacts.model_folder(run_dir) / meta.stack.file).unlink(missing_ok=True)
    return without


def _record(inputs: StackInputs, tfidf: TfidfModel, choice: WeightChoice, metric: str,
            built: ModelMeta | None) -> dict[str, Any]:
    """results.json's `stack`: the weight, validation metrics of the parts and the mix, and, when `built` (the
    model's metadata with the stack), test metrics."""
    record: dict[str, Any] = {"built": built is not None, "metric": metric, "model_weight": choice.model_weight,
                              "validation": choice.validation, "validation_rows": len(inputs.splits["validation"])}
    if built is not None and "test" in inputs.logits:
        test = inputs.splits["test"]
        record["test"] = Stack(built.stack, tfidf, inputs.multi_label).scores(test.texts, inputs.logits["test"],
                                                                              np.asarray(test.labels), built)
    return record


def stack_at_end_of_training(run_dir: Path, config: RunConfig, dataset: TextDataset,
                             logits: dict[str, np.ndarray]) -> dict[str, Any]:
    """results.json's `tfidf_validation` and `stack` after training; builds the stack as train.stack says."""
    problem = _unsupported(config, dataset)
    meta = drop_stack(run_dir)
    if problem is not None:
        (log.warning if config.train.stack == "always" else log.info)("no TF-IDF reference or stack: %s", problem)
        return {"tfidf_validation": None, "stack": None}
    inputs = StackInputs(dataset.splits, logits, dataset.labels.names, config.data.multi_label)
    metric, temperature = config.train.metric, meta.temperature
    try:
        tfidf, choice = fit_stack(inputs, metric, config.train.seed, temperature)
    except BertfitError as error:  # scikit-learn missing, or no words to fit on
        (log.warning if config.train.stack == "always" else log.info)("no TF-IDF reference or stack: %s", error)
        return {"tfidf_validation": None, "stack": None}
    wins = is_improvement(metric, choice.validation["tfidf"][metric], choice.validation["model"][metric])
    # auto decides only on MIN_VALIDATION_ROWS validation rows or more: on a few-shot run's handful, "TF-IDF wins" and
    # the weight are noise (2 rows a class tie at 50%), so there the user asks for a stack with `bertfit stack`.
    enough = len(dataset.splits["validation"].texts) >= MIN_VALIDATION_ROWS
    built = config.train.stack == "always" or (config.train.stack == "auto" and wins and enough)
    if config.train.stack == "auto" and wins and not enough:
        log.info("train.stack auto: not built, %d validation rows are too few to choose a stack's weight on (at least "
                 "%d)", len(dataset.splits["validation"].texts), MIN_VALIDATION_ROWS)
    with_stack = write_stack(run_dir, inputs.names, tfidf, choice, temperature, metric) if built else None
    _say(stack_advice(run_dir, len(dataset.splits["validation"].texts)), config.train.stack, wins, built, choice, metric)
    return {"tfidf_validation": choice.validation["tfidf"], "stack": _record(inputs, tfidf, choice, metric, with_stack)}


def _unsupported(config: RunConfig, dataset: TextDataset) -> str | None:
    if config.distill.teacher is not None:
        return "distill.teacher: the training split holds the teacher's targets; add a stack with `bertfit stack RUN`"
    if "validation" not in dataset.splits or not dataset.splits["validation"].texts:
        return "no validation rows to compare the model with TF-IDF on (data.validation_fraction 0: every row trained)"
    if "train" not in dataset.splits:
        return "data.streaming: the training split is not held in memory to fit TF-IDF on"
    return None


def stack_advice(run_dir: Path, validation_rows: int) -> str:
    """What to run for a stack the run did not build: `bertfit stack RUN`, or, below MIN_VALIDATION_ROWS validation rows
    (where `bertfit stack` refuses), what to train with instead."""
    if validation_rows >= MIN_VALIDATION_ROWS:
        return f"`bertfit stack {run_dir}` adds a stacked ensemble"
    return (f"a stacked ensemble needs at least {MIN_VALIDATION_ROWS} validation rows to choose its weight on (this run "
            f"has {validation_rows}): hold out more with data.validation or data.validation_fraction")


def _say(advice: str, mode: str, wins: bool, built: bool, choice: WeightChoice, metric: str) -> None:
    """The end-of-training message: what TF-IDF scored, what was built and what to run (`advice`: stack_advice)."""
    model, tfidf, stack = (choice.validation[part][metric] for part in ("model", "tfidf", "stack"))
    mixed = f"{choice.model_weight:.2f} x model + {1 - choice.model_weight:.2f} x TF-IDF, validation {metric} {stack:.4f}"
    if wins:
        done = (f"built a stacked ensemble ({mixed}), which predict, serve, evaluate and export use (train.stack never "
                "turns this off)") if built else f"{advice} ({mixed})"
        log.warning("TF-IDF + logistic regression beats the fine-tuned model on validation (%s %.4f vs %.4f): %s; the "
                    "model itself may gain from more epochs, longer texts (model.max_length, windows) or a larger model",
                    metric, tfidf, model, done)
    elif built:
        log.info("stacked ensemble built (train.stack %s): %s (model %.4f, TF-IDF %.4f)", mode, mixed, model, tfidf)
    else:
        log.info("TF-IDF + logistic regression on validation: %s %.4f (model %.4f); no stack", metric, tfidf, model)


def build_stack(run_dir: str | Path, device: str = "auto", batch_size: int = 128) -> dict[str, Any]:
    """Fit a stack for a finished run (whoever wins on validation), write it with the model, update results.json."""
    run_dir = Path(run_dir)
    config = artifacts.read_run_config(run_dir)
    results = artifacts.read_results(run_dir)
    if not results:
        raise BertfitError(f"{run_dir}: training has not finished (no {artifacts.RESULTS_FILE}); "
                           f"finish it with `bertfit train --resume {run_dir}` first")
    if config.data.streaming:
        raise BertfitError("data.streaming: a streamed run's training split is not held in memory to fit TF-IDF on; "
                           "a stack needs the training file read whole")
    loaded = artifacts.load_model(run_dir)
    dataset = load_dataset(config.data, config.train.seed)
    if "validation" not in dataset.splits:
        raise BertfitError(f"{run_dir}: the run held out no validation rows (data.validation_fraction 0), and a stack's "
                           "weight is chosen on them; train again with data.validation_fraction (e.g. 0.2) or "
                           "data.validation")
    rows = len(dataset.splits["validation"])
    if rows < MIN_VALIDATION_ROWS:  # the rule train.stack auto follows: a weight chosen on fewer fits their noise
        raise BertfitError(f"{run_dir}: {rows} validation rows are too few to choose a stack's weight on (at least "
                           f"{MIN_VALIDATION_ROWS}, as train.stack auto asks); train again with more held-out rows "
                           "(data.validation, or a larger data.validation_fraction)")
    splits = {name: in_model_order(split, dataset.labels, loaded.meta.labels) for name, split in dataset.splits.items()}
    context = InferenceContext.create(loaded.tokenizer.pad_token_id, batch_size, device)
    logits = {name: text_logits(loaded.model, loaded.tokenizer, loaded.meta, splits[name].texts, context)
              for name in ("validation", "test") if name in splits}
    inputs = StackInputs(splits, logits, loaded.meta.labels, loaded.meta.multi_label)
    tfidf, choice = fit_stack(inputs, config.train.metric, config.train.seed, loaded.meta.temperature)
    with_stack = write_stack(run_dir, loaded.meta.labels, tfidf, choice, loaded.meta.temperature, config.train.metric)
    record = _record(inputs, tfidf, choice, config.train.metric, with_stack)
    write_json_atomic(run_dir / artifacts.RESULTS_FILE, {**results, "tfidf_validation": choice.validation["tfidf"],
                                                         "stack": record})
    if artifacts.export_folder(run_dir) is not None:
        log.warning("%s/export predates the stack and is no longer used; re-run `bertfit export %s`", run_dir, run_dir)
    return record


def in_model_order(split: Split, labels: LabelMap, names: tuple[str, ...]) -> Split:
    """`split` with its label ids (or multi-hot columns) renumbered from the data's label order to the model's
    (model.init_from can give earlier labels their earlier ids)."""
    if tuple(labels.names) == tuple(names):
        return split
    unknown = sorted(set(labels.names) - set(names))
    if unknown:
        raise BertfitError(f"the run's data has labels the model does not know: {unknown[:5]}; train the run again")
    position = np.array([names.index(name) for name in labels.names])
    values = np.asarray(split.labels)
    if values.ndim == 2:
        moved = np.zeros((len(values), len(names)), dtype=values.dtype)
        moved[:, position] = values
        return Split(split.name, split.source, split.texts, moved.tolist())
    return Split(split.name, split.source, split.texts, position[values].tolist())
