"""A dataset of labelled splits: every configured split read, labels mapped, validation held out.

`load_dataset(config.data, seed)` returns a `TextDataset` whose splits hold texts and integer label
ids (or multi-hot rows), and whose `labels` map ids to names.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from bertfit.config import DataConfig
from bertfit.data.labels import LabelMap, build_label_map, build_multi_label_map, map_labels, multi_hot
from bertfit.data.presets import PRESETS
from bertfit.data.read import RawSplit, read_split
from bertfit.errors import BertfitError

log = logging.getLogger(__name__)


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


VALIDATION_ROWS_PER_CLASS = 4  # an unset data.validation_fraction grows (to at most 20%) to hold out this many a class


@dataclass(frozen=True)
class TextDataset:
    splits: dict[str, Split]
    labels: LabelMap
    validation_fraction: float | None = None  # the share of train held out (None: a separate split; 0: no validation)


def validation_share(rows: int, classes: int) -> float:
    """The default share of train held out: 10%, raised (up to 20%) until each class keeps ~4 validation rows."""
    return round(min(0.2, max(0.1, VALIDATION_ROWS_PER_CLASS * classes / max(1, rows))), 3)


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
        if not config.label_names:
            _require_labels_in_train(raw)
        splits = {name: Split(name, part.source, part.texts, map_labels(part, labels)) for name, part in raw.items()}
        _require_two_classes(splits["train"], labels)
    rng, fraction = random.Random(seed), None
    # data.max_train_rows bounds the rows the file gives: a validation share is carved out of those, not the whole file.
    splits["train"] = shuffled(splits["train"], rng).head(config.max_train_rows)
    if "validation" not in splits and config.validation_fraction == 0:  # every training row trains: none held out
        fraction = 0.0
    elif "validation" not in splits:
        fraction = config.validation_fraction or validation_share(len(splits["train"]), len(labels))
        # Label combinations are too many to stratify on; multi-label data is split at random.
        divide = random_split if config.multi_label else stratified_split
        splits["train"], splits["validation"] = divide(splits["train"], fraction, rng)
        splits["train"] = shuffled(splits["train"], rng)
    for name in ("validation", "test"):
        if name in splits and config.max_eval_rows is not None:
            splits[name] = shuffled(splits[name], rng).head(config.max_eval_rows)
    _log_sizes(splits, config, fraction)
    return TextDataset(splits, labels, fraction)


def _log_sizes(splits: dict[str, Split], config: DataConfig, fraction: float | None) -> None:
    """The rows each split holds, and where a bound or a share made them."""
    bound = f" (data.max_train_rows {config.max_train_rows})" if config.max_train_rows else ""
    carved = f", {fraction:.0%} of the rows read held out for validation" if fraction else ""
    log.info("data: %s%s%s", ", ".join(f"{len(split):,} {name}" for name, split in splits.items()), bound, carved)


def random_split(split: Split, fraction: float, rng: random.Random) -> tuple[Split, Split]:
    order = list(range(len(split)))
    rng.shuffle(order)
    count = min(max(1, round(len(order) * fraction)), len(order) - 1)
    source = f"{split.source} (seeded {fraction:.0%} validation split)"
    return (_subset(split, sorted(order[count:]), "train", split.source),
            _subset(split, sorted(order[:count]), "validation", source))


def stratified_split(split: Split, fraction: float, rng: random.Random) -> tuple[Split, Split]:
    """Seeded split keeping class proportions; every class keeps at least one training row."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(split.labels):
        by_class.setdefault(label, []).append(index)
    held_out: list[int] = []
    quotas = _class_quotas({label: len(indices) for label, indices in by_class.items()}, fraction)
    for label in sorted(by_class):
        indices = by_class[label]
        rng.shuffle(indices)
        held_out += indices[:quotas[label]]
    chosen = set(held_out)
    kept = [i for i in range(len(split)) if i not in chosen]
    source = f"{split.source} (seeded {fraction:.0%} validation split)"
    return _subset(split, kept, "train", split.source), _subset(split, sorted(held_out), "validation", source)


def _class_quotas(counts: dict[int, int], fraction: float) -> dict[int, int]:
    """Rows held out of each class: `fraction` of all rows in total (10% of 3,000 is 300, not the sum of each
    class's rounding), shared in proportion by largest remainder; every class keeps at least one training row."""
    exact = {label: count * fraction for label, count in counts.items()}
    quotas = {label: min(int(share), counts[label] - 1) for label, share in exact.items()}
    wanted = round(sum(counts.values()) * fraction)
    for label in sorted(exact, key=lambda label: (-(exact[label] - int(exact[label])), label)):
        if sum(quotas.values()) >= wanted:
            break
        if quotas[label] < counts[label] - 1:
            quotas[label] += 1
    return quotas


def shuffled(split: Split, rng: random.Random) -> Split:
    order = list(range(len(split)))
    rng.shuffle(order)
    return _subset(split, order, split.name, split.source)


def _subset(split: Split, indices: list[int], name: str, source: str) -> Split:
    return Split(name, source, [split.texts[i] for i in indices], [split.labels[i] for i in indices])


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
    return TextDataset(splits, LabelMap(names), dataset.validation_fraction)


def _preset_default(train_spec: Any, split: str) -> str | None:
    preset = PRESETS.get(train_spec) if isinstance(train_spec, str) else None  # a DataFrame is no preset
    return train_spec if preset is not None and split in preset.files else None


def _require_two_classes(train: Split, labels: LabelMap) -> None:
    present = sorted(set(train.labels))
    if len(present) < 2:
        only = labels.names[present[0]] if present else "none"
        raise BertfitError(f"{train.source}: every training row has label {only!r}; "
                           "classification needs at least two classes")


def _require_labels_in_train(raw: dict[str, RawSplit]) -> None:
    """A label that only a validation or test file uses would become a class no training row teaches."""
    if raw["train"].label_names:  # the source declares its names (preset, hub): ids index into them
        return
    known = {str(label).strip() for label in raw["train"].raw_labels}
    for part in (part for name, part in raw.items() if name != "train"):
        for row, label in zip(part.row_numbers(), part.raw_labels):
            if str(label).strip() not in known:
                raise BertfitError(f"{part.source} row {row}: label {label!r} never occurs in the training data "
                                   f"({raw['train'].source}); fix the row, add training rows for it, or list every "
                                   "class in data.label_names")
