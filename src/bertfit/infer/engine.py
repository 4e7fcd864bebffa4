"""The one inference engine: a model in eval mode, batches longest first, outputs back in row order.

The training loop's evaluations, cached features, baselines, `evaluate`, the Predictor, the export's
self-check and the service all compute logits here, so every path batches, pads, casts and pools
sliding windows the same way. What a call needs besides the model travels as one `InferenceContext`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from bertfit.data.batching import FeatureSplit, TokenizedSplit, eval_batches, loader
from bertfit.infer.tokens import tokenize_like_training
from bertfit.meta import ModelMeta
from bertfit.runtime.device import Precision, autocast, choose_device, choose_precision

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (input_ids, attention_mask) -> outputs


@dataclass(frozen=True)
class InferenceContext:
    """Where and how a model runs: device, autocast precision, the tokenizer's pad id, rows per batch."""

    device: torch.device
    precision: Precision
    pad_id: int
    batch_size: int

    @classmethod
    def create(cls, pad_id: int, batch_size: int, device: str = "auto", precision: str = "auto") -> "InferenceContext":
        """From the device and precision names a user gives (auto: the best available here)."""
        chosen = choose_device(device)
        return cls(chosen, choose_precision(precision, chosen), pad_id, batch_size)

    @classmethod
    def cpu(cls, pad_id: int, batch_size: int) -> "InferenceContext":
        return cls(torch.device("cpu"), Precision("fp32", None), pad_id, batch_size)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.inference_mode()
def batch_outputs(forward: Forward, width: int, split: TokenizedSplit, context: InferenceContext) -> np.ndarray:
    """forward(input_ids, attention_mask) for every row of `split`, in row order, as float32 (batches
    run longest first, so memory peaks early and padding is minimal, then rows are put back)."""
    outputs = np.zeros((len(split), width), dtype=np.float32)
    batches = eval_batches(split.lengths, context.batch_size)
    device = context.device
    for batch in loader(split, batches, context.pad_id, pin_memory=device.type == "cuda"):
        with autocast(device, context.precision):
            out = forward(batch["input_ids"].to(device, non_blocking=True),
                          batch["attention_mask"].to(device, non_blocking=True))
        outputs[batch["rows"].numpy()] = out.float().cpu().numpy()
    return outputs


def row_logits(model: torch.nn.Module, split: TokenizedSplit | FeatureSplit, context: InferenceContext) -> np.ndarray:
    """Logits for every row (window) of a token split, or of a split of cached encoder vectors, in row order."""
    with eval_mode(model):
        if isinstance(split, FeatureSplit):
            return _feature_logits(model, split, context)
        return batch_outputs(model, model.head.out_features, split, context)


def split_logits(model: torch.nn.Module, split: TokenizedSplit | FeatureSplit, context: InferenceContext) -> np.ndarray:
    """Logits in document order: with sliding windows, each text's windows pooled into one row."""
    return split.document_logits(row_logits(model, split, context))


def text_logits(model: torch.nn.Module, tokenizer: Any, meta: ModelMeta, texts: list[str],
                context: InferenceContext) -> np.ndarray:
    """One row of raw logits (no temperature) per text, the texts cut as the model was trained."""
    return split_logits(model, tokenize_like_training(meta, tokenizer, texts), context)


def encode(model: torch.nn.Module, split: TokenizedSplit, context: InferenceContext) -> FeatureSplit:
    """Every row's pooled encoder vector (the head's input), in row order, float32 on the host."""
    with eval_mode(model):
        features = batch_outputs(model.encode, model.head.in_features, split, context)
    return FeatureSplit(features, split.labels, split.lengths, split.windows, split.pooling)


@torch.inference_mode()
def _feature_logits(model: torch.nn.Module, split: FeatureSplit, context: InferenceContext) -> np.ndarray:
    """The head alone on cached vectors (no encoder call)."""
    logits = np.zeros((len(split), model.head.out_features), dtype=np.float32)
    for start in range(0, len(split), context.batch_size):
        features = torch.from_numpy(split.features[start:start + context.batch_size]).to(context.device)
        with autocast(context.device, context.precision):
            logits[start:start + context.batch_size] = model(features=features).float().cpu().numpy()
    return logits
