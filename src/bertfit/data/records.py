"""A file's rows one dict at a time (CSV/TSV/JSONL/Parquet), for readers that must not hold the whole file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from bertfit.config import DataConfig
from bertfit.data.read import iter_delimited
from bertfit.errors import BertfitError


def read_records(path: Path, config: DataConfig) -> Iterator[dict[str, Any]]:
    """One dict per row of a CSV/TSV/JSONL/Parquet file, read lazily."""
    fmt = config.file_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq
        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):  # row groups are read one at a time
                yield from batch.to_pylist()
        except OSError as error:
            raise BertfitError(f"{path}: cannot read Parquet: {error}") from None
        return
    with open(path, encoding="utf-8-sig", newline="") as file:
        try:
            if fmt == "jsonl":
                yield from _json_lines(path, file)
            else:
                records = iter_delimited(path, file, "," if fmt == "csv" else "\t", config.header)
                names = next(records)
                yield from (dict(zip(names, row)) for row in records)
        except UnicodeDecodeError:
            raise BertfitError(f"{path}: a byte is not valid UTF-8; re-save the file as UTF-8 "
                               "(for example: iconv -f latin1 -t utf-8)") from None


def _json_lines(path: Path, file: Any) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(file, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BertfitError(f"{path} line {number}: invalid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise BertfitError(f"{path} line {number}: expected an object like {{\"text\": ..., \"label\": ...}}")
        yield record
