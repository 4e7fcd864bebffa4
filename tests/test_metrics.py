"""Evaluation metrics against scikit-learn on fixed predictions, and the pure helpers around them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from bertfit.metrics import (
    expected_calibration_error,
    full_report,
    most_confused_pairs,
    overfitting_warning,
    reliability_bins,
    softmax,
)

NAMES = ("a", "b", "c", "d")


@pytest.fixture
def fixed() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, size=300)
    logits = rng.normal(size=(300, 4))
    logits[np.arange(300), labels] += rng.uniform(0, 2.5, size=300)  # better than chance, not perfect
    labels[:5] = 3  # class d is never predicted in these rows either way; keeps support uneven
    return logits, labels


def test_full_report_matches_scikit_learn(fixed):
    logits, labels = fixed
    predictions = logits.argmax(-1)
    report = full_report(logits, labels, NAMES)
    assert report["accuracy"] == pytest.approx(sk.accuracy_score(labels, predictions))
    assert report["loss"] == pytest.approx(sk.log_loss(labels, softmax(logits), labels=range(4)))
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = sk.precision_recall_fscore_support(labels, predictions, average=average, zero_division=0)
        assert report[f"precision_{average}"] == pytest.approx(precision)
        assert report[f"recall_{average}"] == pytest.approx(recall)
        assert report[f"f1_{average}"] == pytest.approx(f1)
    precision, recall, f1, support = sk.precision_recall_fscore_support(labels, predictions, labels=range(4), zero_division=0)
    for i, name in enumerate(NAMES):
        assert report["per_class"][name] == pytest.approx({"precision": precision[i], "recall": recall[i],
                                                           "f1": f1[i], "support": support[i]})
    assert report["confusion_matrix"] == sk.confusion_matrix(labels, predictions, labels=range(4)).tolist()


def test_ece_matches_a_direct_loop(fixed):
    logits, labels = fixed
    probabilities = softmax(logits)
    confidence, correct = probabilities.max(-1), probabilities.argmax(-1) == labels
    expected = 0.0
    for low in np.linspace(0, 1, 16)[:-1]:
        inside = (confidence > low) & (confidence <= low + 1 / 15 + 1e-12)
        if inside.any():
            expected += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected, abs=1e-9)


def test_reliability_bins_put_full_confidence_in_the_last_bin():
    probabilities = np.array([[1.0, 0.0], [0.55, 0.45], [0.5, 0.5]])
    table = reliability_bins(probabilities, np.array([0, 1, 0]), bins=10)
    assert table["count"].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 1]
    assert table["accuracy"][5] == 0.0 and table["accuracy"][9] == 1.0
    # perfectly confident and always right: no calibration error
    assert expected_calibration_error(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2])) == 0.0


def test_most_confused_pairs_are_the_largest_off_diagonal_cells():
    counts = np.array([[50, 2, 9], [0, 40, 0], [4, 7, 30]])
    pairs = most_confused_pairs(counts, ("x", "y", "z"), top=10)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("x", "z", 9), ("z", "y", 7),
                                                                       ("z", "x", 4), ("x", "y", 2)]
    assert pairs[0]["fraction_of_true"] == pytest.approx(9 / 61)


def test_overfitting_warning_only_when_losses_diverge():
    rising = [{"step": 10, "epoch": 1, "train/loss": 0.9, "eval/loss": 0.50},
              {"step": 20, "epoch": 2, "train/loss": 0.4, "eval/loss": 0.45},
              {"step": 30, "epoch": 3, "train/loss": 0.2, "eval/loss": 0.61}]
    message = overfitting_warning(rising)
    assert message is not None and "0.4500 to 0.6100" in message and "epoch 3" in message
    assert overfitting_warning(rising[:2]) is None
    assert overfitting_warning([{k: v for k, v in r.items() if k != "train/loss"} for r in rising]) is None
