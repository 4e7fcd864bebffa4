"""`bertfit suggest RUN --pool FILE --n 50`: the next texts to label, uncertain yet unlike each other.

The run's model reads every pool text once: its pooled vector (before the head) and, from the head on
that vector, its calibrated class probabilities, as the Predictor computes them. The candidates are
the pool texts with the smallest margin between the two most probable classes; among them, k-center
greedy picks texts far apart in the model's own vector space (the most uncertain first, then each
time the candidate farthest from every pick so far), so 50 suggestions are not 50 near-copies.
Texts already in the run's training or validation data, and repeats within the pool, are never suggested.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertfit import artifacts
from bertfit.config import FILE_FORMATS, DataConfig, RunConfig, override
from bertfit.config_values import parse_overrides
from bertfit.curate.tables import write_table
from bertfit.data.inspection import near_key
from bertfit.data.read import read_file, read_split
from bertfit.data.tables import join_text_columns
from bertfit.errors import BertfitError
from bertfit.infer.engine import InferenceContext, encode, row_logits, tokenize_like_training
from bertfit.metrics import softmax

log = logging.getLogger(__name__)

CANDIDATES_PER_PICK = 5  # diversity is sought among the n * 5 most uncertain texts


@dataclass(frozen=True)
class Suggestion:
    pool_row: int  # 1 = the pool file's first data row
    text: str  # the text columns joined, as the model reads them
    predicted: str
    margin: float  # probability of the most likely class minus the second's: small = uncertain
    values: tuple = ()  # the pool row's own text column values, in data.text_columns order


@dataclass(frozen=True)
class Pool:
    texts: list[str]  # each row's text columns joined, as training joins them
    values: list[tuple]  # each row's text column values as written


def read_pool(path: str | Path, data: DataConfig) -> Pool:
    """The pool's texts (data.text_columns); a pool that holds labels or no texts is refused."""
    path = Path(path)
    if not path.is_file():
        raise BertfitError(f"pool: file {path} not found")
    columns = read_file(path, data)
    missing = [c for c in data.text_columns if c not in columns]
    if missing:
        raise BertfitError(f"{path}: text column(s) {', '.join(missing)} not found (columns: {', '.join(map(str, columns))}); "
                           "the pool needs the text column(s) the run was trained on (or set data.text_columns)")
    labelled = sum(1 for v in columns.get(data.label_column, []) if v is not None and str(v).strip())
    if labelled:
        raise BertfitError(f"{path}: column {data.label_column!r} holds labels in {labelled} rows; the pool must be "
                           "unlabelled texts (remove the column, or leave it empty)")
    values = list(zip(*(columns[c] for c in data.text_columns)))  # each row's cells, kept for the suggestions file
    texts = join_text_columns(columns, data.text_columns)
    if not texts:
        raise BertfitError(f"{path}: the pool is empty (no rows)")
    for row, text in enumerate(texts, start=1):
        if not text:
            raise BertfitError(f"{path} row {row}: empty text; fix or remove the row")
    return Pool(texts, values)


def labelled_keys(config: RunConfig) -> set[str]:
    """Normalised texts of the run's training data (and of its validation file, if it had one)."""
    specs = [("train", config.data.train)] + ([("validation", config.data.validation)] if config.data.validation else [])
    return {near_key(text) for split, spec in specs for text in read_split(spec, split, config.data).texts}


def fresh_rows(texts: list[str], known: set[str]) -> np.ndarray:
    """Indices of the pool texts not labelled already, each distinct normalised text once (its first row)."""
    seen, keep = set(known), []
    for index, text in enumerate(texts):
        key = near_key(text)
        if key not in seen:
            seen.add(key)
            keep.append(index)
    return np.asarray(keep, dtype=np.int64)


def margins(probabilities: np.ndarray) -> np.ndarray:
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def k_center_greedy(vectors: np.ndarray, count: int) -> list[int]:
    """`count` indices: index 0 first, then each time the vector farthest (cosine) from all chosen so far."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    chosen = [0]
    distance = 1.0 - unit @ unit[0]
    while len(chosen) < min(count, len(unit)):
        distance[chosen] = -np.inf
        pick = int(np.argmax(distance))
        chosen.append(pick)
        distance = np.minimum(distance, 1.0 - unit @ unit[pick])
    return chosen


def select(probabilities: np.ndarray, vectors: np.ndarray, count: int,
           candidates_per_pick: int = CANDIDATES_PER_PICK) -> np.ndarray:
    """Rows to label next: k-center greedy over the count * candidates_per_pick smallest-margin rows."""
    order = np.argsort(margins(probabilities), kind="stable")
    candidates = order[:max(count, count * candidates_per_pick)]
    return candidates[k_center_greedy(vectors[candidates], count)]


def model_view(run_dir: Path, texts: list[str], device: str = "auto", batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, pooled vectors) of the run's model for `texts`, one encoder pass."""
    loaded = artifacts.load_model(run_dir)
    if loaded.meta.multi_label:
        raise BertfitError(f"{run_dir}: a multi-label model; suggest ranks single-label uncertainty")
    context = InferenceContext.create(loaded.tokenizer.pad_token_id, batch_size, device)
    split = tokenize_like_training(loaded.meta, loaded.tokenizer, texts)
    loaded.model.to(context.device)
    features = encode(loaded.model, split, context)
    logits = split.document_logits(row_logits(loaded.model, features, context))
    return softmax(logits / loaded.meta.temperature), split.document_logits(features.features)


def suggest(run_dir: str | Path, pool: str | Path, count: int = 50, out: str | Path | None = None,
            device: str = "auto", overwrite: bool = False, overrides: list[str] | None = None) -> list[Suggestion]:
    """The `count` pool texts to label next; with `out`, also a file to label in the run's own columns (its text
    columns, an empty label column, then pool_row, predicted, margin). `overrides` are field flags
    (--data.text_columns ...) for reading the pool; by default it is read with the run's own settings.
    An existing `out` is refused unless `overwrite`: it may hold labels filled in by hand."""
    if count < 1:
        raise BertfitError(f"n: must be >= 1, got {count}")
    if out is not None and Path(out).exists() and not overwrite:
        raise BertfitError(f"{out} already exists and may hold labels filled in by hand; choose another file (out) "
                           "or replace it (overwrite)")
    run_dir = Path(run_dir)
    config = artifacts.read_run_config(run_dir)
    data = override(config, dict(parse_overrides(overrides or []))).data
    read = read_pool(pool, data)
    rows = fresh_rows(read.texts, labelled_keys(config))
    log.info("pool %s: %d texts, %d new to the run (%d already labelled or repeated)", pool, len(read.texts), len(rows),
             len(read.texts) - len(rows))
    if len(rows) == 0:
        raise BertfitError(f"{pool}: every pool text is already in the run's training data; nothing to suggest")
    if len(rows) < count:
        log.warning("only %d new texts in the pool; suggesting all of them", len(rows))
    probabilities, vectors = model_view(run_dir, [read.texts[i] for i in rows], device)
    picked = select(probabilities, vectors, count)
    names = artifacts.read_model_meta(run_dir).labels
    spread = margins(probabilities)
    suggestions = [Suggestion(int(rows[i]) + 1, read.texts[rows[i]], names[int(probabilities[i].argmax())],
                              float(spread[i]), tuple(_stripped(v) for v in read.values[rows[i]])) for i in picked]
    if out is not None:
        write_suggestions(Path(out), suggestions, data)
    return suggestions


def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def write_suggestions(path: Path, suggestions: list[Suggestion], data: DataConfig) -> Path:
    """A file to label, named and laid out as the run reads data: its text columns as the pool had them, its
    label column empty, then pool_row, predicted and margin (as the file's extension says: CSV by default)."""
    columns: dict[str, list] = {column: [s.values[k] for s in suggestions] for k, column in enumerate(data.text_columns)}
    columns[data.label_column] = [""] * len(suggestions)
    for name, values in (("pool_row", [s.pool_row for s in suggestions]), ("predicted", [s.predicted for s in suggestions]),
                         ("margin", [round(s.margin, 4) for s in suggestions])):
        while name in columns:  # a column of the run's own may carry the name already
            name = f"suggested_{name}"
        columns[name] = values
    return write_table(path, columns, suggestion_format(path))


def suggestion_format(path: Path) -> str:
    """The format suggestions are written in: the one the extension names, else CSV."""
    return FILE_FORMATS.get(Path(path).suffix.lower(), "csv")
