"""`bertfit audit --relabel FILE`: apply a reviewed label_issues.csv to the training data and train again.

Nothing changes silently: every reviewed row must name a training row whose text still matches, every
new label must be a known one, and every change (relabelled or dropped row) is written to changes.csv
beside the corrected training file before training starts. The corrected file keeps the user's columns,
header and format, so the new run reads it, and its validation and test files, with the run's own settings.
"""

from __future__ import annotations

import csv
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertfit.artifacts import check_run_dir_free
from bertfit.atomic import write_text_atomic
from bertfit.config import RunConfig, replace
from bertfit.curate.audit import REVIEW_COPY
from bertfit.curate.folds import LabelledRows, read_training_rows, write_rows
from bertfit.curate.tables import SUFFIXES, csv_text, write_table
from bertfit.data.presets import PRESETS
from bertfit.data.read import decode_file, read_file
from bertfit.errors import BertfitError

log = logging.getLogger(__name__)

DROP = "DROP"  # new_label value that removes a row
TRAIN_STEM, CHANGES_FILE = "train_relabelled", "changes.csv"  # in AUDIT/NAME/, NAME the new run


@dataclass(frozen=True)
class Relabelling:
    config: RunConfig  # the config to train with: data.train is the corrected file
    train_file: Path
    changes_file: Path
    relabelled: int
    dropped: int
    confirmed: int  # reviewed rows whose new label equals the given one


def read_review(path: Path, rows: LabelledRows) -> dict[int, str]:
    """0-based row index -> new label (a name or DROP) for every reviewed row with a non-empty new_label."""
    if not path.is_file():
        raise BertfitError(f"relabel: file {path} not found")
    reader = csv.DictReader(decode_file(path).splitlines())
    missing = {"row", "new_label"} - set(reader.fieldnames or ())
    if missing:
        raise BertfitError(f"{path}: column(s) {', '.join(sorted(missing))} not found; expected the columns of "
                           "label_issues.csv (row, text, ..., new_label)")
    if DROP in rows.names:
        raise BertfitError(f"{rows.source}: a label is named {DROP!r}, which the review uses to drop rows; rename it")
    decisions: dict[int, str] = {}
    for line, record in enumerate(reader, start=2):
        new_label = (record["new_label"] or "").strip()
        if not new_label:
            continue
        index = _row_index(path, line, record, rows)
        if index in decisions:
            raise BertfitError(f"{path} line {line}: row {record['row'].strip()} is reviewed twice")
        if new_label != DROP and new_label not in rows.names:
            raise BertfitError(f"{path} line {line}: new_label {new_label!r} is not a label ({', '.join(rows.names)}) "
                               f"nor {DROP}; leave it empty to keep the row as given")
        decisions[index] = new_label
    return decisions


def _row_index(path: Path, line: int, record: dict[str, str], rows: LabelledRows) -> int:
    """The 0-based training row a review line names (by its row number in the training file), checked
    against the text it quotes."""
    try:
        number = int(record["row"])
    except (TypeError, ValueError):
        raise BertfitError(f"{path} line {line}: row {record['row']!r} is not a row number") from None
    index = rows.index_of(number)
    if index is None:
        last = rows.source_rows[-1]
        why = "data.label_map drops it" if 1 <= number <= last else f"{last} rows"
        raise BertfitError(f"{path} line {line}: row {number} is outside the training data ({why})")
    quoted = (record.get("text") or "").strip()
    if quoted and quoted != rows.texts[index].strip():
        raise BertfitError(f"{path} line {line}: its text differs from row {number} of {rows.source}; "
                           "the training data changed since the audit: audit it again")
    return index


def apply_review(config: RunConfig, review: str | Path, out_dir: str | Path, name: str | None = None) -> Relabelling:
    """Write out_dir/NAME/train_relabelled.* (the training file with the review applied, its own columns and
    format) and out_dir/NAME/changes.csv; return the config that trains run NAME on them. Each new run gets
    its own folder, so a later review never rewrites the data an earlier run was trained on."""
    name = name or f"{config.name or 'audit'}-relabelled"
    rows = read_training_rows(config)
    decisions = read_review(Path(review), rows)
    labels = rows.labels.copy()
    kept = np.ones(len(rows), dtype=bool)
    changes = []
    for index, new_label in sorted(decisions.items()):
        given = rows.names[rows.labels[index]]
        if new_label == given:
            continue
        changes.append((rows.source_rows[index], rows.texts[index], given, new_label))
        if new_label == DROP:
            kept[index] = False
        else:
            labels[index] = rows.names.index(new_label)
    folder = Path(out_dir) / name
    train_file, data = corrected_file(config, rows, labels, kept, folder)
    changes_file = folder / CHANGES_FILE
    if Path(review).resolve() != (folder / REVIEW_COPY).resolve():  # what was applied; a new audit may then replace it
        shutil.copyfile(review, folder / REVIEW_COPY)
    write_text_atomic(changes_file, csv_text(("row", "text", "given_label", "new_label"), changes))
    dropped = int((~kept).sum())
    result = Relabelling(replace(config, name=name, data=data), train_file, changes_file, len(changes) - dropped,
                         dropped, len(decisions) - len(changes))
    log.info("review %s: %d rows relabelled, %d dropped, %d confirmed as given; every change in %s", review,
             result.relabelled, result.dropped, result.confirmed, changes_file)
    return result


def corrected_file(config: RunConfig, rows: LabelledRows, labels: np.ndarray, kept: np.ndarray,
                   folder: Path) -> tuple[Path, dict[str, Any]]:
    """The training data with new labels and without dropped rows, and the data fields that read it.

    A training file keeps its columns (every one, the text columns apart), header and format, so the run's
    column settings, validation and test files read as before; a preset or hub dataset, whose columns are its
    own, becomes a `text,label` CSV and keeps its own validation and test splits."""
    spec = config.data.train
    source = Path(spec).expanduser()
    if spec in PRESETS or not source.is_file():
        path = write_rows(folder / f"{TRAIN_STEM}.csv", rows, np.flatnonzero(kept), labels)
        data = {"train": str(path.absolute()), "text_columns": ["text"], "label_column": "label",
                "label_names": list(rows.names), "format": "auto", "header": True}
        for split in ("validation", "test"):
            if getattr(config.data, split) is None and spec in PRESETS and split in PRESETS[spec].files:
                data[split] = spec
        return path, data
    fmt = config.data.file_format(source) or "csv"
    columns = read_file(source, config.data)
    new_labels = list(columns[config.data.label_column])
    keep = np.ones(len(new_labels), dtype=bool)
    for index, number in enumerate(rows.source_rows):  # rows the review changed; label_map's dropped rows stay as written
        keep[number - 1] = kept[index]
        if labels[index] != rows.labels[index]:
            new_labels[number - 1] = rows.names[labels[index]]
    columns[config.data.label_column] = new_labels
    chosen = np.flatnonzero(keep)
    table = {column: [values[i] for i in chosen] for column, values in columns.items()}
    path = write_table(folder / f"{TRAIN_STEM}{SUFFIXES[fmt]}", table, fmt, config.data.header)
    return path, {"train": str(path.absolute())}


def relabel_and_train(config: RunConfig, review: str | Path, out_dir: str | Path, name: str | None = None,
                      overwrite: bool = False):
    """apply_review, then train on the corrected data; returns (Relabelling, TrainResult). A name already
    taken is refused before any file is written."""
    from bertfit.training.recipe import train

    name = name or f"{config.name or 'audit'}-relabelled"
    check_run_dir_free(replace(config, name=name), overwrite)
    relabelling = apply_review(config, review, out_dir, name)
    return relabelling, train(relabelling.config, overwrite=overwrite)
