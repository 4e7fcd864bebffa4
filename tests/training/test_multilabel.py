"""Multi-label data, loss, metrics, tuned thresholds and prediction; class weights and label smoothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertfit.config import DataConfig, TrainConfig, load_config
from bertfit.data.splits import load_dataset
from bertfit.errors import BertfitError
from bertfit.infer.predictor import Predictor
from bertfit.metrics import multi_label_metrics, tune_thresholds
from bertfit.training.losses import loss_function
from bertfit.training.recipe import train
from conftest import write_csv


def _multi_rows(rows):
    """AG News topic plus a second label 'long' for the longer half of the texts: genuinely multi-label."""
    median = np.median([len(text) for text, _ in rows])
    return [(text, label + ("|long" if len(text) > median else "")) for text, label in rows]


def test_separator_strings_and_lists_become_multi_hot(tmp_path):
    write_csv(tmp_path / "a.csv", [("one", "x|y"), ("two", "y"), ("three", "z | x")])
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"text": "four", "label": ["x", "z"]}, {"text": "five", "label": []}]))
    config = DataConfig(train=str(tmp_path / "a.csv"), validation=str(tmp_path / "b.jsonl"), multi_label=True)
    dataset = load_dataset(config, seed=0)
    assert dataset.labels.names == ("x", "y", "z")
    assert sorted(map(tuple, dataset.splits["train"].labels)) == sorted([(1, 1, 0), (0, 1, 0), (1, 0, 1)])
    assert dataset.splits["validation"].labels == [[1, 0, 1], [0, 0, 0]]


def test_unknown_multi_label_name_is_reported(tmp_path):
    write_csv(tmp_path / "a.csv", [("one", "x|y"), ("two", "y")])
    write_csv(tmp_path / "v.csv", [("three", "x|w")])
    config = DataConfig(train=str(tmp_path / "a.csv"), validation=str(tmp_path / "v.csv"), multi_label=True,
                        label_names=("x", "y"))
    with pytest.raises(BertfitError, match=r"row 1: label 'w'"):
        load_dataset(config, seed=0)


def test_multi_label_metrics_match_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = (rng.random((50, 4)) < 0.4).astype(np.float32)
    logits = rng.normal(size=(50, 4)) + 2 * (labels - 0.5)
    predicted = logits >= 0
    metrics = multi_label_metrics(logits, labels, ("a", "b", "c", "d"))
    assert metrics["f1_micro"] == pytest.approx(sklearn.f1_score(labels, predicted, average="micro"))
    assert metrics["f1_macro"] == pytest.approx(sklearn.f1_score(labels, predicted, average="macro"))
    assert metrics["accuracy"] == pytest.approx(sklearn.accuracy_score(labels, predicted))
    assert metrics["f1/c"] == pytest.approx(sklearn.f1_score(labels[:, 2], predicted[:, 2]))


def test_tuned_thresholds_separate_each_label():
    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.float32)
    # Label 0's positives score 0.3 and its negatives 0.1; label 1's positives 0.9, negatives 0.7.
    probabilities = np.array([[0.3, 0.7], [0.3, 0.9], [0.1, 0.9], [0.1, 0.7]])
    thresholds = tune_thresholds(probabilities, labels)
    assert 0.1 < thresholds[0] <= 0.3 and 0.7 < thresholds[1] <= 0.9
    assert tune_thresholds(probabilities, np.zeros_like(labels)).tolist() == [0.5, 0.5]


def test_multi_label_run_stores_thresholds_and_predicts_sets(tiny_overrides, tmp_path, ag_news_rows):
    rows = _multi_rows(ag_news_rows[:120])
    write_csv(tmp_path / "train.csv", rows[:90])
    write_csv(tmp_path / "test.csv", rows[90:])
    config = load_config(None, tiny_overrides + ["--data.train", str(tmp_path / "train.csv"), "--data.test",
                                                 str(tmp_path / "test.csv"), "--data.multi_label", "true",
                                                 "--train.metric", "f1_micro", "--train.epochs", "2", "--name", "ml"])
    result = train(config)
    meta = json.loads((result.run_dir / "model" / "bertfit.json").read_text())
    assert meta["problem_type"] == "multi_label_classification"
    assert set(meta["thresholds"]) == {"Business", "Sci/Tech", "Sports", "World", "long"}
    assert {"f1_micro", "f1_macro"} <= set(result.test)
    from bertfit.evaluate.run import evaluate_run
    evaluated = evaluate_run(result.run_dir, device="cpu")  # the run's test file again, at the stored thresholds
    assert evaluated["f1_micro"] == pytest.approx(result.test["f1_micro"], abs=1e-6)
    predictor = Predictor(result.run_dir, device="cpu")
    texts = [text for text, _ in rows[90:100]]
    probabilities = predictor.predict_proba(texts)
    assert not np.allclose(probabilities.sum(1), 1.0)  # independent sigmoids, not a softmax
    for prediction, row in zip(predictor.predict(texts), probabilities):
        expected = {n for n, p in zip(predictor.labels.names, row) if p >= meta["thresholds"][n]}
        assert set(prediction.labels) == expected
        assert prediction.label == "|".join(prediction.labels)


def test_balanced_class_weights_single_label():
    sklearn_utils = pytest.importorskip("sklearn.utils")
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    loss = loss_function(TrainConfig(class_weights="balanced"), labels, 3, torch.device("cpu"))
    expected = sklearn_utils.compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(loss.weight.numpy(), expected, rtol=1e-6)
    logits, targets = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 0])
    manual = -(torch.log_softmax(logits, -1)[torch.arange(5), targets] * loss.weight[targets]).sum()
    assert loss(logits, targets).item() == pytest.approx(manual.item(), rel=1e-5)


def test_balanced_weights_and_smoothing_multi_label():
    labels = np.array([[1, 0], [1, 0], [1, 1], [0, 0]], dtype=np.float32)  # label 0: 3 of 4, label 1: 1 of 4
    loss = loss_function(TrainConfig(class_weights="balanced", label_smoothing=0.2), labels, 2, torch.device("cpu"))
    logits, targets = torch.randn(4, 2), torch.tensor(labels)
    smoothed = targets * 0.8 + 0.1
    pos_weight = torch.tensor([1 / 3, 3.0])
    manual = -(pos_weight * smoothed * torch.nn.functional.logsigmoid(logits)
               + (1 - smoothed) * torch.nn.functional.logsigmoid(-logits)).sum()
    assert loss(logits, targets).item() == pytest.approx(manual.item(), rel=1e-5)


def test_label_smoothing_single_label():
    loss = loss_function(TrainConfig(label_smoothing=0.1), np.array([0, 1, 2]), 3, torch.device("cpu"))
    logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    log_probs = torch.log_softmax(logits, -1)
    manual = -(0.9 * log_probs[torch.arange(4), targets] + 0.1 / 3 * log_probs.sum(-1)).sum()
    assert loss(logits, targets).item() == pytest.approx(manual.item(), rel=1e-5)
