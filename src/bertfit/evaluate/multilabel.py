"""Multi-label evaluation: every label scored at the cut-off tuned for it on validation, wrong label sets listed.

Writes, beside the headline metrics (exact-match accuracy, BCE loss, micro and macro precision/recall/F1):
    metrics.json    per label: precision, recall, F1, support, its threshold and its counts (true positives,
                    false positives, false negatives); the thresholds used
    errors.csv      rows whose predicted label set differs from the true one: both sets, what was missed and added
    per_label.png   precision, recall and F1 of each label;  curves.png  training's curves (from metrics.jsonl)
No temperature, reliability diagram or baselines: each label is a yes/no at its own cut-off, not one softmax.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from bertfit import artifacts
from bertfit.atomic import atomic_file
from bertfit.evaluate import plots
from bertfit.evaluate.outputs import Scored
from bertfit.meta import ModelMeta
from bertfit.metrics import multi_label_metrics, overfitting_warning, sigmoid


def multi_label_report(logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
                       thresholds: list[float]) -> dict[str, Any]:
    """The headline metrics, the thresholds and the per-label scores and counts of (logits, 0/1 labels)."""
    truth, cuts = np.asarray(labels) > 0.5, np.asarray(thresholds, dtype=np.float64)
    predicted = sigmoid(logits) >= cuts
    flat = {k: v for k, v in multi_label_metrics(logits, truth, names, cuts).items() if not k.startswith("f1/")}
    per_label = {}
    for column, name in enumerate(names):
        # One label alone: its micro-averaged scores are that label's own precision, recall and F1.
        alone = multi_label_metrics(logits[:, [column]], truth[:, [column]], (name,), cuts[[column]])
        hit, said = truth[:, column], predicted[:, column]
        per_label[name] = {"precision": alone["precision_micro"], "recall": alone["recall_micro"], "f1": alone["f1_micro"],
                           "support": int(hit.sum()), "threshold": float(cuts[column]),
                           "true_positives": int((hit & said).sum()), "false_positives": int((~hit & said).sum()),
                           "false_negatives": int((hit & ~said).sum())}
    return {**flat, "thresholds": dict(zip(names, map(float, cuts))), "per_label": per_label,
            "wrong_sets": int((predicted != truth).any(axis=1).sum())}


def write_multi_label_outputs(out: Path, scored: Scored, meta: ModelMeta, separator: str,
                              figures: bool) -> tuple[dict[str, Any], list[str]]:
    """metrics (with the overfitting check), errors.csv and the figures in `out`, at the thresholds in `meta`; returns
    the metrics and the names of the files written."""
    thresholds = meta.label_thresholds()
    logits = scored.logits / meta.temperature
    report = multi_label_report(logits, scored.labels, scored.names, thresholds)
    history = artifacts.read_metrics(out.parent.parent)
    report["overfitting_warning"] = overfitting_warning(history)
    predicted = sigmoid(logits) >= np.asarray(thresholds)
    write_set_errors(out / "errors.csv", scored.texts, np.asarray(scored.labels) > 0.5, predicted, scored.names, separator)
    written = ["errors.csv"]
    if figures:
        plots.per_label_png(report["per_label"], out / "per_label.png")
        written.append("per_label.png")
        if history:
            plots.curves_png(history, out / "curves.png", report["overfitting_warning"])
            written.append("curves.png")
    return report, written


def write_set_errors(path: Path, texts: list[str], truth: np.ndarray, predicted: np.ndarray, names: tuple[str, ...],
                     separator: str) -> Path:
    """Rows whose predicted set is not the true set, those wrong on most labels first (then in file order)."""
    wrong_counts = (truth != predicted).sum(axis=1)
    rows = np.flatnonzero(wrong_counts)
    rows = rows[np.argsort(-wrong_counts[rows], kind="stable")]

    def spelled(mask: np.ndarray) -> str:
        return separator.join(name for name, on in zip(names, mask) if on)

    with atomic_file(path) as file:
        writer = csv.writer(file)
        writer.writerow(["row", "text", "true", "predicted", "missed", "added"])
        for row in rows:
            writer.writerow([int(row) + 1, texts[row], spelled(truth[row]), spelled(predicted[row]),
                             spelled(truth[row] & ~predicted[row]), spelled(~truth[row] & predicted[row])])
    return path
