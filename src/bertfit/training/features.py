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

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from bertfit.atomic import atomic_file
from bertfit.data.batching import FeatureSplit, TokenizedSplit
from bertfit.infer.engine import InferenceContext, encode
from bertfit.model import TextClassifier
from bertfit.runtime.device import Precision

log = logging.getLogger(__name__)


def encode_splits(model: TextClassifier, splits: dict[str, TokenizedSplit], context: InferenceContext,
                  cache_dir: Path | None = None, training: InferenceContext | None = None) -> dict[str, FeatureSplit]:
    """All splits encoded once; the run then never calls the encoder again.

    The train split is encoded as a training step would run the frozen encoder (`training`: its precision, when
    not `context`'s, e.g. bf16 on a CPU with AMX), the rest as evaluation does (`context`).
    With `cache_dir`, vectors are read from (or written to) cache_dir/features/KEY.npy, KEY naming the
    token ids, the encoder's weights, the pooling and the precision: a later run on the same texts with
    the same frozen encoder (a search over head settings, say) skips the encoder entirely.
    """
    started = time.perf_counter()
    encoded, model_keys = {}, {}  # one hash of the encoder's weights a precision
    for name, split in splits.items():
        chosen = training if name == "train" and training is not None else context
        if cache_dir is not None and chosen.precision not in model_keys:
            model_keys[chosen.precision] = model_fingerprint(model, chosen.precision)
        model_key = model_keys.get(chosen.precision, "")
        path = None if cache_dir is None else Path(cache_dir) / "features" / f"{_split_key(split, model_key)}.npy"
        if path is not None and path.is_file():
            log.info("feature cache hit: %s", path)
            encoded[name] = FeatureSplit(np.load(path), split.labels, split.lengths, split.windows, split.pooling)
            continue
        encoded[name] = encode(model, split, chosen)
        if path is not None:
            with atomic_file(path, "wb") as file:
                np.save(file, encoded[name].features)
    log.info("frozen encoder: %d texts encoded once (%.1f s); training the head on cached features",
             sum(len(split) for split in splits.values()), time.perf_counter() - started)
    return encoded


def model_fingerprint(model: TextClassifier, precision: Precision) -> str:
    """A hash of what decides the pooled vectors: encoder weights, architecture, pooling, precision."""
    digest = hashlib.sha256(f"{type(model.encoder).__name__}\n{model.pooling}\n{precision.name}\n".encode())
    for name, tensor in model.encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _split_key(split: TokenizedSplit, model_key: str) -> str:
    digest = hashlib.sha256(model_key.encode())
    digest.update(np.ascontiguousarray(split.ids).tobytes())
    digest.update(np.ascontiguousarray(split.offsets).tobytes())
    return digest.hexdigest()[:32]
