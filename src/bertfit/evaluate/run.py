"""Evaluate a trained run on labelled data: `evaluate_run("runs/x")`, or other data: `evaluate_run("runs/x", "ag_news")`.

Writes RUN/eval/<name>.json (headline metrics) and the folder RUN/eval/<name>/, where <name> is the split for the
run's own data (eval/test/) and names other data after itself (eval/ag_news-test/, eval/holdout/: see
evaluate.outputs), so evaluating other data never overwrites the run's own results:
    metrics.json      accuracy, precision/recall/F1 (macro, weighted, per class), loss, ECE, confusion
                      matrix, most-confused pairs, calibration (T, ECE before/after), baselines, timings
    confusion.png     counts and normalised by true class
    curves.png        train vs validation loss, validation accuracy/F1 per evaluation (from metrics.jsonl)
    reliability.png   reliability diagram before and after temperature scaling
    errors.csv        misclassified texts: true, predicted, confidence; most confident mistakes first
Multi-label runs write their own kind of each (evaluate.multilabel). Labels are matched by name (data.labels).

These describe the fine-tuned model. A run with a stacked ensemble (bertfit.infer.stack) also gets `stack`:
its weight and the scores of the stack and of both parts on the same rows (what predict and serve give).
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertfit import artifacts
from bertfit.atomic import atomic_file, check_confined, write_json_atomic
from bertfit.config import override
from bertfit.data.labels import map_labels, multi_hot
from bertfit.data.read import RawSplit, read_split
from bertfit.data.splits import Split, load_dataset
from bertfit.errors import BertfitError, require
from bertfit.evaluate import plots
from bertfit.evaluate.calibration import fit_temperature
from bertfit.evaluate.multilabel import write_multi_label_outputs
from bertfit.evaluate.outputs import Scored, drop_stale, evaluation_folder, evaluation_name, is_own_data, own_data
from bertfit.infer.engine import InferenceContext, text_logits
from bertfit.infer.predictor import Predictor
from bertfit.infer.stack import open_stack
from bertfit.metrics import (
    MIN_VALIDATION_ROWS,
    cross_entropy,
    expected_calibration_error,
    full_report,
    overfitting_warning,
    reliability_bins,
    softmax,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationSettings:
    """What `evaluate_run` computes besides the metrics, and how (see evaluate_run)."""

    batch_size: int = 128
    device: str = "auto"
    max_rows: int | None = None  # evaluate only the first N rows
    # Fit a temperature on the run's validation split and store it in model/bertfit.json (predict and serve use it).
    # None: only when evaluating the run's own data, so scoring other data never changes the model unasked.
    calibrate: bool | None = None
    baselines: bool = True  # also score majority class, TF-IDF + logistic regression and the untrained model
    figures: bool = True
    # data.* fields read in place of the run's own for this data (its columns differ): {"data.label_column": "topic"}
    data_fields: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.max_rows is not None and self.max_rows < 1:
            raise BertfitError(f"max_rows: must be >= 1 (leave it out to evaluate every row), got {self.max_rows}")


@dataclass(frozen=True)
class _Scorer:
    """The run's trained PyTorch model and how to run it (metrics describe it; the export checks itself)."""

    loaded: artifacts.LoadedModel
    context: InferenceContext

    def logits(self, texts: list[str], model: Any = None) -> np.ndarray:
        """Raw logits (temperature not applied) of `texts`, in order; `model`: another of the same layout."""
        loaded = self.loaded
        model = (model or loaded.model).to(self.context.device)
        return text_logits(model, loaded.tokenizer, loaded.meta, texts, self.context).astype(np.float64)


@dataclass(frozen=True)
class _StaticScorer:
    """A static student (bertfit.infer.static): the Predictor's NumPy backend, the path predict and serve take."""

    loaded: artifacts.LoadedModel
    predictor: Any

    def logits(self, texts: list[str], model: Any = None) -> np.ndarray:
        return self.predictor.logits(texts).astype(np.float64)


def _scorer(run_dir: Path, options: EvaluationSettings) -> _Scorer | _StaticScorer:
    if artifacts.read_model_meta(run_dir).static is not None:
        predictor = Predictor(run_dir, batch_size=options.batch_size)
        return _StaticScorer(artifacts.LoadedModel(None, predictor.tokenizer, predictor.meta), predictor)
    loaded = artifacts.load_model(run_dir)
    return _Scorer(loaded, InferenceContext.create(loaded.tokenizer.pad_token_id, options.batch_size, options.device))


def evaluate_run(run_dir: str | Path, data: Any = None, split: str = "test", **settings: Any) -> dict[str, Any]:
    """Metrics of the run's best model on `data` (a file, preset, hub name or table; default: the run's own `split`),
    read with the run's column mapping and matched by name to its label set, plus the files listed in the module
    docstring. `settings` are the fields of EvaluationSettings (batch_size, device, max_rows, calibrate, baselines,
    figures). The result names its folder under RUN/eval/ (`evaluation`) and the files written there (`files`)."""
    require("eval", "bertfit evaluate", "sklearn", "matplotlib")
    options = EvaluationSettings(**settings)
    run_dir = Path(run_dir)
    config = artifacts.read_run_config(run_dir)
    spec = data if data is not None else own_data(config, split)
    if spec is None:
        held = "; its validation rows were split off data.train" if split == "validation" else ""
        raise BertfitError(f"{run_dir}: the run has no {split} data of its own (data.{split} is unset{held}); "
                           "pass data (a file, preset or hub name)")
    name, own = evaluation_name(config, data, split), is_own_data(config, data, split)
    out = check_confined(evaluation_folder(run_dir, name))  # before any work: a link in the run never leads a write out
    scorer = _scorer(run_dir, options)
    loaded = scorer.loaded
    # The run's columns and label_map (or data_fields in their place); labels matched by name below.
    reading = override(config, options.data_fields).data if options.data_fields else config.data
    part = read_split(spec, split, reading)
    texts = part.texts[:options.max_rows] if options.max_rows else part.texts
    start = time.perf_counter()
    if loaded.meta.multi_label:
        labels = np.asarray(multi_hot(part, loaded.labels, config.data.label_separator)[: len(texts)])
        if options.calibrate:
            log.info("not calibrated: a multi-label run's labels have cut-offs of their own (tuned on validation)")
        result, written = _multi_label(run_dir, out, Scored(texts, labels, scorer.logits(texts), loaded.meta.labels),
                                       config.data.label_separator, options.figures)
        result["timings"] = {"predict_and_report_seconds": round(time.perf_counter() - start, 3)}
    else:
        labels = np.asarray(map_labels(part, loaded.labels)[: len(texts)])
        logits = scorer.logits(texts)
        predicted = time.perf_counter() - start
        calibrate = own if options.calibrate is None else options.calibrate
        result, written = _single_label(run_dir, out, scorer, Scored(texts, labels, logits, loaded.meta.labels),
                                        options, calibrate)
        result["timings"] = {"predict_seconds": round(predicted, 3), **result["timings"]}
    result = {**_provenance(part, split, len(texts)), "evaluation": name, **result, "files": ["metrics.json", *written]}
    drop_stale(out, result["files"])
    write_json_atomic(out / "metrics.json", result)
    headline = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    write_json_atomic(run_dir / "eval" / f"{name}.json", headline)
    return result


def _multi_label(run_dir: Path, out: Path, scored: Scored, separator: str,
                 figures: bool) -> tuple[dict[str, Any], list[str]]:
    """Multi-label runs: 0/1 label rows scored at the thresholds tuned on validation (evaluate.multilabel)."""
    meta = artifacts.read_model_meta(run_dir)
    report, written = write_multi_label_outputs(out, scored, meta, separator, figures)
    report.update(_stack_scores(run_dir, meta, scored.texts, scored.logits, scored.labels))
    return report, written


def _single_label(run_dir: Path, out: Path, scorer: _Scorer | _StaticScorer, scored: Scored, options: EvaluationSettings,
                  calibrate: bool) -> tuple[dict[str, Any], list[str]]:
    """Calibration (when `calibrate`), metrics, errors.csv, figures, the stack's scores and the baselines."""
    timings: dict[str, float] = {}
    config, meta = artifacts.read_run_config(run_dir), scorer.loaded.meta
    # --max-rows bounds the whole evaluation: the validation rows calibration fits on and the baselines' training rows too
    dataset = load_dataset(config.data, config.train.seed) if (calibrate or options.baselines) else None
    calibration, skipped, temperature = None, None, meta.temperature
    if calibrate:
        start = time.perf_counter()
        validation = dataset.splits["validation"].head(options.max_rows) if "validation" in dataset.splits else None
        skipped = _too_few(validation, options.max_rows)
        if skipped is None:
            calibration = _calibrate(run_dir, scorer, validation, scored.logits, scored.labels)
            temperature = calibration["temperature"]
            timings["calibration_seconds"] = time.perf_counter() - start
        else:
            log.info("not calibrated: %s; the stored temperature %.3f is kept", skipped, temperature)
    elif options.calibrate is None:
        skipped = "other data: a temperature is fitted on evaluating the run's own data, or when asked (--calibrate)"
    start = time.perf_counter()
    result: dict[str, Any] = {"temperature": temperature, **({"calibration_skipped": skipped} if skipped else {})}
    report, written = _write_outputs(out, scored, temperature, calibration, options.figures)
    result.update(report)
    timings["report_seconds"] = time.perf_counter() - start
    result.update(_stack_scores(run_dir, meta, scored.texts, scored.logits, scored.labels))
    if options.baselines:
        start = time.perf_counter()
        train = dataset.splits["train"].head(options.max_rows)
        result["baselines"] = _baselines(scorer, config.train.seed, train, scored.texts, scored.labels)
        result["baselines_trained_on"] = f"{train.source} ({len(train)} rows)"
        timings["baselines_seconds"] = time.perf_counter() - start
    result["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return result, written


def _too_few(validation: Split | None, max_rows: int | None) -> str | None:
    """Why no temperature is fitted on `validation`, or None: it needs MIN_VALIDATION_ROWS rows, as every choice made
    on validation does (a temperature fitted on 40 rows fits their noise, and would change every later prediction)."""
    if validation is None or not len(validation):
        return "the run held out no validation rows to fit a temperature on (data.validation_fraction 0)"
    if len(validation) < MIN_VALIDATION_ROWS:
        bound = f" (max_rows {max_rows} bounds them)" if max_rows is not None and len(validation) == max_rows else ""
        return (f"{len(validation)} validation rows{bound} are too few to fit a temperature on "
                f"(at least {MIN_VALIDATION_ROWS})")
    return None


def _provenance(part: RawSplit, split: str, rows: int) -> dict[str, Any]:
    """What every evaluation's figures carry: data source, split, rows scored and rows the source holds."""
    return {"data": part.source, "split": split, "rows": rows, "source_rows": len(part.texts),
            "sliced": rows < len(part.texts)}


def _stack_scores(run_dir: Path, meta: Any, texts: list[str], logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """{"stack": weight, validation record, scores of model / tfidf / stack on these rows}, or {} without a stack."""
    stack = open_stack(artifacts.model_folder(run_dir), meta)
    if stack is None:
        return {}
    scores = stack.scores(texts, logits, labels, meta)
    log.info("stack (%.2f x model + %.2f x TF-IDF): accuracy %.4f (model %.4f, TF-IDF %.4f)", stack.meta.model_weight,
             1 - stack.meta.model_weight, scores["stack"]["accuracy"], scores["model"]["accuracy"],
             scores["tfidf"]["accuracy"])
    return {"stack": {"model_weight": stack.meta.model_weight, "metric": stack.meta.metric,
                      "validation": stack.meta.validation, "scores": scores}}


def _write_outputs(out: Path, scored: Scored, temperature: float, calibration: dict | None,
                   figures: bool) -> tuple[dict[str, Any], list[str]]:
    """metrics (with calibration and the overfitting check), errors.csv and the figures; returns the metrics and the
    names of the files written."""
    report = full_report(scored.logits / temperature, scored.labels, scored.names)
    if calibration:
        report["calibration"] = calibration
    history = artifacts.read_metrics(out.parent.parent)
    report["overfitting_warning"] = overfitting_warning(history)
    if report["overfitting_warning"]:
        log.warning("%s", report["overfitting_warning"])
    write_errors_csv(out / "errors.csv", scored.texts, scored.labels, softmax(scored.logits / temperature), scored.names)
    written = ["errors.csv"]
    if figures:
        written += _write_figures(out, report, history, scored, temperature if calibration else None)
    return report, written


def _calibrate(run_dir: Path, scorer: _Scorer | _StaticScorer, validation: Split, test_logits: np.ndarray,
               test_labels: np.ndarray) -> dict[str, Any]:
    """Fit T on validation logits, store it with the model, report ECE and loss before/after on both splits."""
    val_labels = np.asarray(validation.labels)
    val_logits = scorer.logits(validation.texts)
    temperature = fit_temperature(val_logits, val_labels)
    artifacts.update_model_meta(run_dir, temperature=temperature)  # where Predictor reads it
    summary: dict[str, Any] = {"temperature": temperature, "fitted_on": f"{validation.source} ({len(val_labels)} rows)"}
    for name, split_logits, split_labels in (("validation", val_logits, val_labels), ("test", test_logits, test_labels)):
        for when, t in (("before", 1.0), ("after", temperature)):
            summary[f"{name}_ece_{when}"] = expected_calibration_error(softmax(split_logits / t), split_labels)
            summary[f"{name}_loss_{when}"] = cross_entropy(split_logits / t, split_labels)
    log.info("temperature %.3f: test ECE %.4f -> %.4f", temperature, summary["test_ece_before"], summary["test_ece_after"])
    return summary


def write_errors_csv(path: Path, texts: list[str], labels: np.ndarray, probabilities: np.ndarray,
                     names: tuple[str, ...]) -> Path:
    """Misclassified rows, most confident first (the mistakes the model is surest about matter most)."""
    predicted = probabilities.argmax(axis=-1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    with atomic_file(path) as file:
        writer = csv.writer(file)
        writer.writerow(["row", "text", "true", "predicted", "confidence", "true_probability"])
        for row in wrong:
            writer.writerow([int(row) + 1, texts[row], names[labels[row]], names[predicted[row]],
                             f"{probabilities[row, predicted[row]]:.6f}", f"{probabilities[row, labels[row]]:.6f}"])
    return path


def _write_figures(out: Path, report: dict[str, Any], history: list[dict], scored: Scored,
                   temperature: float | None) -> list[str]:
    """confusion.png, curves.png (with a training history) and reliability.png (after temperature scaling too, when
    one was fitted); returns the names of those written."""
    names, logits, labels = tuple(report["per_class"]), scored.logits, scored.labels
    plots.confusion_png(np.asarray(report["confusion_matrix"]), names, out / "confusion.png")
    if history:
        plots.curves_png(history, out / "curves.png", report["overfitting_warning"])
    before = softmax(logits)
    after = softmax(logits / temperature) if temperature is not None else None
    plots.reliability_png(reliability_bins(before, labels), reliability_bins(after, labels) if after is not None else None,
                          out / "reliability.png", expected_calibration_error(before, labels),
                          expected_calibration_error(after, labels) if after is not None else None)
    return ["confusion.png", *(["curves.png"] if history else []), "reliability.png"]


def _baselines(scorer: _Scorer | _StaticScorer, seed: int, train: Split, texts: list[str],
               labels: np.ndarray) -> dict[str, dict[str, Any]]:
    from bertfit.evaluate.baselines import run_baselines, untrained_model

    meta = scorer.loaded.meta
    # A static student has no network whose untrained copy would mean anything.
    untrained = None if meta.static else lambda: scorer.logits(texts, untrained_model(meta, seed))
    return run_baselines(train, texts, labels, meta.labels, seed, untrained)
