"""Batch prediction from a run directory or model folder (imports nothing from training)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bertfit.artifacts import load_model
from bertfit.batching import TokenizedSplit, eval_batches, loader, tokenize
from bertfit.metrics import sigmoid, softmax
from bertfit.runtime import Precision, autocast, choose_device, choose_precision


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    labels: tuple[str, ...] | None = None  # multi-label models: every label at or above its threshold


@torch.inference_mode()
def batch_logits(model: torch.nn.Module, split: TokenizedSplit, pad_id: int, batch_size: int,
                 device: torch.device, precision: Precision) -> np.ndarray:
    """Logits for every row of `split`, in row order (batches run longest first, then are put back)."""
    was_training = model.training
    model.eval()
    logits = np.zeros((len(split), model.head.out_features), dtype=np.float32)
    for batch in loader(split, eval_batches(split.lengths, batch_size), pad_id, pin_memory=device.type == "cuda"):
        with autocast(device, precision):
            out = model(batch["input_ids"].to(device, non_blocking=True),
                        batch["attention_mask"].to(device, non_blocking=True))
        logits[batch["rows"].numpy()] = out.float().cpu().numpy()
    model.train(was_training)
    return logits


class Predictor:
    """Loaded model + tokenizer + labels; `predict(texts)` keeps the input order."""

    def __init__(self, path: str | Path, device: str = "auto", precision: str = "auto", batch_size: int = 64):
        loaded = load_model(Path(path))
        self.device = choose_device(device)
        self.precision = choose_precision(precision, self.device)
        self.model = loaded.model.to(self.device)
        self.tokenizer = loaded.tokenizer
        self.labels = loaded.labels
        self.meta = loaded.meta
        self.batch_size = batch_size
        self.temperature = float(loaded.meta.get("temperature", 1.0))

    def logits(self, texts: list[str]) -> np.ndarray:
        split = tokenize(list(texts), np.zeros(len(texts)), self.tokenizer, self.meta["max_length"], cache_dir=None,
                         keep_head=self.meta.get("keep_head", 1.0))
        return batch_logits(self.model, split, self.tokenizer.pad_token_id, self.batch_size, self.device, self.precision)

    @property
    def multi_label(self) -> bool:
        return self.meta.get("problem_type") == "multi_label_classification"

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities (rows sum to 1), or for multi-label models one independent probability per label."""
        scaled = self.logits(texts) / self.temperature
        return sigmoid(scaled) if self.multi_label else softmax(scaled)

    def predict(self, texts: list[str]) -> list[Prediction]:
        probabilities = self.predict_proba(texts)
        names = self.labels.names
        if self.multi_label:
            cuts = np.array([self.meta.get("thresholds", {}).get(name, 0.5) for name in names])
            chosen = [tuple(n for n, p, c in zip(names, row, cuts) if p >= c) for row in probabilities]
            return [Prediction(text, "|".join(found), float(row.max()), dict(zip(names, map(float, row))), found)
                    for text, row, found in zip(texts, probabilities, chosen)]
        return [Prediction(text, names[int(row.argmax())], float(row.max()), dict(zip(names, map(float, row))))
                for text, row in zip(texts, probabilities)]
