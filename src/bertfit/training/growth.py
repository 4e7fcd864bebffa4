"""Growing a trained classifier with new labels (`model.init_from`): its weights and label ids carry
over, new labels get new head rows, and the test split says what the growth cost the old labels.

The forgetting figure compares, on the test rows whose true label the earlier model already knew, the
earlier model's accuracy with the grown model's: a continual-learning run is only worth keeping when
the new labels do not cost the old ones much.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bertfit import artifacts
from bertfit.config import RunConfig
from bertfit.data.batching import FeatureSplit, TokenizedSplit
from bertfit.data.splits import TextDataset, keep_label_ids
from bertfit.errors import BertfitError
from bertfit.infer.engine import split_logits
from bertfit.model import merge_lora
from bertfit.training.loop import Session

log = logging.getLogger(__name__)


def initial_weights(config: RunConfig, dataset: TextDataset) -> tuple[TextDataset, dict | None, list[int] | None]:
    """With model.init_from: the earlier run's weights, and its labels kept at their ids (new labels after)."""
    if config.model.init_from is None:
        return dataset, None, None
    previous = artifacts.load_model(Path(config.model.init_from))
    if previous.meta.problem_type != config.data.problem_type:
        raise BertfitError(f"model.init_from: {config.model.init_from} is a {previous.meta.problem_type} model; "
                           "set data.multi_label to match it")
    dataset = keep_label_ids(dataset, previous.labels.names)
    added = [name for name in dataset.labels.names if name not in previous.labels.names]
    log.info("init from %s: %d labels kept, %d new (%s)", config.model.init_from, len(previous.labels),
             len(added), ", ".join(added) or "none")
    rows = [previous.labels.label2id.get(name, -1) for name in dataset.labels.names]
    return dataset, merge_lora(previous.model).state_dict(), rows


def forgetting(init_from: str, session: Session, split: TokenizedSplit | FeatureSplit,
               logits: np.ndarray) -> dict[str, float]:
    """Accuracy on the earlier model's labels before and after growing, and on the new labels.

    The earlier model's label ids are the first ids of the grown model (keep_label_ids), so its
    predictions compare with the true ids directly. Multi-label runs get no figure (no single accuracy).
    """
    labels = split.document_labels
    if labels.ndim != 1:
        return {}
    earlier = artifacts.load_model(Path(init_from)).model.to(session.device).eval()
    old_count = earlier.head.out_features
    # The same tokens (or, with a frozen encoder, the same vectors: the encoder is the earlier one's).
    earlier_logits = split_logits(earlier, split, session.context)
    old_rows, new_rows = labels < old_count, labels >= old_count
    scores = {"old_labels_rows": int(old_rows.sum()), "new_labels_rows": int(new_rows.sum())}
    if old_rows.any():
        before, after = _accuracy(earlier_logits, labels, old_rows), _accuracy(logits, labels, old_rows)
        scores |= {"accuracy/old_labels_before": before, "accuracy/old_labels": after,
                   "forgetting_points": round(100 * (before - after), 3)}
    if new_rows.any():
        scores["accuracy/new_labels"] = _accuracy(logits, labels, new_rows)
    return scores


def _accuracy(logits: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> float:
    return float((logits[rows].argmax(-1) == labels[rows]).mean())
