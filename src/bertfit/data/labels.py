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
    """Label ids for a split, matched by name: a whole number stands for the name its source declares for it
    (a preset's or hub ClassLabel's names, or data.label_names), never for a position in `labels`, whose order
    may differ (a run's names sorted, or renumbered by model.init_from)."""
    by_name = labels.label2id
    names = [source_name(raw_label, part.label_names) for raw_label in part.raw_labels]
    unknown = [(row, raw, name) for row, raw, name in zip(part.row_numbers(), part.raw_labels, names) if name not in by_name]
    if unknown:
        raise _unknown_labels(part, unknown, labels)
    return [by_name[name] for name in names]


def source_name(raw_label: Any, declared: tuple[str, ...] | None) -> str:
    """The name a raw label stands for in its source: itself, or declared[i] for a whole number i the source
    declares names for (a name that is itself a number, such as "4" in 0/2/4, stays itself)."""
    text = str(raw_label).strip()
    if declared and text not in declared and is_index(text, len(declared)):
        return declared[int(text)]
    return text


def _unknown_labels(part: RawSplit, unknown: list[tuple[int, Any, str]], labels: LabelMap) -> BertfitError:
    """One error for every row whose label is not in `labels`: the first row, and each such label with its count."""
    row, raw, name = unknown[0]
    counts: dict[str, int] = {}
    for _, _, other in unknown:
        counts[other] = counts.get(other, 0) + 1
    spelled = f" ({name!r} in {part.source}'s own label names)" if name != str(raw).strip() else ""
    more = (f"; {len(unknown)} rows carry labels outside it: "
            + ", ".join(f"{label!r} ({count} rows)" for label, count in counts.items())) if len(unknown) > 1 else ""
    return BertfitError(f"{part.source} row {row}: label {raw!r}{spelled} is not in the label set "
                        f"({', '.join(labels.names)}){more}; labels are matched by name: fix the rows, map them with "
                        "data.label_map, or set data.label_names")


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
    """One 0/1 row per text, a 1 for each label the cell names, matched by name as in map_labels."""
    by_name, rows = labels.label2id, []
    for row, cell in zip(part.row_numbers(), part.raw_labels):
        vector = [0.0] * len(labels)
        for raw_name in label_names_of(cell, separator):
            name = source_name(raw_name, part.label_names)
            if name not in by_name:
                raise _unknown_labels(part, [(row, raw_name, name)], labels)
            vector[by_name[name]] = 1.0
        rows.append(vector)
    return rows


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers by value: 'class2' < 'class10'."""
    return [(0, int(piece), "") if piece.isdigit() else (1, 0, piece.lower()) for piece in re.split(r"(\d+)", text) if piece]


def is_index(value: Any, size: int) -> bool:
    text = str(value).strip()
    return text.isdigit() and int(text) < size
