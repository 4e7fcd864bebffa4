"""Evaluate a trained run on a labelled split: `evaluate_run("runs/x", "ag_news")`.

Writes RUN/eval/<split>.json (headline metrics) and the folder RUN/eval/<split>/:
    metrics.json      accuracy, precision/recall/F1 (macro, weighted, per class), loss, ECE, confusion
                      matrix, most-confused pairs, calibration (T, ECE before/after), baselines, timings
    confusion.png     counts and normalised by true class
    curves.png        train vs validation loss, validation accuracy/F1 per evaluation (from metrics.jsonl)
    reliability.png   reliability diagram before and after temperature scaling
    errors.csv        misclassified texts: true, predicted, confidence; most confident mistakes first

These describe the fine-tuned model. A run with a stacked ensemble (bertfit.infer.stack) also gets `stack`:
its weight and the scores of the stack and of both parts on the same rows (what predict and serve give).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertfit import artifacts
from bertfit.atomic import atomic_file, write_json_atomic
from bertfit.data.labels import map_labels, multi_hot
from bertfit.data.read import RawSplit, read_split
from bertfit.data.splits import Split, load_dataset
from bertfit.errors import BertfitError
from bertfit.evaluate import plots
from bertfit.evaluate.calibration import fit_temperature
from bertfit.infer.engine import InferenceContext, text_logits
from bertfit.infer.stack import open_stack
from bertfit.metrics import (
    classification_metrics,
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
    calibrate: bool = True  # fit a temperature on the run's validation split, stored in model/bertfit.json
    baselines: bool = True  # also score majority class, TF-IDF + logistic regression and the untrained model
    figures: bool = True

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


def evaluate_run(run_dir: str | Path, data: str | None = None, split: str = "test", **settings: Any) -> dict[str, Any]:
    """Metrics of the run's best model on `data` (a file, preset or hub name; default: the run's own test
    data), with the run's column mapping and label set, plus the files listed in the module docstring.
    `settings` are the fields of EvaluationSettings (batch_size, device, max_rows, calibrate, baselines, figures).
    """
    options = EvaluationSettings(**settings)
    run_dir = Path(run_dir)
    config = artifacts.read_run_config(run_dir)
    spec = data or getattr(config.data, split, None) or (config.data.train if split != "train" else None)
    if spec is None:
        raise BertfitError(f"{run_dir}: the run has no {split} data; pass data (a file, preset or hub name)")
    loaded = artifacts.load_model(run_dir)
    scorer = _Scorer(loaded, InferenceContext.create(loaded.tokenizer.pad_token_id, options.batch_size, options.device))
    part = read_split(spec, split, dataclasses.replace(config.data, label_names=loaded.meta.labels))
    texts = part.texts[:options.max_rows] if options.max_rows else part.texts
    if loaded.meta.multi_label:
        return _evaluate_multi_label(run_dir, scorer, part, texts, split, config.data.label_separator)
    labels = np.asarray(map_labels(part, loaded.labels)[: len(texts)])
    timings: dict[str, float] = {}
    start = time.perf_counter()
    logits = scorer.logits(texts)
    timings["predict_seconds"] = time.perf_counter() - start
    # --max-rows bounds the whole evaluation: the validation rows calibration fits on and the baselines' training rows too
    dataset = load_dataset(config.data, config.train.seed) if (options.calibrate or options.baselines) else None
    calibration, temperature = None, loaded.meta.temperature
    if options.calibrate and "validation" not in dataset.splits:
        log.info("not calibrated: the run held out no validation rows to fit a temperature on (data.validation_fraction 0)")
    elif options.calibrate:
        start = time.perf_counter()
        validation = dataset.splits["validation"].head(options.max_rows)
        calibration = _calibrate(run_dir, scorer, validation, logits, labels)
        temperature = calibration["temperature"]
        timings["calibration_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    result = {**_provenance(part, split, len(texts)), "temperature": temperature}
    scored = _Scored(texts, labels, logits, loaded.meta.labels)
    result.update(_write_outputs(run_dir / "eval" / split, scored, temperature, calibration, options.figures))
    timings["report_seconds"] = time.perf_counter() - start
    result.update(_stack_scores(run_dir, loaded.meta, texts, logits, labels))

    if options.baselines:
        start = time.perf_counter()
        train = dataset.splits["train"].head(options.max_rows)
        result["baselines"] = _baselines(scorer, config.train.seed, train, texts, labels)
        result["baselines_trained_on"] = f"{train.source} ({len(train)} rows)"
        timings["baselines_seconds"] = time.perf_counter() - start
    result["timings"] = {k: round(v, 3) for k, v in timings.items()}
    write_json_atomic(run_dir / "eval" / split / "metrics.json", result)
    headline = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    write_json_atomic(run_dir / "eval" / f"{split}.json", headline)
    return result


def _provenance(part: RawSplit, split: str, rows: int) -> dict[str, Any]:
    """What every evaluation's figures carry: data source, split, rows scored and rows the source holds."""
    return {"data": part.source, "split": split, "rows": rows, "source_rows": len(part.texts),
            "sliced": rows < len(part.texts)}


def _evaluate_multi_label(run_dir: Path, scorer: _Scorer, part: RawSplit, texts: list[str], split: str,
                          separator: str) -> dict[str, Any]:
    """Multi-label runs: 0/1 label rows scored at the thresholds tuned on validation (headline metrics only)."""
    meta = scorer.loaded.meta
    labels = multi_hot(part, meta.label_map, separator)[: len(texts)]
    logits = scorer.logits(texts)
    metrics = classification_metrics(logits / meta.temperature, np.asarray(labels), meta.labels, meta.label_thresholds())
    result = {**_provenance(part, split, len(texts)), **metrics,
              **_stack_scores(run_dir, meta, texts, logits, np.asarray(labels))}
    write_json_atomic(run_dir / "eval" / f"{split}.json", result)
    return result


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


@dataclass(frozen=True)
class _Scored:
    """Texts with their true label ids and the model's raw logits."""

    texts: list[str]
    labels: np.ndarray
    logits: np.ndarray
    names: tuple[str, ...]


def _write_outputs(out: Path, scored: _Scored, temperature: float, calibration: dict | None,
                   figures: bool) -> dict[str, Any]:
    """metrics (with calibration and the overfitting check), errors.csv and the figures; returns the metrics."""
    report = full_report(scored.logits / temperature, scored.labels, scored.names)
    if calibration:
        report["calibration"] = calibration
    history = artifacts.read_metrics(out.parent.parent)
    report["overfitting_warning"] = overfitting_warning(history)
    if report["overfitting_warning"]:
        log.warning("%s", report["overfitting_warning"])
    write_errors_csv(out / "errors.csv", scored.texts, scored.labels, softmax(scored.logits / temperature), scored.names)
    if figures:
        _write_figures(out, report, history, scored, temperature if calibration else None)
    return report


def _calibrate(run_dir: Path, scorer: _Scorer, validation: Split, test_logits: np.ndarray,
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


def _write_figures(out: Path, report: dict[str, Any], history: list[dict], scored: _Scored,
                   temperature: float | None) -> None:
    """confusion.png, curves.png and reliability.png (after temperature scaling too, when one was fitted)."""
    names, logits, labels = tuple(report["per_class"]), scored.logits, scored.labels
    plots.confusion_png(np.asarray(report["confusion_matrix"]), names, out / "confusion.png")
    if history:
        plots.curves_png(history, out / "curves.png", report["overfitting_warning"])
    before = softmax(logits)
    after = softmax(logits / temperature) if temperature is not None else None
    plots.reliability_png(reliability_bins(before, labels), reliability_bins(after, labels) if after is not None else None,
                          out / "reliability.png", expected_calibration_error(before, labels),
                          expected_calibration_error(after, labels) if after is not None else None)


def _baselines(scorer: _Scorer, seed: int, train: Split, texts: list[str], labels: np.ndarray) -> dict[str, dict[str, Any]]:
    from bertfit.evaluate.baselines import run_baselines, untrained_model

    meta = scorer.loaded.meta
    return run_baselines(train, texts, labels, meta.labels, seed,
                         lambda: scorer.logits(texts, untrained_model(meta, seed)))
