"""Frozen-encoder fast path: run the encoder once per text, then train the head on the cached vectors.

With `model.freeze encoder` (and no LoRA) the encoder's output never changes during training, so
running it every step of every epoch recomputes the same vectors. Here each text is encoded once
(inference mode, eval mode, longest-first batches) into its pooled vector; the loop then feeds
batches of those vectors to `TextClassifier(features=...)`, which skips the encoder. The model, its
saved weights, evaluation, checkpoints and resume are those of an ordinary run.

One difference from running the frozen encoder every step: it runs in eval mode, so the encoder's
own dropout (hidden_dropout_prob) is off; `model.dropout` on the pooled vector still applies.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from bertfit.batching import FeatureSplit, TokenizedSplit, eval_batches, loader
from bertfit.config import RunConfig
from bertfit.model import TextClassifier
from bertfit.runtime import Precision, autocast

log = logging.getLogger(__name__)


def use_cached_features(config: RunConfig) -> bool:
    """Whether this run trains the head on cached encoder outputs (see the module docstring)."""
    return config.model.freeze == "encoder" and config.lora.r == 0 and config.train.cache_features


@torch.inference_mode()
def encode_features(model: TextClassifier, split: TokenizedSplit, pad_id: int, batch_size: int,
                    device: torch.device, precision: Precision) -> FeatureSplit:
    """Every row's pooled vector, in row order (float32 on the host, whatever the autocast dtype)."""
    was_training = model.training
    model.eval()
    features = np.zeros((len(split), model.head.in_features), dtype=np.float32)
    for batch in loader(split, eval_batches(split.lengths, batch_size), pad_id, pin_memory=device.type == "cuda"):
        with autocast(device, precision):
            pooled = model.encode(batch["input_ids"].to(device, non_blocking=True),
                                  batch["attention_mask"].to(device, non_blocking=True))
        features[batch["rows"].numpy()] = pooled.float().cpu().numpy()
    model.train(was_training)
    return FeatureSplit(features, split.labels, split.lengths)


def encode_splits(model: TextClassifier, splits: dict[str, TokenizedSplit], pad_id: int, batch_size: int,
                  device: torch.device, precision: Precision) -> dict[str, FeatureSplit]:
    """All splits encoded once; the run then never calls the encoder again."""
    started = time.perf_counter()
    encoded = {name: encode_features(model, split, pad_id, batch_size, device, precision)
               for name, split in splits.items()}
    log.info("frozen encoder: encoded %d texts once in %.1f s; training the head on cached features",
             sum(len(split) for split in splits.values()), time.perf_counter() - started)
    return encoded


@torch.inference_mode()
def feature_logits(model: TextClassifier, split: FeatureSplit, batch_size: int, device: torch.device,
                   precision: Precision) -> np.ndarray:
    """Logits for every row of a feature split, in row order (the head alone: no encoder call)."""
    was_training = model.training
    model.eval()
    logits = np.zeros((len(split), model.head.out_features), dtype=np.float32)
    for start in range(0, len(split), batch_size):
        features = torch.from_numpy(split.features[start:start + batch_size]).to(device)
        with autocast(device, precision):
            logits[start:start + batch_size] = model(features=features).float().cpu().numpy()
    model.train(was_training)
    return logits
