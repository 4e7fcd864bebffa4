"""Text and labels from files, presets or hub datasets, checked row by row, split and label-mapped.

`load_dataset(config.data, seed)` returns a `TextDataset` whose splits hold texts and integer label
ids, and whose `labels` map ids to names. Every bad row raises a BertfitError naming the file and
row: nothing is silently dropped.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from bertfit.config import DataConfig
from bertfit.errors import BertfitError
from bertfit.labels import LabelMap, build_label_map, build_multi_label_map, map_labels, multi_hot, natural_key  # noqa: F401
from bertfit.presets import PRESETS, Columns, preset_path

log = logging.getLogger(__name__)

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Split:
    name: str
    source: str  # where the rows came from, for messages and reports
    texts: list[str]
    labels: list[int] | list[list[float]]  # ids, or multi-hot rows when data.multi_label

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, rows: int | None) -> "Split":
        if rows is None or rows >= len(self):
            return self
        return Split(self.name, self.source, self.texts[:rows], self.labels[:rows])


@dataclass(frozen=True)
class TextDataset:
    splits: dict[str, Split]
    labels: LabelMap


@dataclass(frozen=True)
class RawSplit:
    """Rows before label mapping: texts plus labels as found in the source (ints or strings)."""

    source: str
    texts: list[str]
    raw_labels: list[Any]
    label_names: tuple[str, ...] | None  # names the source itself declares (preset, hub ClassLabel)
    first_row: int = 1  # number of the first row in its source (a streamed chunk starts further in)


def load_dataset(config: DataConfig, seed: int) -> TextDataset:
    """Read every configured split, map labels over all of them, split validation off train if needed."""
    raw = {"train": read_split(config.train, "train", config)}
    for split in ("validation", "test"):
        spec = getattr(config, split) or _preset_default(config.train, split)
        if spec is not None:
            raw[split] = read_split(spec, split, config)
    if config.multi_label:
        labels = build_multi_label_map(raw, config.label_names, config.label_separator)
        splits = {name: Split(name, part.source, part.texts, multi_hot(part, labels, config.label_separator))
                  for name, part in raw.items()}
    else:
        labels = build_label_map(raw, config.label_names)
        splits = {name: Split(name, part.source, part.texts, map_labels(part, labels)) for name, part in raw.items()}
        _require_two_classes(splits["train"], labels)
    rng = random.Random(seed)
    if "validation" not in splits:
        # Label combinations are too many to stratify on; multi-label data is split at random.
        divide = random_split if config.multi_label else stratified_split
        splits["train"], splits["validation"] = divide(splits["train"], config.validation_fraction, rng)
    splits["train"] = shuffled(splits["train"], rng).head(config.max_train_rows)
    for name in ("validation", "test"):
        if name in splits and config.max_eval_rows is not None:
            splits[name] = shuffled(splits[name], rng).head(config.max_eval_rows)
    return TextDataset(splits, labels)


def read_split(spec: str, split: str, config: DataConfig) -> RawSplit:
    """One split from a preset name, a file path or a hub dataset name."""
    if spec in PRESETS:
        path, columns = read_preset(spec, split)
        return check_rows(columns, str(path), ("text",), "label", PRESETS[spec].label_names)
    path = Path(spec).expanduser()
    looks_like_file = path.suffix.lower() in FILE_FORMATS or ("/" not in spec and "." in spec)
    if path.exists() or looks_like_file:
        if not path.is_file():
            raise BertfitError(f"data.{split}: file {spec} not found (presets: {', '.join(PRESETS)})")
        return check_rows(read_file(path, config), str(path), config.text_columns, config.label_column, config.label_names)
    columns, names = _read_hub(spec, split, config.hub_config)
    return check_rows(columns, f"hub:{spec}[{split}]", config.text_columns, config.label_column, config.label_names or names)


def read_preset(name: str, split: str) -> tuple[Path, Columns]:
    """A preset split's file and its columns `text` and `label`."""
    path = preset_path(name, split)
    return path, PRESETS[name].reader(path, decode_file(path, PRESETS[name].encoding))


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
    fmt = config.format if config.format != "auto" else FILE_FORMATS.get(path.suffix.lower())
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
    reader = csv.reader(lines, delimiter=delimiter)
    first = next(reader, None)
    if first is None:
        raise BertfitError(f"{path}: the file is empty")
    names = first if header else [str(i) for i in range(len(first))]
    yield names
    if not header:
        yield first
    for row in reader:
        if not row:
            continue  # a blank line is not a row
        if len(row) != len(names):
            raise BertfitError(f"{path} line {reader.line_num}: {len(row)} fields where the header has {len(names)}; "
                               "check quoting, or set data.format / data.header")
        yield row


def _read_json_records(path: Path, text: str, fmt: str) -> Columns:
    try:
        if fmt == "jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except json.JSONDecodeError as error:
        raise BertfitError(f"{path} line {error.lineno}: invalid JSON ({error.msg})") from None
    if isinstance(records, dict):  # {"text": [...], "label": [...]} column layout
        return {k: list(v) for k, v in records.items()}
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BertfitError(f"{path}: expected a list of objects (records) or an object of columns")
    columns: Columns = {}
    for number, record in enumerate(records):
        for key in record:
            columns.setdefault(key, [None] * number)
        for key, values in columns.items():
            values.append(record.get(key))
    return columns


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


def check_rows(columns: Columns, source: str, text_columns: tuple[str, ...], label_column: str,
          label_names: tuple[str, ...] | None, first_row: int = 1) -> RawSplit:
    """Join text columns and check every row: no missing column, no empty text, no missing label."""
    for column in (*text_columns, label_column):
        if column not in columns:
            known = ", ".join(map(str, columns)) or "none"
            field = "data.label_column" if column == label_column else "data.text_columns"
            raise BertfitError(f"{source}: column {column!r} not found (columns: {known}); set {field}")
    parts = [columns[c] for c in text_columns]
    texts = [" ".join(str(v).strip() for v in values if v is not None) for values in zip(*parts)]
    for row, (text, label) in enumerate(zip(texts, columns[label_column]), start=first_row):
        if not text.strip():
            raise BertfitError(f"{source} row {row}: empty text in {', '.join(text_columns)}; fix or remove the row")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise BertfitError(f"{source} row {row}: missing label in column {label_column!r}")
    if not texts:
        raise BertfitError(f"{source}: no rows")
    return RawSplit(source, texts, list(columns[label_column]), label_names, first_row)


def random_split(split: Split, fraction: float, rng: random.Random) -> tuple[Split, Split]:
    order = list(range(len(split)))
    rng.shuffle(order)
    count = min(max(1, round(len(order) * fraction)), len(order) - 1)
    source = f"{split.source} (seeded {fraction:.0%} validation split)"
    return _subset(split, sorted(order[count:]), "train", split.source), _subset(split, sorted(order[:count]), "validation", source)


def keep_label_ids(dataset: TextDataset, first: tuple[str, ...]) -> TextDataset:
    """The dataset relabelled so `first` (an earlier run's labels) keep ids 0..n-1; new names follow."""
    names = tuple(first) + tuple(n for n in dataset.labels.names if n not in first)
    new_id = {old: names.index(name) for old, name in enumerate(dataset.labels.names)}
    splits = {}
    for key, split in dataset.splits.items():
        if split.labels and isinstance(split.labels[0], list):  # multi-hot rows: move the columns
            labels = [[0.0] * len(names) for _ in split.labels]
            for row, old_row in zip(labels, split.labels):
                for old, value in enumerate(old_row):
                    row[new_id[old]] = value
        else:
            labels = [new_id[label] for label in split.labels]
        splits[key] = Split(split.name, split.source, split.texts, labels)
    return TextDataset(splits, LabelMap(names))


def stratified_split(split: Split, fraction: float, rng: random.Random) -> tuple[Split, Split]:
    """Seeded split keeping class proportions; every class keeps at least one training row."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(split.labels):
        by_class.setdefault(label, []).append(index)
    held_out: list[int] = []
    for label in sorted(by_class):
        indices = by_class[label]
        rng.shuffle(indices)
        held_out += indices[: min(round(len(indices) * fraction), len(indices) - 1)]
    chosen = set(held_out)
    kept = [i for i in range(len(split)) if i not in chosen]
    source = f"{split.source} (seeded {fraction:.0%} validation split)"
    return _subset(split, kept, "train", split.source), _subset(split, sorted(held_out), "validation", source)


def shuffled(split: Split, rng: random.Random) -> Split:
    order = list(range(len(split)))
    rng.shuffle(order)
    return _subset(split, order, split.name, split.source)


def _subset(split: Split, indices: list[int], name: str, source: str) -> Split:
    return Split(name, source, [split.texts[i] for i in indices], [split.labels[i] for i in indices])


def _preset_default(train_spec: str, split: str) -> str | None:
    preset = PRESETS.get(train_spec)
    return train_spec if preset is not None and split in preset.files else None


def _require_two_classes(train: Split, labels: LabelMap) -> None:
    present = sorted(set(train.labels))
    if len(present) < 2:
        only = labels.names[present[0]] if present else "none"
        raise BertfitError(f"{train.source}: every training row has label {only!r}; "
                           "classification needs at least two classes")
