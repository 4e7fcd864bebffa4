"""Classification metrics as pure functions of labels and predictions (numpy in, floats out)."""

from __future__ import annotations

import numpy as np

# The fewest validation rows a choice is made on (the best weights, a stack's weight, a temperature): below it a
# score's 95% interval is wider than about +-10 points, and what is chosen fits the noise of a handful of rows.
MIN_VALIDATION_ROWS = 100


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood, computed stably from logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def per_class_scores(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class; 0 where a ratio has no denominator (as scikit-learn)."""
    true_positive = np.diag(counts).astype(np.float64)
    predicted = counts.sum(axis=0)
    support = counts.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(true_positive), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_metrics(logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
                           thresholds: np.ndarray | None = None) -> dict[str, float]:
    """accuracy, loss, macro and weighted precision/recall/F1, and F1 per class (keys f1/<name>).

    Multi-label data (a 0/1 matrix of labels) is scored by `multi_label_metrics` at `thresholds`.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return multi_label_metrics(logits, labels, names, thresholds)
    predictions = logits.argmax(axis=-1)
    counts = confusion_matrix(labels, predictions, len(names))
    scores = per_class_scores(counts)
    weights = scores["support"] / max(1, scores["support"].sum())
    # Macro averages cover the classes present in labels or predictions, as scikit-learn does.
    present = (scores["support"] > 0) | (counts.sum(axis=0) > 0)
    accuracy = float((predictions == labels).mean())
    # With one label per row, micro-averaged F1 equals accuracy; the key lets train.metric name it.
    metrics = {"accuracy": accuracy, "f1_micro": accuracy, "loss": cross_entropy(logits, labels)}
    for key in ("precision", "recall", "f1"):
        metrics[f"{key}_macro"] = float(scores[key][present].mean())
        metrics[f"{key}_weighted"] = float((scores[key] * weights).sum())
    for name, f1 in zip(names, scores["f1"]):
        metrics[f"f1/{name}"] = float(f1)
    return metrics


def probability_metrics(probabilities: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
                        thresholds: np.ndarray | None = None) -> dict[str, float]:
    """classification_metrics of probabilities (a mix of models has no logits): their logs, which softmax
    back to them, or for multi-label rows (labels a 0/1 matrix) their log-odds, which sigmoid back to them."""
    clipped = np.clip(probabilities, 1e-12, 1 - 1e-12)
    multi_label = np.asarray(labels).ndim == 2
    logits = np.log(clipped) - np.log1p(-clipped) if multi_label else np.log(np.maximum(probabilities, 1e-12))
    return classification_metrics(logits, labels, names, thresholds)


def greater_is_better(metric: str) -> bool:
    """Loss improves downwards, every other metric upwards."""
    return metric != "loss"


def is_improvement(metric: str, score: float, best: float | None) -> bool:
    if best is None:
        return True
    return score > best if greater_is_better(metric) else score < best


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # tanh form: no overflow warnings for large |logits|


def binary_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean over rows and labels of BCE with logits, computed stably."""
    return float((np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))).mean())


def multi_label_metrics(logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
                        thresholds: np.ndarray | None = None) -> dict[str, float]:
    """Exact-match accuracy, BCE loss, micro/macro precision, recall and F1, F1 per label.

    A label is predicted when its probability reaches its threshold (0.5 unless tuned).
    """
    labels = np.asarray(labels) > 0.5
    cut = np.full(len(names), 0.5) if thresholds is None else np.asarray(thresholds)
    predicted = sigmoid(logits) >= cut
    true_positive = (predicted & labels).sum(0).astype(np.float64)
    predicted_count, support = predicted.sum(0).astype(np.float64), labels.sum(0).astype(np.float64)
    metrics = {"accuracy": float((predicted == labels).all(1).mean()),
               "loss": binary_cross_entropy(logits, labels.astype(np.float64))}
    precision, recall, f1 = _prf(true_positive, predicted_count, support)
    present = (support > 0) | (predicted_count > 0)
    for key, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        metrics[f"{key}_macro"] = float(values[present].mean()) if present.any() else 0.0
    micro = _prf(true_positive.sum(keepdims=True), predicted_count.sum(keepdims=True), support.sum(keepdims=True))
    for key, values in zip(("precision", "recall", "f1"), micro):
        metrics[f"{key}_micro"] = float(values[0])
    for name, value in zip(names, f1):
        metrics[f"f1/{name}"] = float(value)
    return metrics


def tune_thresholds(probabilities: np.ndarray, labels: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
    """Per label, the probability cut-off that maximises that label's F1 (ties: the one nearest 0.5).

    A label with no positive rows keeps 0.5: there is nothing to tune it on.
    """
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2) if grid is None else grid
    labels = np.asarray(labels) > 0.5
    best = np.full(labels.shape[1], 0.5)
    for column in range(labels.shape[1]):
        truth = labels[:, column]
        if not truth.any():
            continue
        predicted = probabilities[:, column][None, :] >= grid[:, None]  # (thresholds, rows)
        true_positive = (predicted & truth).sum(1).astype(np.float64)
        f1 = _prf(true_positive, predicted.sum(1).astype(np.float64), np.full(len(grid), truth.sum(), np.float64))[2]
        candidates = np.flatnonzero(f1 == f1.max())
        best[column] = grid[candidates[np.argmin(np.abs(grid[candidates] - 0.5))]]
    return best


def _prf(true_positive: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    total = precision + recall
    return precision, recall, np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the sample-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    table = reliability_bins(probabilities, labels, bins)
    total = max(1, int(table["count"].sum()))
    gaps = np.abs(table["accuracy"] - table["confidence"])
    return float((gaps * table["count"]).sum() / total)


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Per confidence bin (0..1 in `bins` equal steps): count, mean confidence, accuracy (0 where empty).

    Bins are right-closed, (lo, hi], as in Guo et al. 2017, so confidence 1.0 lands in the last bin.
    """
    confidence = probabilities.max(axis=-1)
    correct = (probabilities.argmax(axis=-1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    sum_confidence = np.bincount(index, weights=confidence, minlength=bins)
    sum_correct = np.bincount(index, weights=correct, minlength=bins)
    safe = np.maximum(count, 1)
    return {"edges": edges, "count": count, "confidence": np.where(count > 0, sum_confidence / safe, 0.0),
            "accuracy": np.where(count > 0, sum_correct / safe, 0.0)}


def most_confused_pairs(counts: np.ndarray, names: tuple[str, ...], top: int = 5) -> list[dict]:
    """Off-diagonal cells of the confusion matrix, largest first: which true class is mistaken for which."""
    off_diagonal = counts.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")
    pairs = []
    for flat in order[:top]:
        true, predicted = np.unravel_index(flat, counts.shape)
        if off_diagonal[true, predicted] == 0:
            break
        support = max(1, int(counts[true].sum()))
        pairs.append({"true": names[true], "predicted": names[predicted], "count": int(counts[true, predicted]),
                      "fraction_of_true": float(counts[true, predicted] / support)})
    return pairs


def full_report(logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
    """Everything metrics.json holds: the flat metrics, per-class scores, ECE, confusion counts, confused pairs."""
    labels = np.asarray(labels)
    counts = confusion_matrix(labels, logits.argmax(axis=-1), len(names))
    scores = per_class_scores(counts)
    probabilities = softmax(logits)
    per_class = {name: {"precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
                        "f1": float(scores["f1"][i]), "support": int(scores["support"][i])}
                 for i, name in enumerate(names)}
    flat = {k: v for k, v in classification_metrics(logits, labels, names).items() if not k.startswith("f1/")}
    return {**flat, "ece": expected_calibration_error(probabilities, labels), "per_class": per_class,
            "confusion_matrix": counts.tolist(), "most_confused": most_confused_pairs(counts, names)}


def overfitting_warning(history: list[dict]) -> str | None:
    """A plain sentence when validation loss rose while training loss fell between evaluations, else None.

    Compares each evaluation with the one before; the first stretch where both moved apart is named,
    since that is where more training started to hurt.
    """
    points = [(r["step"], r.get("epoch"), r["train/loss"], r["eval/loss"]) for r in history
              if "train/loss" in r and "eval/loss" in r]
    for (step0, _, train0, val0), (step1, epoch1, train1, val1) in zip(points, points[1:]):
        if train1 < train0 and val1 > val0:
            return (f"validation loss rose from {val0:.4f} to {val1:.4f} while training loss fell from "
                    f"{train0:.4f} to {train1:.4f} (steps {step0} -> {step1}, epoch {epoch1}): the model "
                    "has started to overfit; fewer epochs, more data or early stopping would help")
    return None
