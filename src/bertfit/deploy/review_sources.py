"""The items `bertfit review` shows, read from the files `bertfit audit` and `bertfit suggest` write.

audit: each row of RUN/audit/label_issues.csv (cleanlab's likely label errors, most likely first), then each row
of RUN/audit/conflicts.csv's pairs not flagged already; each shows its given label, the out-of-fold suggestion and
the rows it conflicts with. label: each row of a suggestions file, pre-filled with the model's guess (or with a
label already typed into it). A label or new_label filled in by hand pre-selects that label.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from bertfit import artifacts
from bertfit.config import FILE_FORMATS, DataConfig
from bertfit.data.read import decode_file, read_file
from bertfit.data.tables import join_text_columns
from bertfit.deploy.review_state import DROP, REVIEW_DIR, ReviewState, item_record, load_items
from bertfit.errors import BertfitError

SUGGESTION_COLUMNS = ("pool_row", "predicted", "margin")  # what `bertfit suggest` adds after the run's own columns
SHOWN_CONFLICTS = 5  # the most similar rows shown beside an item: a reviewer reads a few, not hundreds


def open_review(run_dir: str | Path, suggestions: str | Path | None = None,
                folder: str | Path | None = None) -> ReviewState:
    """The review of a run: its saved queue plus what its audit and `suggestions` add, and its journal."""
    run_dir = Path(run_dir)
    folder = Path(folder) if folder is not None else run_dir / REVIEW_DIR
    labels = list(artifacts.read_model_meta(run_dir).labels)
    fresh = audit_items(run_dir / artifacts.AUDIT_DIR, labels)
    if suggestions is not None:
        fresh += suggestion_items(Path(suggestions), artifacts.read_run_config(run_dir).data, labels)
    items = load_items(folder, fresh)
    if not items:
        raise BertfitError(f"{run_dir}: nothing to review: run `bertfit audit {run_dir}` (label errors) or "
                           f"`bertfit suggest {run_dir} --pool FILE` and give its file here (suggestions)")
    return ReviewState(folder, labels, items)


def _csv_records(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    records = list(csv.DictReader(decode_file(path).splitlines()))
    missing = [c for c in needed if records and c not in records[0]]
    if missing:
        raise BertfitError(f"{path}: column(s) {', '.join(missing)} not found; run `bertfit audit` again to rewrite it")
    return records


def audit_items(audit_dir: Path, labels: list[str]) -> list[dict[str, Any]]:
    """Items of the audit queue (empty when the run was not audited)."""
    issues_path, conflicts_path = audit_dir / artifacts.AUDIT_ISSUES, audit_dir / artifacts.AUDIT_CONFLICTS
    issues = _csv_records(issues_path, ("row", "text", "given_label", "suggested_label", "score")) \
        if issues_path.is_file() else []
    pairs = _csv_records(conflicts_path, ("row_a", "row_b", "label_a", "label_b", "similarity", "match", "text_a",
                                          "text_b")) if conflicts_path.is_file() else []
    conflicts: dict[int, list[dict[str, Any]]] = {}
    rows: dict[int, tuple[str, str]] = {}  # row -> (text, given label), for rows only the conflicts name
    for pair in pairs:
        for this, other in (("a", "b"), ("b", "a")):
            row = int(pair[f"row_{this}"])
            rows.setdefault(row, (pair[f"text_{this}"], pair[f"label_{this}"]))
            shown = conflicts.setdefault(row, [])
            if len(shown) < SHOWN_CONFLICTS:  # conflicts.csv lists the most similar pairs first
                shown.append({"row": int(pair[f"row_{other}"]), "label": pair[f"label_{other}"],
                              "text": pair[f"text_{other}"], "similarity": float(pair["similarity"]),
                              "match": pair["match"]})
    items = []
    for line, issue in enumerate(issues, start=2):
        row, typed = int(issue["row"]), (issue.get("new_label") or "").strip()
        for value in (issue["given_label"], issue["suggested_label"], typed):
            if value and value not in labels + [DROP]:
                raise BertfitError(f"{issues_path} line {line}: label {value!r} is not one of the model's "
                                   f"({', '.join(labels)}); audit the run again")
        items.append(item_record("audit", f"audit-{row}", issue["text"], typed or issue["given_label"], row=row,
                                 given=issue["given_label"], suggested=issue["suggested_label"],
                                 score=float(issue["score"]), conflicts=conflicts.get(row, []), reason="label issue"))
    flagged = {item["row"] for item in items}
    for row in sorted(set(rows) - flagged):
        text, given = rows[row]
        items.append(item_record("audit", f"audit-{row}", text, given, row=row, given=given, suggested=None, score=None,
                                 conflicts=conflicts[row], reason="conflicting near-duplicate"))
    return items


def suggestion_items(path: Path, data: DataConfig, labels: list[str]) -> list[dict[str, Any]]:
    """Items of the label queue from a file `bertfit suggest` wrote (the run's text columns, its label column,
    then pool_row, predicted, margin); its format is the one its extension names, else CSV."""
    if not path.is_file():
        raise BertfitError(f"suggestions: file {path} not found")
    reading = replace(data, format=FILE_FORMATS.get(path.suffix.lower(), "csv"), header=True)
    columns = read_file(path, reading)
    names = list(columns)
    extra = names[-len(SUGGESTION_COLUMNS):]
    missing = [c for c in (*data.text_columns, data.label_column) if c not in columns]
    if missing or not all(n.endswith(c) for n, c in zip(extra, SUGGESTION_COLUMNS)):
        raise BertfitError(f"{path}: not a file `bertfit suggest` wrote for this run (expected its text column(s) "
                           f"{', '.join(data.text_columns)}, {data.label_column!r}, then {', '.join(SUGGESTION_COLUMNS)})")
    texts = join_text_columns(columns, data.text_columns)
    items = []
    for index, text in enumerate(texts):
        typed, predicted = (str(columns[c][index] or "").strip() for c in (data.label_column, extra[1]))
        for value in (typed, predicted):
            if value and value not in labels:
                raise BertfitError(f"{path} row {index + 1}: label {value!r} is not one of the model's "
                                   f"({', '.join(labels)})")
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]
        values = {str(c): columns[c][index] for c in data.text_columns}
        items.append(item_record("label", f"label-{digest}", text, typed or predicted, row=int(columns[extra[0]][index]),
                                 values=values, suggested=predicted, score=float(columns[extra[2]][index]),
                                 reason="suggested", source=str(path.resolve())))
    return items
