"""`bertfit audit --relabel FILE`: apply a reviewed label_issues.csv to the training data and train again.

Nothing changes silently: every reviewed row must name a training row whose text still matches, every
new label must be a known one, and every change (relabelled or dropped row) is written to changes.csv
beside the corrected training file before training starts.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertfit.atomic import write_text_atomic
from bertfit.config import RunConfig, replace
from bertfit.curate.audit import csv_text
from bertfit.curate.folds import LabelledRows, read_training_rows, write_rows
from bertfit.data.presets import PRESETS
from bertfit.data.read import decode_file
from bertfit.errors import BertfitError

log = logging.getLogger(__name__)

DROP = "DROP"  # new_label value that removes a row
TRAIN_FILE, CHANGES_FILE = "train_relabelled.csv", "changes.csv"


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
            raise BertfitError(f"{path} line {line}: row {index + 1} is reviewed twice")
        if new_label != DROP and new_label not in rows.names:
            raise BertfitError(f"{path} line {line}: new_label {new_label!r} is not a label ({', '.join(rows.names)}) "
                               f"nor {DROP}; leave it empty to keep the row as given")
        decisions[index] = new_label
    return decisions


def _row_index(path: Path, line: int, record: dict[str, str], rows: LabelledRows) -> int:
    """The 0-based training row a review line names, checked against the text it quotes."""
    try:
        index = int(record["row"]) - 1
    except (TypeError, ValueError):
        raise BertfitError(f"{path} line {line}: row {record['row']!r} is not a row number") from None
    if not 0 <= index < len(rows):
        raise BertfitError(f"{path} line {line}: row {index + 1} is outside the training data ({len(rows)} rows)")
    quoted = (record.get("text") or "").strip()
    if quoted and quoted != rows.texts[index].strip():
        raise BertfitError(f"{path} line {line}: its text differs from row {index + 1} of {rows.source}; "
                           "the training data changed since the audit: audit it again")
    return index


def apply_review(config: RunConfig, review: str | Path, out_dir: str | Path, name: str | None = None) -> Relabelling:
    """Write out_dir/train_relabelled.csv and out_dir/changes.csv; return the config that trains on them."""
    out_dir = Path(out_dir)
    rows = read_training_rows(config)
    decisions = read_review(Path(review), rows)
    labels = rows.labels.copy()
    kept = np.ones(len(rows), dtype=bool)
    changes = []
    for index, new_label in sorted(decisions.items()):
        given = rows.names[rows.labels[index]]
        if new_label == given:
            continue
        changes.append((index + 1, rows.texts[index], given, new_label))
        if new_label == DROP:
            kept[index] = False
        else:
            labels[index] = rows.names.index(new_label)
    train_file = write_rows(out_dir / TRAIN_FILE, rows, np.flatnonzero(kept), labels)
    changes_file = out_dir / CHANGES_FILE
    write_text_atomic(changes_file, csv_text(("row", "text", "given_label", "new_label"), changes))
    dropped = int((~kept).sum())
    result = Relabelling(_relabelled_config(config, rows, train_file, name), train_file, changes_file,
                         len(changes) - dropped, dropped, len(decisions) - len(changes))
    log.info("review %s: %d rows relabelled, %d dropped, %d confirmed as given; every change in %s", review,
             result.relabelled, result.dropped, result.confirmed, changes_file)
    return result


def _relabelled_config(config: RunConfig, rows: LabelledRows, train_file: Path, name: str | None) -> RunConfig:
    """The same run on the corrected file; a preset's own validation and test splits stay in place."""
    data = {"train": str(train_file), "text_columns": ["text"], "label_column": "label", "label_names": list(rows.names),
            "format": "csv", "header": True}
    preset = PRESETS.get(config.data.train)
    for split in ("validation", "test"):
        if getattr(config.data, split) is None and preset is not None and split in preset.files:
            data[split] = config.data.train
    return replace(config, name=name or f"{config.name or 'audit'}-relabelled", data=data)


def relabel_and_train(config: RunConfig, review: str | Path, out_dir: str | Path, name: str | None = None,
                      overwrite: bool = False):
    """apply_review, then train on the corrected data; returns (Relabelling, TrainResult)."""
    from bertfit.training.recipe import train

    relabelling = apply_review(config, review, out_dir, name)
    return relabelling, train(relabelling.config, overwrite=overwrite)
