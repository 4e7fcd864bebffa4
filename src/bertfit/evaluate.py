"""Evaluate a trained run on a labelled split: `evaluate_run("runs/x", "ag_news")`.

Writes RUN/eval/<split>.json (headline metrics) and the folder RUN/eval/<split>/:
    metrics.json      accuracy, precision/recall/F1 (macro, weighted, per class), loss, ECE, confusion
                      matrix, most-confused pairs, calibration (T, ECE before/after), baselines, timings
    confusion.png     counts and normalised by true class
    curves.png        train vs validation loss, validation accuracy/F1 per evaluation (from metrics.jsonl)
    reliability.png   reliability diagram before and after temperature scaling
    errors.csv        misclassified texts: true, predicted, confidence; most confident mistakes first
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from bertfit import artifacts, plots
from bertfit.calibration import fit_temperature
from bertfit.data import load_dataset, map_labels, multi_hot, read_split
from bertfit.errors import BertfitError
from bertfit.metrics import (classification_metrics, cross_entropy, expected_calibration_error, full_report, overfitting_warning,
                             reliability_bins, softmax)
from bertfit.predict import Predictor, batch_logits, tokenize_like_training

log = logging.getLogger(__name__)


def evaluate_run(run_dir: str | Path, data: str | None = None, split: str = "test", batch_size: int = 128,
                 device: str = "auto", max_rows: int | None = None, calibrate: bool = True,
                 baselines: bool = True, figures: bool = True) -> dict[str, Any]:
    """Metrics of the run's best model on `data` (a file, preset or hub name; default: the run's own test
    data), with the run's column mapping and label set, plus the files listed in the module docstring.

    calibrate: fit a temperature on the run's validation split and store it in model/bertfit.json.
    baselines: also score majority class, TF-IDF + logistic regression and the untrained model.
    """
    run_dir = Path(run_dir)
    config = artifacts.read_run_config(run_dir)
    spec = data or getattr(config.data, split, None) or (config.data.train if split != "train" else None)
    if spec is None:
        raise BertfitError(f"{run_dir}: the run has no {split} data; pass --data FILE")
    # Metrics describe the trained PyTorch model; the export checks itself (export.json).
    predictor = Predictor(run_dir, device=device, batch_size=batch_size, backend="torch")
    names = predictor.labels.names
    part = read_split(spec, split, dataclasses.replace(config.data, label_names=names))
    texts = part.texts[:max_rows] if max_rows else part.texts
    if predictor.multi_label:
        return _evaluate_multi_label(run_dir, predictor, part, texts, split, batch_size)
    labels = np.asarray(map_labels(part, predictor.labels)[: len(texts)])
    timings: dict[str, float] = {}
    start = time.perf_counter()
    logits = _logits(predictor, texts, labels, batch_size)
    timings["predict_seconds"] = time.perf_counter() - start

    dataset = load_dataset(config.data, config.train.seed) if (calibrate or baselines) else None
    calibration = None
    temperature = predictor.temperature
    if calibrate:
        start = time.perf_counter()
        calibration = _calibrate(run_dir, predictor, dataset.splits["validation"], logits, labels, batch_size)
        temperature = calibration["temperature"]
        timings["calibration_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    result = {"data": part.source, "split": split, "rows": len(texts), "temperature": temperature}
    result.update(_write_outputs(run_dir / "eval" / split, texts, labels, logits, names, temperature, calibration, figures))
    timings["report_seconds"] = time.perf_counter() - start

    if baselines:
        start = time.perf_counter()
        result["baselines"] = _baselines(predictor, config, dataset, texts, labels, batch_size)
        timings["baselines_seconds"] = time.perf_counter() - start
    result["timings"] = {k: round(v, 3) for k, v in timings.items()}
    artifacts.write_json_atomic(run_dir / "eval" / split / "metrics.json", result)
    headline = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    artifacts.write_json_atomic(run_dir / "eval" / f"{split}.json", headline)
    return result


def _evaluate_multi_label(run_dir: Path, predictor: Predictor, part, texts: list[str], split: str,
                          batch_size: int) -> dict[str, Any]:
    """Multi-label runs: 0/1 label rows scored at the thresholds tuned on validation (headline metrics only)."""
    config = artifacts.read_run_config(run_dir)
    labels = multi_hot(part, predictor.labels, config.data.label_separator)[: len(texts)]
    thresholds = [predictor.meta.get("thresholds", {}).get(name, 0.5) for name in predictor.labels.names]
    logits = _logits(predictor, texts, labels, batch_size)
    metrics = classification_metrics(logits / predictor.temperature, np.asarray(labels), predictor.labels.names, thresholds)
    result = {"data": part.source, "split": split, "rows": len(texts), **metrics}
    artifacts.write_json_atomic(run_dir / "eval" / f"{split}.json", result)
    return result


def _write_outputs(out: Path, texts: list[str], labels: np.ndarray, logits: np.ndarray, names: tuple[str, ...],
                   temperature: float, calibration: dict | None, figures: bool) -> dict[str, Any]:
    """metrics (with calibration and the overfitting check), errors.csv and the figures; returns the metrics."""
    report = full_report(logits / temperature, labels, names)
    if calibration:
        report["calibration"] = calibration
    history = artifacts.read_metrics(out.parent.parent)
    report["overfitting_warning"] = overfitting_warning(history)
    if report["overfitting_warning"]:
        log.warning("%s", report["overfitting_warning"])
    write_errors_csv(out / "errors.csv", texts, labels, softmax(logits / temperature), names)
    if figures:
        _write_figures(out, report, history, logits, labels, temperature, calibration, report["overfitting_warning"])
    return report


def _logits(predictor: Predictor, texts: list[str], labels: np.ndarray, batch_size: int) -> np.ndarray:
    """Raw logits (temperature not applied) for `texts`, in order."""
    tokens = tokenize_like_training(predictor.meta, predictor.tokenizer, texts, labels)
    rows = batch_logits(predictor.model, tokens, predictor.tokenizer.pad_token_id, batch_size,
                        predictor.device, predictor.precision)
    return tokens.document_logits(rows).astype(np.float64)  # sliding windows: one pooled row per text


def _calibrate(run_dir: Path, predictor: Predictor, validation, test_logits: np.ndarray, test_labels: np.ndarray,
               batch_size: int) -> dict[str, Any]:
    """Fit T on validation logits, store it with the model, report ECE and loss before/after on both splits."""
    val_labels = np.asarray(validation.labels)
    val_logits = _logits(predictor, validation.texts, val_labels, batch_size)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["row", "text", "true", "predicted", "confidence", "true_probability"])
        for row in wrong:
            writer.writerow([int(row) + 1, texts[row], names[labels[row]], names[predicted[row]],
                             f"{probabilities[row, predicted[row]]:.6f}", f"{probabilities[row, labels[row]]:.6f}"])
    return path


def _write_figures(out: Path, report: dict[str, Any], history: list[dict], logits: np.ndarray, labels: np.ndarray,
                   temperature: float, calibration: dict | None, warning: str | None) -> None:
    names = tuple(report["per_class"])
    plots.confusion_png(np.asarray(report["confusion_matrix"]), names, out / "confusion.png")
    if history:
        plots.curves_png(history, out / "curves.png", warning)
    before = softmax(logits)
    after = softmax(logits / temperature) if calibration else None
    plots.reliability_png(reliability_bins(before, labels), reliability_bins(after, labels) if after is not None else None,
                          out / "reliability.png", expected_calibration_error(before, labels),
                          expected_calibration_error(after, labels) if after is not None else None)


def _baselines(predictor: Predictor, config, dataset, texts: list[str], labels: np.ndarray,
               batch_size: int) -> dict[str, dict[str, Any]]:
    from bertfit.baselines import run_baselines, untrained_logits

    train = dataset.splits["train"]
    tokens = tokenize_like_training(predictor.meta, predictor.tokenizer, texts, labels)

    def untrained() -> np.ndarray:
        return tokens.document_logits(untrained_logits(predictor.meta, len(predictor.labels), config.train.seed, tokens,
                                                       predictor.tokenizer.pad_token_id, batch_size, predictor.device,
                                                       predictor.precision))

    return run_baselines(train.texts, np.asarray(train.labels), texts, labels, predictor.labels.names,
                         config.train.seed, untrained)
