"""The training losses: cross-entropy with class weights and label smoothing, or per-label BCE for multi-label data."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from bertfit.config import TrainConfig


def loss_function(cfg: TrainConfig, labels: np.ndarray, num_labels: int, device: torch.device) -> Callable:
    """Summed cross-entropy, or for multi-label data (a 0/1 matrix) summed binary cross-entropy per label."""
    balanced = cfg.class_weights == "balanced"
    if labels.ndim == 1:
        weights = class_weights(labels, num_labels).to(device) if balanced else None
        return torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing, reduction="sum")
    positives = labels.sum(0)
    # balanced: each label's positives weigh negatives / positives, so rare labels are not ignored.
    pos_weight = torch.tensor(np.where(positives > 0, (len(labels) - positives) / np.maximum(positives, 1), 1.0),
                              dtype=torch.float32, device=device) if balanced else None
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="sum")
    smoothing = cfg.label_smoothing

    def multi_label_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return bce(logits, targets * (1 - smoothing) + smoothing / 2)
    return multi_label_loss


def class_weights(labels: np.ndarray, num_labels: int) -> torch.Tensor:
    """'balanced' weights: n_samples / (n_classes * count), as scikit-learn; absent classes get 0."""
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    weights = np.divide(len(labels), num_labels * counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.tensor(weights, dtype=torch.float32)
