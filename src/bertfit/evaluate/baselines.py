"""Reference points on the same data and split as the fine-tuned model.

A fine-tuned score means little alone: the majority class says what guessing earns, the untrained
model (pretrained encoder, random head) what the encoder gives before any training, and TF-IDF +
logistic regression what a bag of words reaches in seconds. Each returns logits (or log-probabilities,
which softmax back to the same probabilities), so one metrics function scores them all.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from bertfit.data.splits import Split
from bertfit.errors import BertfitError
from bertfit.infer.tfidf import TINY, tfidf_logistic_logits
from bertfit.meta import ModelMeta
from bertfit.metrics import classification_metrics, expected_calibration_error, softmax
from bertfit.model import TextClassifier, load_encoder

log = logging.getLogger(__name__)



def majority_logits(train_labels: np.ndarray, rows: int, num_labels: int) -> np.ndarray:
    """Always the most frequent training class, with the training class frequencies as probabilities."""
    prior = np.bincount(np.asarray(train_labels), minlength=num_labels) / max(1, len(train_labels))
    return np.tile(np.log(prior + TINY), (rows, 1)).astype(np.float64)


def untrained_model(meta: ModelMeta, seed: int) -> TextClassifier:
    """The run's base encoder with a freshly initialised head (same seed as training), not trained at all."""
    encoder = load_encoder(meta.base_model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TextClassifier(encoder, len(meta.labels), meta.pooling, meta.dropout)


def score(logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """The headline numbers a baseline row shows: accuracy, macro/weighted F1, loss, ECE."""
    metrics = classification_metrics(logits, labels, names)
    keep = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "loss")
    return {**{k: metrics[k] for k in keep}, "ece": expected_calibration_error(softmax(logits), labels)}


def run_baselines(train: Split, test_texts: list[str], test_labels: np.ndarray,
                  names: tuple[str, ...], seed: int, untrained: Any | None = None) -> dict[str, dict[str, Any]]:
    """Scores of every baseline trained on `train`; `untrained` is a zero-argument callable returning that model's logits.

    A baseline that cannot run (say the base model is not available offline) is reported as skipped
    with the reason, so one missing reference does not cost the whole evaluation.
    """
    train_labels = np.asarray(train.labels)
    jobs = {
        "majority class": lambda: majority_logits(train_labels, len(test_texts), len(names)),
        "tf-idf + logistic regression": lambda: tfidf_logistic_logits(train.texts, train_labels, test_texts, len(names), seed),
    }
    if untrained is not None:
        jobs["untrained model (random head)"] = untrained
    results: dict[str, dict[str, Any]] = {}
    for name, job in jobs.items():
        start = time.perf_counter()
        try:
            logits = job()
        except BertfitError as error:
            log.warning("baseline %s skipped: %s", name, error)
            results[name] = {"skipped": str(error)}
            continue
        results[name] = {**score(logits, test_labels, names), "seconds": round(time.perf_counter() - start, 3)}
    return results
