"""The export's accuracy check: every exported variant against PyTorch on held-out labelled texts.

The sample is the run's validation split (as training held it out), then its test rows, up to
`max_rows` (default 4,000); a run with neither (a few-shot run holds out none) is checked on its training
rows. The figure that decides is paired: on the same rows, how often a variant's label differs from
PyTorch's (its disagreement, with a 95% Wilson interval) and how its accuracy moves (with a 95% interval
for a paired difference). A variant can lose at most its disagreement in accuracy; with int8 disagreeing
on ~1.5% of rows, 4,000 rows tell an accuracy change to about +-0.4 points,
where a 400-row slice could not tell 0.5 points from 1.2.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bertfit import artifacts
from bertfit.data.batching import TokenizedSplit
from bertfit.data.splits import load_dataset
from bertfit.errors import BertfitError
from bertfit.infer.engine import tokenize_like_training
from bertfit.metrics import softmax

log = logging.getLogger(__name__)

DEFAULT_CHECK_ROWS = 4000
Z95 = 1.959964


class Backend(Protocol):
    name: str

    def logits(self, split: TokenizedSplit) -> np.ndarray: ...


@dataclass(frozen=True)
class CheckSample:
    """Labelled held-out texts, tokenised as the model was trained, and where they came from."""

    source: str  # e.g. "validation (400) + test (3600)"
    texts: list[str]
    tokens: TokenizedSplit
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def check_sample(run_dir: Path, loaded: artifacts.LoadedModel, max_rows: int | None) -> CheckSample:
    """Validation rows first, then test rows, as `bertfit train` split them, capped at max_rows."""
    config = artifacts.read_run_config(run_dir)
    dataset = load_dataset(config.data, config.train.seed)
    limit = max_rows or DEFAULT_CHECK_ROWS
    texts: list[str] = []
    labels: list[int] = []
    parts = []
    # A run that held out no rows (data.validation_fraction 0) and has no test data is checked on its training rows:
    # the backends' agreement still decides; their accuracy there is not an estimate for new text.
    names = ("validation", "test") if {"validation", "test"} & dataset.splits.keys() else ("train",)
    for name in names:
        split = dataset.splits.get(name)
        if split is None or len(texts) >= limit:
            continue
        taken = split.head(limit - len(texts))
        texts += taken.texts
        labels += list(taken.labels)
        parts.append(f"{name} ({len(taken)})")
    if not texts:
        raise BertfitError(f"{run_dir}: no labelled texts to check the export with; its data splits are empty")
    tokens = tokenize_like_training(loaded.meta, loaded.tokenizer, texts, np.asarray(labels))
    return CheckSample(" + ".join(parts), texts, tokens, np.asarray(labels))


def wilson_interval(hits: int, rows: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion hits/rows (sound near 0, unlike the normal interval)."""
    if rows == 0:
        return 0.0, 1.0
    p = hits / rows
    centre = (p + z * z / (2 * rows)) / (1 + z * z / rows)
    half = z * math.sqrt(p * (1 - p) / rows + z * z / (4 * rows * rows)) / (1 + z * z / rows)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_change(reference_right: np.ndarray, variant_right: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """Accuracy change (points) of a variant against the reference on the same rows, with a 95% interval."""
    rows = len(reference_right)
    gained = float(np.sum(variant_right & ~reference_right)) / rows
    lost = float(np.sum(reference_right & ~variant_right)) / rows
    change = gained - lost
    spread = z * math.sqrt(max(gained + lost - change * change, 0.0) / rows)
    return 100 * change, 100 * (change - spread), 100 * (change + spread)


def compare(reference: np.ndarray, checked: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """One variant's record: accuracy, its paired change, disagreement with its interval, probability gap."""
    reference_labels, checked_labels = reference.argmax(-1), checked.argmax(-1)
    rows = len(labels)
    differ = int(np.sum(reference_labels != checked_labels))
    change, low, high = paired_change(reference_labels == labels, checked_labels == labels)
    disagree_low, disagree_high = wilson_interval(differ, rows)
    return {"accuracy": float(np.mean(checked_labels == labels)), "accuracy_change_points": round(change, 3),
            "accuracy_change_interval_points": [round(low, 3), round(high, 3)],
            "disagreement": differ / rows, "disagreement_interval": [round(disagree_low, 5), round(disagree_high, 5)],
            "same_label_fraction": 1 - differ / rows,
            "max_probability_difference": float(np.abs(checked - reference).max())}


def self_check(sample: CheckSample, reference: Backend, variants: dict[str, Backend], temperature: float) -> dict[str, Any]:
    """PyTorch (`reference`) vs each variant on the sample; accuracy, paired change and disagreement."""

    def probabilities(backend: Backend) -> np.ndarray:
        return softmax(sample.tokens.document_logits(backend.logits(sample.tokens)) / temperature)

    expected = probabilities(reference)
    torch_accuracy = float(np.mean(expected.argmax(-1) == sample.labels))
    result: dict[str, Any] = {"split": sample.source, "rows": len(sample), "torch_accuracy": torch_accuracy,
                              "interval": "95%: Wilson for disagreement, paired normal for the accuracy change"}
    for name, backend in variants.items():
        result[name] = compare(expected, probabilities(backend), sample.labels)
        log.info("export check %s: %s", name, result[name])
    return result
