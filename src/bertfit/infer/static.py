"""The static student at prediction time: one vector per token of the teacher's vocabulary, averaged, and a linear head.

    logits = W @ normalise(mean of the text's token vectors, special tokens left out) + b

The vectors were distilled from a fine-tuned encoder by model2vec and trained on with its probabilities
(bertfit.training.static). A text is read with the teacher's own tokenizer and cut (TokenizedSplit), so the
student serves beside the teacher's exports as one more variant (`static`) and is checked like them.
Everything here is NumPy on one .npz of plain arrays (no pickle): no torch, no transformers.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from bertfit.atomic import atomic_file
from bertfit.data.batching import TokenizedSplit
from bertfit.errors import BertfitError
from bertfit.infer import STATIC

STATIC_FILE = "static.npz"  # in the student's model folder, and under static/ in a teacher's export
FORMAT = 1  # version of the .npz layout
NORM_EPSILON = 1e-12  # keeps a text without a known token (a zero mean) finite
CHUNK_TOKENS = 1 << 18  # token vectors gathered at a time: bounds the (tokens x dims) temporary


class StaticModel:
    """Token vectors (vocabulary x dims), which token ids count (special tokens do not), and a linear head."""

    def __init__(self, vectors: np.ndarray, keep: np.ndarray, weight: np.ndarray, bias: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.keep = np.asarray(keep, dtype=np.float32)
        self.weight, self.bias = np.asarray(weight, dtype=np.float32), np.asarray(bias, dtype=np.float32)

    @property
    def num_labels(self) -> int:
        return len(self.bias)

    def features(self, split: TokenizedSplit) -> np.ndarray:
        """Each row's mean token vector (special tokens left out), scaled to unit length."""
        rows, lengths = len(split), split.lengths
        sums = np.zeros((rows, self.vectors.shape[1]), dtype=np.float32)
        counts = np.zeros(rows, dtype=np.float32)
        start = 0
        while start < rows:  # rows whose tokens fit CHUNK_TOKENS (at least one row)
            end = max(start + 1, int(np.searchsorted(split.offsets, split.offsets[start] + CHUNK_TOKENS, "right")) - 1)
            end = min(end, rows)
            low, high = split.offsets[start], split.offsets[end]
            ids = np.asarray(split.ids[low:high], dtype=np.int64)
            weights = self.keep[ids]
            filled = np.flatnonzero(lengths[start:end] > 0)
            if len(filled):
                starts = split.offsets[start:end][filled] - low
                sums[start + filled] = np.add.reduceat(self.vectors[ids] * weights[:, None], starts, axis=0)
                counts[start + filled] = np.add.reduceat(weights, starts)
            start = end
        means = sums / np.maximum(counts, 1.0)[:, None]
        return means / (np.linalg.norm(means, axis=1, keepdims=True) + NORM_EPSILON)

    def logits(self, split: TokenizedSplit) -> np.ndarray:
        return (self.features(split) @ self.weight.T + self.bias).astype(np.float32)

    def save(self, path: Path) -> None:
        with atomic_file(Path(path), "wb") as file:
            np.savez(file, format=np.int64(FORMAT), vectors=self.vectors, keep=self.keep.astype(bool),
                     weight=self.weight, bias=self.bias)


class StaticBackend:
    """The static student as an inference backend: `logits(split)` in NumPy, rows in order."""

    name = STATIC

    def __init__(self, model: StaticModel):
        self.model = model

    def logits(self, split: TokenizedSplit) -> np.ndarray:
        return self.model.logits(split)


def load_static(path: Path, num_labels: int | None = None) -> StaticModel:
    """A saved StaticModel; a damaged file, or one made for another label set, is one line naming it."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
        if int(arrays["format"]) != FORMAT:
            raise ValueError(f"format {int(arrays['format'])}, expected {FORMAT}")
        model = StaticModel(arrays["vectors"], arrays["keep"], arrays["weight"], arrays["bias"])
        vocabulary, dims = model.vectors.shape
        if model.keep.shape != (vocabulary,) or model.weight.shape != (len(model.bias), dims):
            raise ValueError(f"shapes disagree: vectors {model.vectors.shape}, keep {model.keep.shape}, "
                             f"weight {model.weight.shape}, bias {model.bias.shape}")
        if not (np.isfinite(model.vectors).all() and np.isfinite(model.weight).all() and np.isfinite(model.bias).all()):
            raise ValueError("non-finite numbers")
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise BertfitError(f"{path}: damaged static model ({first}); distil it again with "
                           "`bertfit distill TEACHER_RUN --student static`") from None
    if num_labels is not None and model.num_labels != num_labels:
        raise BertfitError(f"{path}: made for {model.num_labels} labels, the model has {num_labels}; distil it again")
    return model
