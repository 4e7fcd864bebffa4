"""`bertfit audit`: likely label errors of the training data, ranked by confident learning (cleanlab)
on out-of-fold probabilities, and near-duplicate rows whose labels disagree.

Files written to the audit folder (RUN/audit for a run):

    audit.json         what was run and what was found (the report reads it)
    label_issues.csv   row, text, given_label, suggested_label, score, new_label: the rows cleanlab flags,
                       most likely errors first. score is the out-of-fold probability of the given label
                       (cleanlab's self-confidence; lower is more suspicious). new_label is left empty for a
                       reviewer: a label name relabels the row, DROP removes it, empty keeps it as given;
                       `bertfit audit --relabel FILE` applies it.
    conflicts.csv      row_a, row_b, label_a, label_b, similarity, match, text_a, text_b: pairs with the same
                       normalised text, or pooled vectors at cosine >= the threshold, labelled differently.

Rows are numbered as in the training file (1 = the first data row), as bertfit's error messages do.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from bertfit import artifacts
from bertfit.atomic import write_json_atomic, write_text_atomic
from bertfit.config import RunConfig, override
from bertfit.config_values import parse_overrides
from bertfit.curate.folds import (
    METHODS,
    STRENGTH,
    LabelledRows,
    check_folds,
    frozen_features,
    out_of_fold_finetuned,
    out_of_fold_logistic,
    read_training_rows,
)
from bertfit.curate.tables import csv_text
from bertfit.data.inspection import duplicate_groups, near_key
from bertfit.data.read import decode_file
from bertfit.errors import BertfitError

log = logging.getLogger(__name__)

ISSUE_COLUMNS = ("row", "text", "given_label", "suggested_label", "score", "new_label")
REVIEW_COPY = "reviewed.csv"  # --relabel keeps the review it applied beside the corrected data
CONFLICT_COLUMNS = ("row_a", "row_b", "label_a", "label_b", "similarity", "match", "text_a", "text_b")


@dataclass(frozen=True)
class AuditSettings:
    folds: int = 5
    method: str = "features"  # features: frozen encoder + logistic regression per fold; finetune: a run per fold
    similarity: float = 0.95  # cosine of pooled vectors at or above which two rows count as near-duplicates
    strength: float = STRENGTH  # inverse regularisation (C) of the logistic regression
    seed: int = 42

    def check(self) -> None:
        if self.method not in METHODS:
            raise BertfitError(f"method: must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0 < self.similarity <= 1:
            raise BertfitError(f"similarity: must be in (0, 1], got {self.similarity}")


@dataclass(frozen=True)
class AuditResult:
    out_dir: Path
    rows: int
    flagged: np.ndarray  # row indices (0-based) cleanlab flags, most likely errors first
    probabilities: np.ndarray  # out-of-fold, one row per training row
    conflicts: int
    seconds: float

    @property
    def suggested(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def audit_run(run_dir: str | Path, settings: AuditSettings = AuditSettings()) -> AuditResult:
    """Audit the training data of a run into RUN/audit."""
    run_dir = Path(run_dir)
    return audit(run_config(run_dir), run_dir / artifacts.AUDIT_DIR, settings)


def run_config(run_dir: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """A run's config as its audit reads it: the run's own data settings with field flags on top
    (--data.text_columns ...), and new runs placed beside it (in its folder's parent, wherever it was made)."""
    run_dir = Path(run_dir)
    config = artifacts.read_run_config(run_dir)
    beside = {"output_dir": os.path.abspath(run_dir.parent)}
    return override(config, dict(parse_overrides(overrides or [])), **beside)


def audit(config: RunConfig, out_dir: str | Path, settings: AuditSettings = AuditSettings()) -> AuditResult:
    """Out-of-fold probabilities for every row of data.train, label issues and conflicting near-duplicates."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        raise BertfitError("the audit needs cleanlab and scikit-learn: pip install 'bertfit[curate]'") from None
    settings.check()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    check_no_pending_review(out_dir / artifacts.AUDIT_ISSUES)
    rows = read_training_rows(config)
    check_folds(rows, settings.folds)
    log.info("audit of %s: %d rows, %d classes, %d folds (%s)", rows.source, len(rows), len(rows.names), settings.folds,
             settings.method)
    features = frozen_features(config, rows.texts)
    if settings.method == "features":
        probabilities = out_of_fold_logistic(features, rows.labels, len(rows.names), settings.folds, settings.seed,
                                             settings.strength)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        probabilities = out_of_fold_finetuned(config, rows, settings.folds, settings.seed, out_dir)
    flagged = np.asarray(find_label_issues(rows.labels, probabilities, filter_by="prune_by_noise_rate",
                                           return_indices_ranked_by="self_confidence", n_jobs=1), dtype=np.int64)
    conflicts = conflicting_duplicates(rows, features, settings.similarity)
    result = AuditResult(out_dir, len(rows), flagged, probabilities, len(conflicts), time.perf_counter() - started)
    _write_files(result, rows, conflicts, settings)
    log.info("audit: %d likely label errors, %d conflicting near-duplicate pairs (%.1f s) -> %s", len(flagged),
             len(conflicts), result.seconds, out_dir)
    return result


def check_no_pending_review(issues: Path) -> None:
    """A label_issues.csv with new_label filled in holds a reviewer's work: a new audit must not replace it
    unless --relabel applied it (each applied review is kept as AUDIT/NAME/reviewed.csv)."""
    if not issues.is_file():
        return
    content = issues.read_bytes()
    if any(copy.read_bytes() == content for copy in issues.parent.glob(f"*/{REVIEW_COPY}")):
        return
    reviewed = sum(1 for record in csv.DictReader(decode_file(issues).splitlines())
                   if (record.get("new_label") or "").strip())
    if reviewed:
        raise BertfitError(f"{issues}: {reviewed} rows have new_label filled in, which a new audit would overwrite; "
                           f"apply them first (--relabel {issues}) or move the file away")


def conflicting_duplicates(rows: LabelledRows, features: np.ndarray, similarity: float,
                           block_rows: int = 1024) -> list[tuple[int, int, float, str]]:
    """(a, b, similarity, match) for row pairs a < b labelled differently whose normalised texts are equal
    or whose vectors' cosine is >= similarity (computed a block of rows at a time)."""
    labels = rows.labels
    pairs: dict[tuple[int, int], tuple[float, str]] = {}
    for group in duplicate_groups(rows.texts, near_key):
        for a, b in combinations(group, 2):
            if labels[a] != labels[b]:
                pairs[(a, b)] = (1.0, "same text")
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    for start in range(0, len(unit), block_rows):
        cosines = unit[start:start + block_rows] @ unit.T
        first, second = np.nonzero(cosines >= similarity)
        for i, j in zip(first + start, second):
            if j > i and labels[i] != labels[j]:
                pairs.setdefault((int(i), int(j)), (float(cosines[i - start, j]), "cosine"))
    return sorted(((a, b, sim, how) for (a, b), (sim, how) in pairs.items()), key=lambda p: (-p[2], p[0], p[1]))


def _write_files(result: AuditResult, rows: LabelledRows, conflicts: list[tuple[int, int, float, str]],
                 settings: AuditSettings) -> None:
    names, scores = rows.names, result.probabilities[np.arange(rows.labels.size), rows.labels]
    suggested = result.suggested
    number = rows.source_rows
    issues = [(number[i], rows.texts[i], names[rows.labels[i]], names[suggested[i]], f"{scores[i]:.4f}", "")
              for i in result.flagged]
    pairs = [(number[a], number[b], names[rows.labels[a]], names[rows.labels[b]], f"{sim:.4f}", how, rows.texts[a], rows.texts[b])
             for a, b, sim, how in conflicts]
    write_text_atomic(result.out_dir / artifacts.AUDIT_ISSUES, csv_text(ISSUE_COLUMNS, issues))
    write_text_atomic(result.out_dir / artifacts.AUDIT_CONFLICTS, csv_text(CONFLICT_COLUMNS, pairs))
    agreement = float((suggested == rows.labels).mean())
    write_json_atomic(result.out_dir / artifacts.AUDIT_SUMMARY, {
        "source": rows.source, "rows": len(rows), "labels": list(names), "settings": asdict(settings),
        "out_of_fold_accuracy": round(agreement, 4), "label_issues": len(issues),
        "label_issues_by_given_label": {n: int((rows.labels[result.flagged] == k).sum()) for k, n in enumerate(names)},
        "conflicting_pairs": len(pairs), "seconds": round(result.seconds, 1)})
