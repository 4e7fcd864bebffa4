"""Data files the curation loop writes for the user to edit and train on: the user's own columns, in a
format the run's data settings read (CSV, TSV, JSON, JSON lines or Parquet), written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from bertfit.atomic import atomic_file, write_text_atomic

SUFFIXES = {"csv": ".csv", "tsv": ".tsv", "json": ".json", "jsonl": ".jsonl", "parquet": ".parquet"}
Columns = dict[str, list[Any]]


def write_table(path: Path, columns: Columns, fmt: str = "csv", header: bool = True) -> Path:
    """`columns` (name -> values, all of one length) as `fmt`; CSV/TSV without a header row when `header` is
    false (the run then names columns by number, as the values are in order)."""
    names = list(columns)
    rows = list(zip(*(columns[name] for name in names)))
    if fmt in ("csv", "tsv"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="," if fmt == "csv" else "\t")
        if header:
            writer.writerow(names)
        writer.writerows(["" if value is None else value for value in row] for row in rows)
        write_text_atomic(path, buffer.getvalue())
    elif fmt in ("json", "jsonl"):
        records = [dict(zip(names, row)) for row in rows]
        text = json.dumps(records, ensure_ascii=False, default=str) + "\n" if fmt == "json" else \
            "".join(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records)
        write_text_atomic(path, text)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_file(path, "wb") as file:
            pq.write_table(pa.table(columns), file)
    return path


def csv_text(header: tuple[str, ...], rows: list[tuple]) -> str:
    """A CSV document: the header, then the rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
