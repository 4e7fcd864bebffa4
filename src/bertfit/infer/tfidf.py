"""TF-IDF + logistic regression: the bag-of-words reference a fine-tuned model should beat, and the second
part of a stacked ensemble (bertfit.infer.stack).

Fitting needs scikit-learn (`bertfit[eval]`); a fitted `TfidfModel` is plain arrays (vocabulary, idf,
coefficients, intercepts) saved as one .npz file without pickles and applied here in NumPy alone, so an
exported run predicts with it without scikit-learn, SciPy or torch. The text analysis is scikit-learn's
default (lowercase, words of 2+ letters or digits, 1-2-grams, sublinear tf, smoothed idf, L2 norm); the
vectorizer is handed `word_ngrams` itself, so fitting and predicting read a text the same way.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from bertfit.atomic import atomic_file
from bertfit.errors import BertfitError

TINY = 1e-12  # keeps log(0) finite for classes absent from training
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern
MAX_FEATURES, C, MAX_ITER = 200_000, 10.0, 1000
FORMAT = 1  # version of the .npz layout
CHUNK_TEXTS = 512  # texts scored at a time: bounds the (classes x terms found) temporary


def word_ngrams(text: str) -> list[str]:
    """The words and word pairs of a text, as scikit-learn's default analyzer with ngram_range (1, 2) gives them."""
    tokens = TOKEN.findall(text.lower())
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def tfidf_features(texts: list[str], index: dict[str, int], idf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The TF-IDF matrix of `texts` over the terms of `index` as (row, term, value) triplets, rows in order, each
    row of unit length."""
    rows, cols, counts = [], [], []
    for row, text in enumerate(texts):
        found = [(index[gram], n) for gram, n in Counter(word_ngrams(text)).items() if gram in index]
        rows += [row] * len(found)
        cols += [col for col, _ in found]
        counts += [n for _, n in found]
    rows_a, cols_a = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    values = (1.0 + np.log(np.asarray(counts, dtype=np.float64))) * idf[cols_a]
    norms = np.sqrt(np.bincount(rows_a, weights=values * values, minlength=len(texts)))
    return rows_a, cols_a, values / norms[rows_a] if len(values) else values


class TfidfModel:
    """A fitted TF-IDF + logistic regression. Single-label: a softmax over `columns` (the label ids seen in
    training; the others get probability ~0). Multi-label: one sigmoid per label."""

    def __init__(self, terms: list[str], idf: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                 columns: np.ndarray, num_labels: int, multi_label: bool = False):
        self.terms, self.idf, self.coef, self.intercept = list(terms), idf, coef, intercept
        self.columns, self.num_labels, self.multi_label = columns, num_labels, multi_label
        self.index = {term: i for i, term in enumerate(self.terms)}

    def decision(self, texts: list[str]) -> np.ndarray:
        """The logistic regression's scores, one column per row of `coef`."""
        out = np.empty((len(texts), len(self.columns)))
        for start in range(0, len(texts), CHUNK_TEXTS):
            part = texts[start:start + CHUNK_TEXTS]
            rows, cols, values = tfidf_features(part, self.index, self.idf)
            for k in range(len(self.columns)):
                out[start:start + len(part), k] = np.bincount(rows, weights=values * self.coef[k, cols], minlength=len(part))
        return out + self.intercept

    def log_proba(self, texts: list[str]) -> np.ndarray:
        """Log-probabilities in the run's label order (multi-label: log of each label's own probability)."""
        scores = self.decision(texts)
        if self.multi_label:
            return -np.logaddexp(0.0, -scores)
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_probs = np.full((len(texts), self.num_labels), np.log(TINY))
        log_probs[:, self.columns] = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return log_probs

    def proba(self, texts: list[str]) -> np.ndarray:
        return np.exp(self.log_proba(texts))

    def save(self, path: Path) -> None:
        """One .npz of plain arrays (the vocabulary as UTF-8 bytes, one term a line): loads without pickle."""
        terms = np.frombuffer("\n".join(self.terms).encode("utf-8"), dtype=np.uint8)
        with atomic_file(Path(path), "wb") as file:
            np.savez_compressed(file, format=np.int64(FORMAT), terms=terms, idf=self.idf, coef=self.coef,
                                intercept=self.intercept, columns=self.columns, num_labels=np.int64(self.num_labels),
                                multi_label=np.bool_(self.multi_label))


def load_tfidf(path: Path, num_labels: int, multi_label: bool) -> TfidfModel:
    """A saved TfidfModel, checked against the model it belongs to; a damaged file is one line naming it."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
        model = _from_arrays(arrays)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise BertfitError(f"{path}: damaged TF-IDF file ({first}); rebuild it with `bertfit stack RUN`") from None
    if model.num_labels != num_labels or model.multi_label != multi_label:
        raise BertfitError(f"{path}: made for {model.num_labels} labels ({'multi' if model.multi_label else 'single'}-label), "
                           f"the model has {num_labels}; rebuild it with `bertfit stack RUN`")
    return model


def _from_arrays(arrays: dict[str, np.ndarray]) -> TfidfModel:
    if int(arrays["format"]) != FORMAT:
        raise ValueError(f"format {int(arrays['format'])}, expected {FORMAT}")
    terms = arrays["terms"].astype(np.uint8).tobytes().decode("utf-8").split("\n") if arrays["terms"].size else []
    idf, coef = arrays["idf"].astype(np.float64), arrays["coef"].astype(np.float64)
    intercept, columns = arrays["intercept"].astype(np.float64), arrays["columns"].astype(np.int64)
    num_labels = int(arrays["num_labels"])
    if idf.shape != (len(terms),) or coef.shape != (len(columns), len(terms)) or intercept.shape != columns.shape:
        raise ValueError(f"shapes disagree: {len(terms)} terms, idf {idf.shape}, coef {coef.shape}, "
                         f"intercept {intercept.shape}, columns {columns.shape}")
    if len(columns) == 0 or columns.min() < 0 or columns.max() >= num_labels or len(set(columns.tolist())) < len(columns):
        raise ValueError(f"label columns {columns.tolist()[:10]} do not fit {num_labels} labels")
    if not (np.isfinite(idf).all() and np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ValueError("non-finite numbers")
    return TfidfModel(terms, idf, coef, intercept, columns, num_labels, bool(arrays["multi_label"]))


def fit_tfidf(texts: list[str], labels: np.ndarray, num_labels: int, seed: int, multi_label: bool = False) -> TfidfModel:
    """Word 1-2-gram TF-IDF + logistic regression (C=10) fitted on `texts`; labels are ids, or 0/1 rows (multi-label)."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
    except ImportError:
        raise BertfitError("the TF-IDF model needs scikit-learn: pip install 'bertfit[eval]'") from None
    vectorizer = TfidfVectorizer(analyzer=word_ngrams, lowercase=False, token_pattern=None,
                                 max_features=MAX_FEATURES, sublinear_tf=True)
    try:
        vectorizer.fit(texts)
    except ValueError:  # no term at all: texts of single characters or symbols only
        raise BertfitError("the TF-IDF model found no words of two or more letters in the training texts") from None
    terms, idf = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get), vectorizer.idf_.astype(np.float64)
    rows, cols, values = tfidf_features(texts, {term: i for i, term in enumerate(terms)}, idf)
    from scipy.sparse import csr_matrix

    matrix = csr_matrix((values, (rows, cols)), shape=(len(texts), len(terms)))
    fit = _fit_per_label if multi_label else _fit_softmax
    coef, intercept, columns = fit(matrix, np.asarray(labels), num_labels, seed)
    return TfidfModel(terms, idf, coef, intercept, columns, num_labels, multi_label)


def _regression(seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=MAX_ITER, C=C, random_state=seed)


def _fit_softmax(matrix, labels: np.ndarray, num_labels: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One softmax over the classes present; two classes as +-half the binary score (the same probabilities)."""
    classes = np.unique(labels)
    if len(classes) == 1:
        return np.zeros((1, matrix.shape[1])), np.zeros(1), classes.astype(np.int64)
    classifier = _regression(seed).fit(matrix, labels)
    coef, intercept = classifier.coef_.astype(np.float64), classifier.intercept_.astype(np.float64)
    if len(classes) == 2:
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return coef, intercept, classifier.classes_.astype(np.int64)


def _fit_per_label(matrix, labels: np.ndarray, num_labels: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One binary regression per label; a label always (or never) present keeps its training frequency."""
    coef, intercept = np.zeros((num_labels, matrix.shape[1])), np.zeros(num_labels)
    for label in range(num_labels):
        truth = np.asarray(labels[:, label] > 0.5, dtype=np.int64)
        if truth.min() == truth.max():
            share = np.clip(truth.mean(), 1e-6, 1 - 1e-6)
            intercept[label] = np.log(share / (1 - share))
            continue
        classifier = _regression(seed).fit(matrix, truth)
        coef[label], intercept[label] = classifier.coef_[0], classifier.intercept_[0]
    return coef, intercept, np.arange(num_labels, dtype=np.int64)


def tfidf_logistic_logits(train_texts: list[str], train_labels: np.ndarray, test_texts: list[str],
                          num_labels: int, seed: int) -> np.ndarray:
    """Word 1-2-gram TF-IDF + logistic regression; log-probabilities in the run's label order."""
    return fit_tfidf(train_texts, train_labels, num_labels, seed).log_proba(test_texts)
