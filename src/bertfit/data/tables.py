"""In-memory tables as data: a pandas DataFrame or a `datasets.Dataset` wherever the Python API takes a file.

Neither package is imported here: a table is recognised by its type's module, so bertfit needs neither
installed. A run's config names files, so a table given to `train` is saved once as Parquet under
cache_dir/tables, named by its content, and config.yaml names that file (resume, evaluate and export read it).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from bertfit.config import RunConfig, replace
from bertfit.data.presets import Columns
from bertfit.errors import BertfitError

TABLE_MODULES = ("pandas", "datasets")
TABLE_SPLITS = ("train", "validation", "test")


def is_table(value: Any) -> bool:
    """A pandas DataFrame or Series, or a datasets.Dataset (not a file, preset or hub name)."""
    return type(value).__module__.split(".")[0] in TABLE_MODULES and hasattr(value, "__len__")


def table_columns(table: Any) -> tuple[Columns, tuple[str, ...] | None, str]:
    """(columns, label names a Dataset's ClassLabel declares, a name for messages); empty cells become None."""
    kind = type(table).__name__
    if not is_table(table):
        raise BertfitError(f"data: a {kind} is not a file name, a pandas DataFrame or a datasets.Dataset")
    if kind == "Series":  # one column of texts
        table = table.to_frame(name=table.name if table.name is not None else "text")
    if hasattr(table, "to_dict") and hasattr(table, "columns") and hasattr(table, "iloc"):  # a DataFrame
        columns = {str(name): [_cell(v) for v in table[name].tolist()] for name in table.columns}
        return columns, None, f"DataFrame ({len(table):,} rows)"
    if hasattr(table, "features") and hasattr(table, "to_dict"):  # a datasets.Dataset
        columns = {str(name): [_cell(v) for v in values] for name, values in table.to_dict().items()}
        label = _class_label(table)
        return columns, label[1] if label else None, f"Dataset ({len(table):,} rows)"
    raise BertfitError(f"data: a {type(table).__module__}.{kind} is not supported; pass a DataFrame or a Dataset")


def _class_label(table: Any) -> tuple[str, tuple[str, ...]] | None:
    """A Dataset's first ClassLabel column and its names (its labels are stored as ids into them)."""
    features = getattr(table, "features", None) or {}
    return next(((str(k), tuple(f.names)) for k, f in features.items() if type(f).__name__ == "ClassLabel"), None)


def _cell(value: Any) -> Any:
    """pandas writes an empty cell as NaN (or NA / NaT): the readers treat it as missing, like an empty CSV field."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return None if type(value).__name__ in ("NAType", "NaTType") else value


def join_text_columns(columns: Columns, text_columns: tuple[str, ...]) -> list[str]:
    """Each row's text as training reads it: its text columns' values stripped and joined with a space (empty cells skipped)."""
    return [" ".join(str(v).strip() for v in values if v is not None) for values in zip(*(columns[c] for c in text_columns))]


def table_texts(table: Any, text_columns: tuple[str, ...]) -> list[str]:
    """The texts of a table, its text columns joined as training joins them (a Series is one column of texts)."""
    columns, _, source = table_columns(table)
    if type(table).__name__ == "Series":
        text_columns = tuple(columns)
    missing = [name for name in text_columns if name not in columns]
    if missing:
        raise BertfitError(f"text_columns: {missing[0]!r} is not a column of the {source} "
                           f"(columns: {', '.join(columns) or 'none'})")
    return join_text_columns(columns, text_columns)


def with_table_files(config: RunConfig, tables: dict[str, Any]) -> RunConfig:
    """`config` with each table of `tables` (train, validation, test) saved as Parquet and named in data."""
    unknown = sorted(set(tables) - set(TABLE_SPLITS))
    if unknown:
        raise BertfitError(f"data: unknown split {unknown[0]!r}; give tables for {', '.join(TABLE_SPLITS)}")
    folder = Path(config.cache_dir).expanduser() / "tables"
    return replace(config, data={split: str(save_table(table, folder)) for split, table in tables.items()})


def save_table(table: Any, folder: Path) -> Path:
    """The table as folder/<digest of its content>.parquet (written once; the same table reuses the file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns, _, source = table_columns(table)
    label = _class_label(table)
    if label is not None:  # Parquet would lose the ClassLabel's names: store the names themselves
        column, names = label
        columns[column] = [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in columns[column]]
    digest = hashlib.sha256(json.dumps(columns, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = folder / f"{digest}.parquet"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            pq.write_table(pa.table(columns), path.with_suffix(".tmp"))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise BertfitError(f"data: cannot save the {source} as Parquet ({error}); give each column one type") from None
        path.with_suffix(".tmp").replace(path)
    return path

