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
