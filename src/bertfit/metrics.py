"""Classification metrics as pure functions of labels and predictions (numpy in, floats out)."""

from __future__ import annotations

import numpy as np


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


def classification_metrics(logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """accuracy, loss, macro and weighted precision/recall/F1, and F1 per class (keys f1/<name>)."""
    labels = np.asarray(labels)
    predictions = logits.argmax(axis=-1)
    counts = confusion_matrix(labels, predictions, len(names))
    scores = per_class_scores(counts)
    weights = scores["support"] / max(1, scores["support"].sum())
    # Macro averages cover the classes present in labels or predictions, as scikit-learn does.
    present = (scores["support"] > 0) | (counts.sum(axis=0) > 0)
    metrics = {"accuracy": float((predictions == labels).mean()), "loss": cross_entropy(logits, labels)}
    for key in ("precision", "recall", "f1"):
        metrics[f"{key}_macro"] = float(scores[key][present].mean())
        metrics[f"{key}_weighted"] = float((scores[key] * weights).sum())
    for name, f1 in zip(names, scores["f1"]):
        metrics[f"f1/{name}"] = float(f1)
    return metrics


def is_improvement(metric: str, score: float, best: float | None) -> bool:
    """Loss improves downwards, every other metric upwards."""
    if best is None:
        return True
    return score < best if metric == "loss" else score > best
