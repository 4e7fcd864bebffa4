"""Sliding windows over long texts, and pooling their logits back into one row per document.

With `model.window_stride` > 0 a text longer than max_length becomes several windows of at most
max_length tokens, each wrapped in [CLS] ... [SEP], starting every `stride` body tokens; the last
window is aligned to the end of the text so it is full and nothing at the end is lost. A tokenised
split then has one row per window and a `windows` offsets array: document d owns rows
windows[d]:windows[d+1]. Training uses every window as an example with its document's label (at most
`max_windows` per document); evaluation and prediction pool the windows' logits per document, outside
the network, so the same code serves the PyTorch and the ONNX backends and metrics count documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bertfit.config import ModelConfig
from bertfit.errors import BertfitError

Pooling = Literal["mean", "max"]


@dataclass(frozen=True)
class WindowSettings:
    stride: int  # body tokens between window starts
    pooling: Pooling = "mean"
    max_windows: int = 0  # windows kept per document (0: all); for_split sets it on the train split only

    @classmethod
    def for_split(cls, model_config: ModelConfig, split: str) -> "WindowSettings | None":
        """From a ModelConfig: the max_windows cap applies to the train split only (evaluation reads all)."""
        if not model_config.window_stride:  # 0, or unset before training chose it
            return None
        cap = model_config.max_windows if split == "train" else 0
        return cls(model_config.window_stride, model_config.window_pooling, cap)


@dataclass(frozen=True)
class TextCut:
    """How a text becomes the rows a model reads: its first max_length tokens, its head and tail (keep_head < 1), or
    windows over all of it. Training, evaluation, prediction, audit and explain cut a run's texts with one of these,
    so every command reads the tokens the model was trained on."""

    max_length: int
    keep_head: float = 1.0
    windows: WindowSettings | None = None

    @classmethod
    def of_model(cls, model_config: ModelConfig, split: str = "test") -> "TextCut":
        """A config's cut of `split` (training caps the windows a text, model.max_windows; other splits read all)."""
        return cls(model_config.max_length, model_config.keep_head, WindowSettings.for_split(model_config, split))

    @property
    def key(self) -> str:
        """What of the cut changes the tokens, for cache keys (window pooling does not)."""
        shape = str(self.max_length) if self.keep_head >= 1 else f"{self.max_length}:{self.keep_head}"
        return shape + (f":windows:{self.windows.stride}:{self.windows.max_windows}" if self.windows else "")


def window_starts(body_tokens: int, budget: int, stride: int) -> list[int]:
    """Start positions (in body tokens) of the windows covering a body of `body_tokens` tokens.

    Windows advance by `stride`; the last one ends exactly at the end of the body (it may overlap its
    neighbour by more than the others), so every window is full and the ending is always read.
    """
    if body_tokens <= budget:
        return [0]
    return list(range(0, body_tokens - budget, stride)) + [body_tokens - budget]


def cut_windows(ids: list[int], max_length: int, stride: int) -> list[list[int]]:
    """[CLS] body [SEP] -> windows [CLS] body[s:s+max_length-2] [SEP]; a short text stays one window."""
    if len(ids) <= max_length:
        return [ids]
    budget, body = max_length - 2, ids[1:-1]
    return [[ids[0], *body[start:start + budget], ids[-1]] for start in window_starts(len(body), budget, stride)]


def spread_windows(count: int, max_windows: int) -> np.ndarray:
    """Indices of `max_windows` of `count` windows, spread evenly from the first to the last.

    Even spacing rather than the first N: a review's verdict is often at its end, and first-N would
    train long texts on their openings only (what head truncation already does).
    """
    if max_windows <= 0 or count <= max_windows:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, max_windows).round().astype(np.int64))


def encode_windows(encoded_ids: list[list[int]], max_length: int,
                   settings: WindowSettings) -> tuple[list[list[int]], np.ndarray]:
    """Every text's windows, flat, and how many windows each text kept.

    `encoded_ids` are whole texts wrapped in exactly two special tokens ([CLS] ... [SEP]).
    """
    if not 1 <= settings.stride <= max_length - 2:  # a larger stride would skip tokens between windows
        raise BertfitError(f"window stride {settings.stride} must be in 1..{max_length - 2} (max_length {max_length} "
                           "minus [CLS] and [SEP])")
    pieces: list[list[int]] = []
    counts = np.zeros(len(encoded_ids), dtype=np.int64)
    for index, ids in enumerate(encoded_ids):
        windows = cut_windows(ids, max_length, settings.stride)
        kept = [windows[i] for i in spread_windows(len(windows), settings.max_windows)]
        pieces += kept
        counts[index] = len(kept)
    return pieces, counts


def pool_logits(logits: np.ndarray, windows: np.ndarray, pooling: Pooling) -> np.ndarray:
    """One row per document: the mean or the element-wise max of its windows' logits."""
    if len(windows) <= 1:
        return np.zeros((0, logits.shape[1]), dtype=logits.dtype)
    starts = windows[:-1]
    if pooling == "max":
        return np.maximum.reduceat(logits, starts, axis=0)
    counts = np.diff(windows).astype(logits.dtype)[:, None]
    return np.add.reduceat(logits, starts, axis=0) / counts
