"""Reading one split: files (CSV/TSV/JSON/JSONL/Parquet), presets or hub datasets, every row checked.

`read_split(spec, split, config)` returns a `RawSplit`: texts plus labels as found in the source.
Every bad row raises a BertfitError naming the file and row: nothing is silently dropped.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from bertfit.config import FILE_FORMATS, DataConfig
from bertfit.data.hub_presets import hub_columns
from bertfit.data.presets import PRESETS, Columns, preset_path
from bertfit.data.tables import is_table, join_text_columns, table_columns
from bertfit.errors import BertfitError

log = logging.getLogger(__name__)

# A text field may be long (a whole article), but csv's default cap of 128 KiB is too low; past this a
# field is almost surely a quote left open, and the error says so instead of reading the rest as one field.
MAX_FIELD_BYTES = 64 << 20
MISSING_VALUES = ("nan", "null")  # what pandas and JSON exports write for an empty cell


@dataclass(frozen=True)
class RawSplit:
    """Rows before label mapping: texts plus labels as found in the source (ints or strings)."""

    source: str
    texts: list[str]
    raw_labels: list[Any]
    label_names: tuple[str, ...] | None  # names the source itself declares (preset, hub ClassLabel)
    first_row: int = 1  # number of the first row in its source (a streamed chunk starts further in)
    kept_rows: tuple[int, ...] | None = None  # each row's number in its source, once data.label_map dropped some

    def row_numbers(self) -> Sequence[int]:
        """Each row's number in its source, for messages that name a row."""
        return self.kept_rows if self.kept_rows is not None else range(self.first_row, self.first_row + len(self.texts))


def read_split(spec: Any, split: str, config: DataConfig) -> RawSplit:
    """One split from a preset name, a file path, a hub dataset name or an in-memory table (a pandas DataFrame,
    a datasets.Dataset: bertfit.data.tables), relabelled by data.label_map."""
    part = _read_rows(spec, split, config)
    return apply_label_map(part, config.label_map, check_keys=split == "train") if config.label_map else part


def _read_rows(spec: Any, split: str, config: DataConfig) -> RawSplit:
    if is_table(spec):
        columns, names, source = table_columns(spec)
        return check_rows(columns, source, config.text_columns, config.label_column, config.label_names or names)
    if spec in PRESETS:
        source, columns = read_preset(spec, split)
        return check_rows(columns, source, ("text",), "label", PRESETS[spec].label_names)
    path = Path(spec).expanduser()
    looks_like_file = path.suffix.lower() in FILE_FORMATS or ("/" not in spec and "." in spec)
    if path.exists() or looks_like_file:
        if not path.is_file():
            raise BertfitError(f"data.{split}: file {spec} not found (presets: {', '.join(PRESETS)})")
        return check_rows(read_file(path, config), str(path), config.text_columns, config.label_column, config.label_names)
    columns, names = _read_hub(spec, split, config.hub_config)
    return check_rows(columns, f"hub:{spec}[{split}]", config.text_columns, config.label_column, config.label_names or names)


def read_preset(name: str, split: str) -> tuple[str, Columns]:
    """A preset split's source (its local file, else its Hub copy) and its columns `text` and `label`."""
    preset, path = PRESETS[name], preset_path(name, split)
    if path is None:
        return hub_columns(name, preset.hub, preset.label_names, split, preset.files[split])
    return str(path), preset.reader(path, decode_file(path, preset.encoding))


def decode_file(path: Path, encoding: str = "utf-8") -> str:
    """The text of a file; a byte that is not valid in `encoding` is reported with its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise BertfitError(
            f"{path} line {line}: byte 0x{data[error.start]:02x} is not valid UTF-8; "
            "re-save the file as UTF-8 (for example: iconv -f latin1 -t utf-8)") from None


def read_file(path: Path, config: DataConfig) -> Columns:
    """Columns of a CSV/TSV/JSON/JSONL/Parquet file, named by header or 0, 1, 2 without one."""
    fmt = config.file_format(path)
    if fmt is None:
        raise BertfitError(f"{path}: unknown file type {path.suffix!r}; set data.format to csv, tsv, json, jsonl or parquet")
    if fmt == "parquet":
        import pyarrow.parquet as pq
        try:
            return pq.read_table(path).to_pydict()
        except Exception as error:  # pyarrow raises several types for damaged files
            raise BertfitError(f"{path}: cannot read Parquet: {error}") from None
    text = decode_file(path)
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, text, "," if fmt == "csv" else "\t", config.header)
    return _read_json_records(path, text, fmt)


def _read_delimited(path: Path, text: str, delimiter: str, header: bool) -> Columns:
    records = iter_delimited(path, io.StringIO(text, newline=""), delimiter, header)
    names = next(records)
    columns: Columns = {name: [] for name in names}
    for row in records:
        for name, value in zip(names, row):
            columns[name].append(value)
    return columns


def iter_delimited(path: Path, lines: Iterable[str], delimiter: str, header: bool) -> Iterator[list[str]]:
    """The column names first, then each row checked against them (shared by the streaming reader)."""
    csv.field_size_limit(MAX_FIELD_BYTES)  # process-wide (csv has no per-reader limit)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        yield from _checked_rows(path, reader, header)
    except csv.Error as error:
        hint = f"; a field is over {MAX_FIELD_BYTES >> 20} MiB: check its quoting" if "field limit" in str(error) else ""
        raise BertfitError(f"{path} line {reader.line_num}: unreadable CSV ({error}){hint}") from None


def _checked_rows(path: Path, reader: Any, header: bool) -> Iterator[list[str]]:
    first = next(reader, None)
    if first is None:
        raise BertfitError(f"{path}: the file is empty")
    names = first if header else [str(i) for i in range(len(first))]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BertfitError(f"{path}: the header names column {repeated[0]!r} more than once; give every column "
                           "its own name (or set data.header false)")
    yield names
    if not header:
        yield first
    for row in reader:
        if not row:
            continue  # a blank line is not a row
        if len(row) != len(names):
            raise BertfitError(f"{path} line {reader.line_num}: {len(row)} fields where the header has {len(names)}; "
                               "check quoting, or set data.format / data.header")
        if header and row == names:
            raise BertfitError(f"{path} line {reader.line_num}: the header row again (files joined together?); "
                               "remove the line")
        yield row


def _read_json_records(path: Path, text: str, fmt: str) -> Columns:
    if fmt == "jsonl":
        records = [_json(path, line, number) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        records = _json(path, text, 0)
    if isinstance(records, dict):  # {"text": [...], "label": [...]} column layout
        return _json_columns(path, records)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BertfitError(f"{path}: expected a list of objects (records) or an object of columns")
    columns: Columns = {}
    for number, record in enumerate(records):
        for key in record:
            columns.setdefault(key, [None] * number)
        for key, values in columns.items():
            values.append(record.get(key))
    return columns


def _json(path: Path, text: str, line: int) -> Any:
    """One JSON document; `line`: its line in a JSONL file (0: the whole file), so an error names the right line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BertfitError(f"{path} line {line or error.lineno}: invalid JSON ({error.msg})") from None


def _json_columns(path: Path, records: dict[str, Any]) -> Columns:
    """An object of columns: every value a list, all of one length (else rows would pair up wrongly)."""
    for name, values in records.items():
        if not isinstance(values, list):
            raise BertfitError(f"{path}: column {name!r} is {type(values).__name__}, not a list; a JSON file holds "
                               "a list of objects (records) or an object of equal-length lists (columns)")
    lengths = {name: len(values) for name, values in records.items()}
    if len(set(lengths.values())) > 1:
        raise BertfitError(f"{path}: the columns have different lengths ({lengths}); each column needs one value a row")
    return dict(records)


def _read_hub(name: str, split: str, hub_config: str | None) -> tuple[Columns, tuple[str, ...] | None]:
    try:
        import datasets
    except ImportError:
        raise BertfitError(f"{name!r} is not a file or preset; to load it from the Hugging Face Hub, "
                           "pip install 'bertfit[hub]'") from None
    try:
        part = datasets.load_dataset(name, hub_config, split=split)
    except Exception as error:  # offline, unknown name, missing split: all reported the same way
        raise BertfitError(f"could not load hub dataset {name!r} split {split!r}: {error}. "
                           f"Offline? Use a local file or a preset ({', '.join(PRESETS)}).") from None
    names = next((tuple(f.names) for f in part.features.values() if isinstance(f, datasets.ClassLabel)), None)
    return part.to_dict(), names


def apply_label_map(part: RawSplit, label_map: dict[str, str | None], check_keys: bool = False) -> RawSplit:
    """Labels renamed or merged by data.label_map (keys: labels as written, or the names a preset declares for
    them); rows mapped to None dropped and counted in the log. `check_keys`: a key no row carries is an error."""
    names = part.label_names or ()
    def spellings(raw: Any) -> tuple[str, ...]:  # the label as written, and the name it stands for
        text = str(raw).strip()
        return (text, names[int(text)]) if text.isdigit() and int(text) < len(names) else (text,)
    def relabel(raw: Any) -> str | None:
        forms = spellings(raw)
        return next((label_map[form] for form in forms if form in label_map), forms[-1])
    seen = {form for raw in set(map(str, part.raw_labels)) for form in spellings(raw)}
    unused = [key for key in label_map if key not in seen]
    if check_keys and unused:
        shown = sorted(seen)[:20]
        raise BertfitError(f"data.label_map: {', '.join(map(repr, unused))} never occurs as a label in {part.source} "
                           f"(labels: {', '.join(shown)}{', ...' if len(seen) > 20 else ''}); fix or remove the key")
    mapped = [relabel(raw) for raw in part.raw_labels]
    kept = [row for row, label in enumerate(mapped) if label is not None]
    if len(kept) < len(mapped):
        dropped = sorted({str(raw).strip() for raw, label in zip(part.raw_labels, mapped) if label is None})
        log.warning("%s: data.label_map dropped %d of %d rows (labels %s)", part.source, len(mapped) - len(kept),
                    len(mapped), ", ".join(dropped))
    if not kept:
        raise BertfitError(f"{part.source}: data.label_map drops every row; map at least two labels to names")
    declared = tuple(dict.fromkeys(m for i in range(len(names)) if (m := relabel(i)) is not None)) or None
    numbers = part.row_numbers()
    return RawSplit(part.source, [part.texts[row] for row in kept], [mapped[row] for row in kept], declared, part.first_row,
                    tuple(numbers[row] for row in kept))


def check_columns(columns: Columns, source: str, text_columns: tuple[str, ...], label_column: str) -> None:
    """Every named column exists; if not, the error says which field to set and, when the header looks like a
    row of data, that the file may have no header at all."""
    for column in (*text_columns, label_column):
        if column in columns:
            continue
        known = ", ".join(map(str, columns)) or "none"
        field = "data.label_column" if column == label_column else "data.text_columns"
        message = f"{source}: column {column!r} not found (columns: {known}); set {field}"
        if any(_looks_like_data(str(name)) for name in columns):
            message += ("; the first row looks like data, not column names: for a file without a header set "
                        "data.header false and name columns by number, e.g. data.text_columns 1 data.label_column 0")
        raise BertfitError(message)


def _looks_like_data(name: str) -> bool:
    """A column name that is a number or reads like a sentence is more likely a value of the first row."""
    return name.strip().lstrip("-").replace(".", "", 1).isdigit() or len(name.split()) > 3


def check_rows(columns: Columns, source: str, text_columns: tuple[str, ...], label_column: str,
          label_names: tuple[str, ...] | None, first_row: int = 1) -> RawSplit:
    """Join text columns and check every row: no missing column, no empty text, no missing label."""
    check_columns(columns, source, text_columns, label_column)
    texts = join_text_columns(columns, text_columns)
    for row, (text, label) in enumerate(zip(texts, columns[label_column]), start=first_row):
        if not text.strip():
            raise BertfitError(f"{source} row {row}: empty text in {', '.join(text_columns)}; fix or remove the row")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise BertfitError(f"{source} row {row}: missing label in column {label_column!r}")
        if _is_missing_value(label) and str(label).strip() not in (label_names or ()):
            raise BertfitError(f"{source} row {row}: label {label!r} in column {label_column!r} is a missing value "
                               "(an empty cell exported as NaN); fix or remove the row")
    if not texts:
        raise BertfitError(f"{source}: no rows")
    return RawSplit(source, texts, list(columns[label_column]), label_names, first_row)


def _is_missing_value(label: Any) -> bool:
    return (isinstance(label, float) and math.isnan(label)) or str(label).strip().lower() in MISSING_VALUES
