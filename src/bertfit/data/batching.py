"""Tokens and batches: tokenise once into a memory-mapped cache, then cut length-bucketed batches.

A tokenised split is two flat arrays, `ids` (every token of every text, end to end) and `offsets`
(where each text starts), so a batch is a few slices: no per-text Python objects in the hot loop.
Batches sort texts of similar length together inside shuffled mega-batches, and pad only to the
longest text of the batch, rounded up to a multiple of 8 (tensor-core friendly).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bertfit.atomic import atomic_dir
from bertfit.data.windows import TextCut, WindowSettings, encode_windows, pool_logits
from bertfit.errors import BertfitError

if TYPE_CHECKING:  # torch is imported where batches become tensors: tokenising and ONNX prediction run without it
    import torch

log = logging.getLogger(__name__)

PAD_MULTIPLE = 8
MAX_PADDING = 0.2  # eval batches: no row's padded width more than 20% below its batch's width
TOKENIZE_CHUNK = 4096


@dataclass(frozen=True)
class TokenizedSplit:
    ids: np.ndarray  # int32, all token ids end to end
    offsets: np.ndarray  # int64, len(texts) + 1: text i is ids[offsets[i]:offsets[i+1]]
    labels: np.ndarray  # int64 label ids (or a float matrix for multi-label), one per row
    # With sliding windows (data.windows) a row is a window: document d owns rows windows[d]:windows[d+1],
    # every one carrying the document's label. None: one row per text.
    windows: np.ndarray | None = None
    pooling: str = "mean"  # how window logits become the document's logits

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def document_labels(self) -> np.ndarray:
        return self.labels if self.windows is None else self.labels[self.windows[:-1]]

    @property
    def documents(self) -> int:
        """Texts in the split (rows are windows when windows are on)."""
        return len(self) if self.windows is None else len(self.windows) - 1

    def document_logits(self, row_logits: np.ndarray) -> np.ndarray:
        """Per-row logits pooled into one row per document (unchanged without windows)."""
        return row_logits if self.windows is None else pool_logits(row_logits, self.windows, self.pooling)


@dataclass(frozen=True)
class FeatureSplit:
    """A split already run through a frozen encoder: one pooled vector per text (see bertfit.training.features).

    It keeps the token lengths so the training batches are cut exactly as for the tokenised split.
    """

    features: np.ndarray  # float32, (rows, hidden)
    labels: np.ndarray
    lengths: np.ndarray  # token count per text
    windows: np.ndarray | None = None  # as in TokenizedSplit
    pooling: str = "mean"

    def __len__(self) -> int:
        return len(self.features)

    document_labels = TokenizedSplit.document_labels
    documents = TokenizedSplit.documents
    document_logits = TokenizedSplit.document_logits


def default_cache_dir() -> Path:
    return Path(os.environ.get("BERTFIT_CACHE", Path.home() / ".cache" / "bertfit"))


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides token ids: vocabulary, normaliser, special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        description = repr(sorted(tokenizer.get_vocab().items()))
    else:
        # Truncation and padding are call settings the tokenizer remembers, not part of its identity.
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        description = json.dumps(state, sort_keys=True)
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{description}".encode()).hexdigest()


def tokenize(texts: list[str], labels, tokenizer, cut: TextCut, cache_dir: Path | None = None) -> TokenizedSplit:
    """Token ids for `texts` cut by `cut`, read from the cache when the same texts, tokenizer and cut were seen.

    A text longer than max_length keeps its first `keep_head` share of the budget and fills the rest
    from its end (head+tail truncation: the end of a review often carries the verdict), or with
    windows becomes several overlapping windows (rows), each labelled with its text's label.
    """
    label_array = np.asarray(labels, dtype=np.float32 if np.ndim(labels) == 2 else np.int64)
    windows = cut.windows
    if cache_dir is None:
        ids, offsets, documents = _encode(texts, tokenizer, cut.max_length, cut.keep_head, windows)
        return _split(ids, offsets, label_array, documents, windows)
    folder = Path(cache_dir) / "tokens" / _cache_key(texts, tokenizer, cut.key)
    cached = _read_cache(folder, len(texts), windows is not None) if (folder / "offsets.npy").is_file() else None
    if cached is None:
        shutil.rmtree(folder, ignore_errors=True)  # a damaged cache (bertfit's own folder) is rebuilt from the texts
        _write_cache(folder, *_encode(texts, tokenizer, cut.max_length, cut.keep_head, windows))
        cached = _read_cache(folder, len(texts), windows is not None)
    ids, offsets, documents = cached
    return _split(ids, offsets, label_array, documents, windows)


def _read_cache(folder: Path, rows: int, with_windows: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """The cached ids (memory-mapped), offsets and windows; None, with a warning, where damaged (then rebuilt)."""
    problem = "its files do not match the texts"
    try:
        ids = np.load(folder / "ids.npy", mmap_mode="r")
        offsets = np.load(folder / "offsets.npy")
        documents = np.load(folder / "windows.npy") if with_windows else None
        if (offsets.ndim == 1 and len(offsets) >= 1 and offsets[0] == 0 and offsets[-1] == len(ids)
                and len(documents if documents is not None else offsets) == rows + 1):
            log.info("token cache hit: %s", folder)
            return ids, offsets, documents
    except (OSError, ValueError, EOFError) as error:
        problem = str(error)[:120]
    log.warning("token cache %s is damaged (%s); rebuilding it", folder, problem)
    return None


def _split(ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray, documents: np.ndarray | None,
           windows: WindowSettings | None) -> TokenizedSplit:
    if documents is None:
        return TokenizedSplit(ids, offsets, labels)
    # Every window repeats its document's label: windows are the training examples.
    return TokenizedSplit(ids, offsets, np.repeat(labels, np.diff(documents), axis=0), documents, windows.pooling)


def _cache_key(texts: list[str], tokenizer, max_length: int | str) -> str:
    digest = hashlib.sha256(f"{tokenizer_fingerprint(tokenizer)}\n{max_length}\n{len(texts)}\n".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def _encode(texts: list[str], tokenizer, max_length: int, keep_head: float = 1.0,
            windows: WindowSettings | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Batched fast-tokenizer calls; truncation keeps [CLS] ... [SEP] within max_length.

    Returns ids, row offsets and, with windows, each text's window offsets (else None).
    """
    head_tail = keep_head < 1
    whole = head_tail or windows is not None  # cut by us, after tokenising the whole text
    if whole and tokenizer.num_special_tokens_to_add(pair=False) != 2:  # both cut between [CLS] and [SEP]
        field = "model.window_stride > 0" if windows is not None else "model.keep_head < 1"
        raise BertfitError(f"{field} needs a tokenizer that wraps a text in exactly two special tokens")
    pieces: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        encoded = tokenizer(texts[start:start + TOKENIZE_CHUNK], truncation=not whole,
                            max_length=None if whole else max_length, verbose=False,
                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        if windows is not None:
            encoded, windows_per_text = encode_windows(encoded, max_length, windows)
            counts.append(windows_per_text)
        pieces += [np.asarray(_head_tail(ids, max_length, keep_head) if head_tail else ids, dtype=np.int32)
                   for ids in encoded]
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    documents = np.concatenate([[0], np.cumsum(np.concatenate(counts or [np.zeros(0, np.int64)]))]) \
        if windows is not None else None
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.int32)), offsets, documents


def _head_tail(ids: list[int], max_length: int, keep_head: float) -> list[int]:
    """[CLS] first tokens ... last tokens [SEP], max_length in all."""
    if len(ids) <= max_length:
        return ids
    budget = max_length - 2
    head = round(budget * keep_head)
    body = ids[1:-1]
    return [ids[0], *body[:head], *body[len(body) - (budget - head):], ids[-1]]


def _write_cache(folder: Path, ids: np.ndarray, offsets: np.ndarray, documents: np.ndarray | None = None) -> None:
    """Written beside the final folder and renamed, so a crash never leaves a half-written cache."""
    with atomic_dir(folder, keep_existing=True) as staging:
        np.save(staging / "ids.npy", ids)
        if documents is not None:
            np.save(staging / "windows.npy", documents)
        np.save(staging / "offsets.npy", offsets)


def train_batches(lengths: np.ndarray, batch_size: int, bucket_batches: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's batches of row indices: shuffled, length-sorted within mega-batches, batch order shuffled.

    A pure function of (lengths, sizes, seed, epoch), so a resumed run cuts the same batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start:start + mega]
        if bucket_batches > 1:
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def padded_width(lengths: int | np.ndarray) -> int | np.ndarray:
    """Token count(s) rounded up to the PAD_MULTIPLE a batch is padded to (an int or an array)."""
    return -(-lengths // PAD_MULTIPLE) * PAD_MULTIPLE


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Rows sorted longest first (memory peaks early), cut so that padding stays small; callers restore order.

    A batch ends at `batch_size` rows or at the first row whose padded width is more than MAX_PADDING
    below the batch's own: ten mixed-length texts from a server's micro-batch then run as two or three
    tight batches instead of one padded to the longest (measured 1.3x faster with PyTorch and 1.6x with
    ONNX int8 on AG News; docs/decisions.md).
    """
    order = np.argsort(-lengths, kind="stable")
    widths = padded_width(lengths[order])
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or end - start == batch_size or widths[end] < (1 - MAX_PADDING) * widths[start]:
            batches.append(order[start:end])
            start = end
    return batches


def pad_rows(split: TokenizedSplit, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) of `rows`, int64, padded to their longest row rounded up to PAD_MULTIPLE."""
    starts, ends = split.offsets[rows], split.offsets[rows + 1]
    width = padded_width(int((ends - starts).max(initial=0)))  # 0 rows: a rank's empty share of a tiny batch
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, (start, end) in enumerate(zip(starts, ends)):
        input_ids[i, : end - start] = split.ids[start:end]
        attention_mask[i, : end - start] = 1
    return input_ids, attention_mask


class PaddedBatches:
    """Maps an array of row indices to one padded batch of tensors (used with DataLoader(batch_size=None))."""

    def __init__(self, split: TokenizedSplit, pad_id: int):
        self.split = split
        self.pad_id = pad_id

    def __getitem__(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        import torch

        input_ids, attention_mask = pad_rows(self.split, rows, self.pad_id)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "labels": torch.from_numpy(np.asarray(self.split.labels[rows])),
            "rows": torch.from_numpy(np.asarray(rows, dtype=np.int64)),
        }

    def __len__(self) -> int:  # not used for sampling; the batch lists drive iteration
        return len(self.split)


class FeatureBatches:
    """Maps an array of row indices to a batch of cached pooled vectors (the model takes them as `features`)."""

    def __init__(self, split: FeatureSplit):
        self.split = split

    def __getitem__(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        import torch

        return {"features": torch.from_numpy(self.split.features[rows]),
                "labels": torch.from_numpy(np.asarray(self.split.labels[rows])),
                "rows": torch.from_numpy(np.asarray(rows, dtype=np.int64))}

    def __len__(self) -> int:
        return len(self.split)


def loader(split: TokenizedSplit | FeatureSplit, batches: list[np.ndarray], pad_id: int, num_workers: int = 0,
           pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over precomputed batches; workers build padded tensors while the model runs."""
    import torch

    dataset = FeatureBatches(split) if isinstance(split, FeatureSplit) else PaddedBatches(split, pad_id)
    # Its own generator: a DataLoader otherwise draws a seed from the global RNG at every iter(),
    # which would make dropout depend on how often loaders were created (and break exact resume).
    return torch.utils.data.DataLoader(dataset, sampler=batches, batch_size=None,
                                       num_workers=num_workers, pin_memory=pin_memory,
                                       generator=torch.Generator().manual_seed(0))
