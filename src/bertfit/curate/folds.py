"""Out-of-fold class probabilities for every training row: k-fold cross-fitting, so no row is scored
by a model that saw its label.

The fast path (`method="features"`) runs the pretrained encoder once per text (cached, as the frozen
encoder path of training does) and fits a logistic regression on the pooled vectors of k-1 folds to
score the k-th. `method="finetune"` fine-tunes the configured model on k-1 folds instead (k runs).
The pretrained encoder is used, never a run's fine-tuned one: that one has seen every row's label.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertfit.config import RunConfig, replace
from bertfit.data.batching import default_cache_dir, tokenize
from bertfit.data.labels import build_label_map, map_labels
from bertfit.data.read import read_split
from bertfit.data.windows import TextCut
from bertfit.errors import BertfitError
from bertfit.infer.engine import InferenceContext
from bertfit.model import TextClassifier, load_encoder, load_tokenizer
from bertfit.training.features import encode_splits

log = logging.getLogger(__name__)

METHODS = ("features", "finetune")
# C of the logistic regression on standardised vectors: strong regularisation gave the best out-of-fold
# accuracy on AG News with MiniLM vectors (0.878 at 0.001, 0.862 at 0.01, 0.813 at 1; bench/audit_noise.py)
STRENGTH = 0.001


@dataclass(frozen=True)
class LabelledRows:
    """The rows of the training file as read, with label ids."""

    source: str
    texts: list[str]
    labels: np.ndarray  # int64 ids into names
    names: tuple[str, ...]
    source_rows: tuple[int, ...]  # each row's number in its source (1 = the first data row; data.label_map may skip some)
    _positions: dict[int, int] = field(default_factory=dict, repr=False, compare=False)  # source row -> index, on demand

    def __len__(self) -> int:
        return len(self.texts)

    def index_of(self, number: int) -> int | None:
        """The row read from source row `number`; None for a row not read (data.label_map dropped it) or none at all."""
        if not self._positions:
            self._positions.update((n, i) for i, n in enumerate(self.source_rows))
        return self._positions.get(number)


def read_training_rows(config: RunConfig) -> LabelledRows:
    """Every row of data.train in file order (no validation split, no shuffle, no row cap)."""
    if config.data.multi_label:
        raise BertfitError("data.multi_label: the audit ranks errors of single-label data; multi-label is not supported")
    raw = read_split(config.data.train, "train", config.data)
    labels = build_label_map({"train": raw}, config.data.label_names)
    return LabelledRows(raw.source, raw.texts, np.asarray(map_labels(raw, labels), dtype=np.int64), labels.names,
                        tuple(raw.row_numbers()))


def check_folds(rows: LabelledRows, folds: int) -> None:
    """Every class needs a row in every fold (and k-1 folds to learn it from)."""
    if folds < 2:
        raise BertfitError(f"folds: must be >= 2, got {folds}")
    counts = np.bincount(rows.labels, minlength=len(rows.names))
    present = [(name, int(count)) for name, count in zip(rows.names, counts) if count > 0]
    if len(present) < 2:
        raise BertfitError(f"{rows.source}: every row has one label; an audit needs at least two classes")
    scarce = [(name, count) for name, count in present if count < folds]
    if scarce:
        listed = ", ".join(f"{name!r} has {count}" for name, count in scarce)
        raise BertfitError(f"folds: {folds}-fold cross-fitting needs >= {folds} rows per class; {rows.source} has too "
                           f"few ({listed}); lower it or add rows")


def frozen_features(config: RunConfig, texts: list[str]) -> np.ndarray:
    """Pooled vectors of the pretrained model.name encoder, one per text (cached on disk by content)."""
    tokenizer = load_tokenizer(config.model.name)
    context = InferenceContext.create(tokenizer.pad_token_id, config.train.eval_batch_size, config.train.device,
                                      config.train.precision)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    # One row a text (its pooled vector): the run's max_length and head+tail share, without windows.
    cut = TextCut(config.model.max_length, config.model.keep_head)
    split = tokenize(texts, np.zeros(len(texts), dtype=np.int64), tokenizer, cut, cache)
    model = TextClassifier(load_encoder(config.model.name), 2, config.model.pooling, 0.0).to(context.device)
    log.info("encoding %d texts with the frozen encoder %s (once; cached)", len(texts), config.model.name)
    return encode_splits(model, {"texts": split}, context, cache)["texts"].features


def fold_of_rows(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified fold number of each row (seeded)."""
    from sklearn.model_selection import StratifiedKFold

    fold = np.zeros(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for number, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[held_out] = number
    return fold


def logistic_probabilities(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, classes: int,
                           strength: float = STRENGTH) -> np.ndarray:
    """A standardised logistic regression fitted on (train_x, train_y); probabilities of test_x over all classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=2000))
    model.fit(train_x, train_y)
    probabilities = np.zeros((len(test_x), classes))
    probabilities[:, model.classes_] = model.predict_proba(test_x)
    return probabilities


def out_of_fold_logistic(features: np.ndarray, labels: np.ndarray, classes: int, folds: int, seed: int,
                         strength: float = STRENGTH) -> np.ndarray:
    """Each row's probabilities from a logistic regression fitted on the other folds."""
    fold = fold_of_rows(labels, folds, seed)
    probabilities = np.zeros((len(labels), classes))
    for number in range(folds):
        held_out = fold == number
        probabilities[held_out] = logistic_probabilities(features[~held_out], labels[~held_out], features[held_out],
                                                         classes, strength)
        log.info("fold %d/%d: %d rows scored", number + 1, folds, int(held_out.sum()))
    return probabilities


def out_of_fold_finetuned(config: RunConfig, rows: LabelledRows, folds: int, seed: int, work_dir: Path) -> np.ndarray:
    """Each row's probabilities from `config` fine-tuned on the other folds (k runs under work_dir)."""
    from bertfit.infer.predictor import Predictor
    from bertfit.training.recipe import train

    fold = fold_of_rows(rows.labels, folds, seed)
    probabilities = np.zeros((len(rows), len(rows.names)))
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".folds-") as scratch:
        for number in range(folds):
            held_out = fold == number
            train_file = write_rows(Path(scratch) / f"fold-{number}.csv", rows, np.flatnonzero(~held_out))
            fold_config = replace(config, name=f"fold-{number}", output_dir=scratch,
                                  data={"train": str(train_file), "validation": None, "test": None, "text_columns": ["text"],
                                        "label_column": "label", "label_names": list(rows.names), "format": "csv",
                                        "header": True, "max_train_rows": None, "streaming": False})
            log.info("fold %d/%d: fine-tuning on %d rows", number + 1, folds, int((~held_out).sum()))
            result = train(fold_config, overwrite=True)
            texts = [rows.texts[i] for i in np.flatnonzero(held_out)]
            probabilities[held_out] = Predictor(result.run_dir, device=config.train.device, backend="torch").predict_proba(texts)
    return probabilities


def write_rows(path: Path, rows: LabelledRows, indices: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """`text,label` CSV of the chosen rows, labels as names (`labels` overrides the rows' own ids)."""
    labels = rows.labels if labels is None else labels
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows([rows.texts[i], rows.names[labels[i]]] for i in indices)
    return path
