"""Texts to predict read from a file, and predictions written as CSV (`bertfit predict --file ... --out ...`)."""

from __future__ import annotations

import csv
from pathlib import Path

from bertfit.atomic import atomic_file
from bertfit.config import DataConfig
from bertfit.data.read import read_file
from bertfit.data.tables import join_text_columns
from bertfit.errors import BertfitError
from bertfit.infer.predictor import Prediction


def read_texts(path: Path, text_columns: str | tuple[str, ...] = ("text",)) -> list[str]:
    """The texts of a CSV/TSV/JSON/JSONL/Parquet file: its text columns joined with a space as training joins
    them (bertfit.data.tables.join_text_columns); a row whose text is empty is refused with its number."""
    path = Path(path)
    if not path.is_file():
        raise BertfitError(f"file: {path} not found")
    text_columns = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
    columns = read_file(path, DataConfig())
    for column in text_columns:
        if column not in columns:
            raise BertfitError(f"text_column: {column!r} is not a column of {path} "
                               f"(columns: {', '.join(map(str, columns))}); name the text columns, e.g. "
                               f"--text-column {','.join(map(str, list(columns)[:2]))}")
    texts = join_text_columns(columns, text_columns)
    for row, text in enumerate(texts, start=1):
        if not text.strip():
            raise BertfitError(f"{path} row {row}: empty text in {', '.join(text_columns)}; fix or remove the row")
    return texts


def check_out_path(path: Path) -> None:
    """Refuse, before any prediction is computed, an output path that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise BertfitError(f"out: {path} is a folder; give a file name such as {path / 'predictions.csv'}")
    if not path.parent.is_dir():
        raise BertfitError(f"out: folder {path.parent} does not exist; create it first or choose another path")


def write_predictions(path: Path, predictions: list[Prediction]) -> None:
    """text, label, confidence and one prob_<label> column per label, one row per prediction."""
    names = list(predictions[0].probabilities) if predictions else []
    with atomic_file(Path(path)) as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label", "confidence", *(f"prob_{n}" for n in names)])
        for p in predictions:
            writer.writerow([p.text, p.label, f"{p.confidence:.6f}", *(f"{p.probabilities[n]:.6f}" for n in names)])
