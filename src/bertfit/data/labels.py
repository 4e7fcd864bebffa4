"""Label sets: names in id order, and raw labels (names, ids, multi-label cells) mapped onto them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bertfit.errors import BertfitError

if TYPE_CHECKING:
    from bertfit.data.read import RawSplit


@dataclass(frozen=True)
class LabelMap:
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def build_label_map(raw: dict[str, RawSplit], label_names: tuple[str, ...] | None) -> LabelMap:
    """Declared names win; otherwise every label seen in any split, sorted naturally ("2" before "10")."""
    declared = label_names or next((part.label_names for part in raw.values() if part.label_names), None)
    if declared:
        return LabelMap(tuple(declared))
    seen = {str(label).strip() for part in raw.values() for label in part.raw_labels}
    return LabelMap(tuple(sorted(seen, key=natural_key)))


def map_labels(part: RawSplit, labels: LabelMap) -> list[int]:
    """Label ids for a split: names map by name, whole numbers index into declared names."""
    by_name = labels.label2id
    ids = []
    for row, raw_label in zip(part.row_numbers(), part.raw_labels):
        key = str(raw_label).strip()
        if key in by_name:
            ids.append(by_name[key])
        elif part.label_names is not None and is_index(raw_label, len(labels)):
            ids.append(int(raw_label))
        else:
            raise BertfitError(f"{part.source} row {row}: label {raw_label!r} is not in the label set "
                               f"({', '.join(labels.names)}); fix the row or set data.label_names")
    return ids


def label_names_of(raw_label: Any, separator: str) -> list[str]:
    """The names in one multi-label cell: a list, or a string like 'sports|politics'."""
    if isinstance(raw_label, (list, tuple)):
        return [str(name).strip() for name in raw_label if str(name).strip()]
    return [name.strip() for name in str(raw_label).split(separator) if name.strip()]


def build_multi_label_map(raw: dict[str, RawSplit], label_names: tuple[str, ...] | None, separator: str) -> LabelMap:
    if label_names:
        return LabelMap(tuple(label_names))
    seen = {name for part in raw.values() for cell in part.raw_labels for name in label_names_of(cell, separator)}
    if len(seen) < 2:
        raise BertfitError(f"{raw['train'].source}: found labels {sorted(seen)}; multi-label data needs at least two "
                           f"label names (cells like 'a{separator}b'; set data.label_separator if yours differs)")
    return LabelMap(tuple(sorted(seen, key=natural_key)))


def multi_hot(part: RawSplit, labels: LabelMap, separator: str) -> list[list[float]]:
    """One 0/1 row per text, a 1 for each label the cell names (names, or ids into declared names)."""
    by_name, rows = labels.label2id, []
    for row, cell in zip(part.row_numbers(), part.raw_labels):
        vector = [0.0] * len(labels)
        for name in label_names_of(cell, separator):
            if name in by_name:
                vector[by_name[name]] = 1.0
            elif is_index(name, len(labels)):
                vector[int(name)] = 1.0
            else:
                raise BertfitError(f"{part.source} row {row}: label {name!r} is not in the label set "
                                   f"({', '.join(labels.names)}); fix the row or set data.label_names")
        rows.append(vector)
    return rows


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers by value: 'class2' < 'class10'."""
    return [(0, int(piece), "") if piece.isdigit() else (1, 0, piece.lower()) for piece in re.split(r"(\d+)", text) if piece]


def is_index(value: Any, size: int) -> bool:
    text = str(value).strip()
    return text.isdigit() and int(text) < size
