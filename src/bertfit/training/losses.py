"""The training losses: cross-entropy with class weights and label smoothing, per-label BCE for multi-label data,
or distillation's soft cross-entropy on a teacher's probabilities mixed with the gold labels."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from bertfit.config import TrainConfig
from bertfit.config_distill import DistillConfig


def loss_function(cfg: TrainConfig, labels: np.ndarray, num_labels: int, device: torch.device,
                  distill: DistillConfig | None = None) -> Callable:
    """Summed cross-entropy, or for multi-label data (a 0/1 matrix) summed binary cross-entropy per label,
    or with a distillation teacher the distillation loss."""
    if distill is not None and distill.teacher is not None:
        return distillation_loss(distill.temperature, distill.alpha)
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


def distillation_loss(temperature: float, alpha: float) -> Callable:
    """Hinton et al.'s loss, summed over the batch. The targets hold the teacher's logits and a gold one-hot
    row side by side (all zeros: the text has no gold label).

    Per text: alpha * T^2 * KL(teacher || student), both softened by T, plus (1 - alpha) * cross-entropy
    on the gold label; a text without one learns from the teacher alone (weight 1). T^2 keeps the soft
    gradients' scale independent of T.
    """
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        classes = logits.shape[-1]
        teacher, gold = targets[:, :classes], targets[:, classes:]
        soft = torch.softmax(teacher / temperature, dim=-1)
        student = torch.log_softmax(logits / temperature, dim=-1)
        soft_loss = (torch.special.xlogy(soft, soft) - soft * student).sum(-1) * temperature ** 2
        hard_loss = -(gold * torch.log_softmax(logits, dim=-1)).sum(-1)
        soft_weight = torch.where(gold.sum(-1) > 0, alpha, 1.0)
        return (soft_weight * soft_loss + (1 - alpha) * hard_loss).sum()
    return loss
