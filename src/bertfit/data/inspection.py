"""Look at a dataset before training on it: sizes, class balance, token lengths, duplicates, odd texts.

`inspect_data(DataConfig(train="ag_news"), tokenizer, max_length=128)` returns plain data (see
`DatasetReport`). Rows are read leniently here, so empty texts are counted instead of refused:
inspection exists to find exactly the rows that training would stop on.

Duplicates: *exact* means the same text after trimming; *near-exact* means the same text after
Unicode normalisation, lowercasing and removing punctuation and whitespace, which catches copies
that differ only in case, spacing or punctuation. A test row whose text also appears in train
inflates test scores (the model may have memorised it), so cross-split copies are counted separately.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertfit.config import DataConfig
from bertfit.data.presets import PRESETS
from bertfit.data.read import check_columns, read_file, read_preset, read_split
from bertfit.data.tables import join_text_columns
from bertfit.errors import BertfitError

log = logging.getLogger(__name__)

PERCENTILES = (50, 90, 95, 99)
COVERAGE = 99  # the recommended max_length keeps this percentage of texts whole
_PUNCTUATION_OR_SPACE = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class SplitRows:
    name: str
    source: str
    texts: list[str]
    labels: list[str]


def exact_key(text: str) -> str:
    return hashlib.blake2b(text.strip().encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def near_key(text: str) -> str:
    """Hash of the text with case, accents' composition, punctuation and whitespace normalised away."""
    folded = _PUNCTUATION_OR_SPACE.sub("", unicodedata.normalize("NFKC", text).casefold())
    return hashlib.blake2b(folded.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def read_rows(spec: str, split: str, config: DataConfig) -> SplitRows:
    """Texts and labels (as strings) of one split, keeping empty texts so they can be counted."""
    if spec in PRESETS:
        path, columns = read_preset(spec, split)
        return SplitRows(split, str(path), [str(t) for t in columns["text"]],
                         _label_names(columns["label"], PRESETS[spec].label_names))
    path = Path(spec).expanduser()
    if not path.is_file():
        part = read_split(spec, split, config)  # hub datasets: the strict reader is the only one
        return SplitRows(split, part.source, part.texts, _label_names(part.raw_labels, part.label_names))
    columns = read_file(path, config)
    check_columns(columns, str(path), config.text_columns, config.label_column)
    texts = join_text_columns(columns, config.text_columns)
    return SplitRows(split, str(path), texts, _label_names(columns[config.label_column], config.label_names))


def _label_names(raw: list[Any], names: tuple[str, ...] | None) -> list[str]:
    def name(value: Any) -> str:
        text = "" if value is None else str(value).strip()
        return names[int(text)] if names and text.isdigit() and int(text) < len(names) else text
    return [name(v) for v in raw]


def length_summary(lengths: np.ndarray, max_length: int, model_limit: int) -> dict[str, Any]:
    """Percentiles of token counts (with special tokens), the max_length covering 99% of texts
    (rounded up to a multiple of 8, capped at what the model accepts) and the share cut at `max_length`."""
    lengths = np.asarray(lengths)
    summary: dict[str, Any] = {f"p{p}": float(np.percentile(lengths, p)) for p in PERCENTILES}
    summary["max"] = int(lengths.max()) if len(lengths) else 0
    recommended = int(math.ceil(np.percentile(lengths, COVERAGE) / 8) * 8) if len(lengths) else 8
    summary["recommended_max_length"] = max(8, min(recommended, model_limit))
    summary["max_length"] = max_length
    summary["truncated_fraction"] = float((lengths > max_length).mean()) if len(lengths) else 0.0
    summary["truncated_rows"] = int((lengths > max_length).sum())
    return summary


def duplicate_groups(texts: list[str], key=exact_key) -> list[list[int]]:
    """Row indices sharing a key, groups of two or more, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, text in enumerate(texts):
        if text.strip():
            groups.setdefault(key(text), []).append(index)
    return [rows for rows in groups.values() if len(rows) > 1]


def cross_split_copies(train: list[str], other: list[str], key=exact_key) -> list[int]:
    """Indices of `other` whose key also occurs in `train`."""
    seen = {key(t) for t in train if t.strip()}
    return [i for i, text in enumerate(other) if text.strip() and key(text) in seen]


def token_lengths(texts: list[str], tokenizer: Any, chunk: int = 4096) -> np.ndarray:
    """Untruncated token counts, special tokens included (what max_length is compared against)."""
    counts: list[int] = []
    for start in range(0, len(texts), chunk):
        encoded = tokenizer(texts[start:start + chunk], truncation=False, return_attention_mask=False,
                            return_token_type_ids=False, verbose=False)
        counts += [len(ids) for ids in encoded["input_ids"]]
    return np.asarray(counts, dtype=np.int64)


def split_report(rows: SplitRows, lengths: np.ndarray, max_length: int, model_limit: int, examples: int) -> dict[str, Any]:
    """Everything about one split on its own: size, balance, lengths, empty/long texts, duplicates inside it."""
    balance = Counter(rows.labels)
    total = max(1, len(rows.texts))
    exact, near = duplicate_groups(rows.texts), duplicate_groups(rows.texts, near_key)
    conflicting = [g for g in near if len({rows.labels[i] for i in g}) > 1]
    return {
        "source": rows.source, "rows": len(rows.texts),
        "class_balance": {label: {"rows": count, "fraction": count / total} for label, count in sorted(balance.items())},
        "imbalance_ratio": max(balance.values()) / min(balance.values()) if balance else 0.0,
        "token_lengths": length_summary(lengths, max_length, model_limit),
        "empty_texts": [i + 1 for i, t in enumerate(rows.texts) if not t.strip()],
        "very_long_texts": {"limit": model_limit, "rows": int((lengths > model_limit).sum()),
                            "examples": [int(i) + 1 for i in np.flatnonzero(lengths > model_limit)[:examples]]},
        "exact_duplicates": _duplicate_summary(exact, rows, examples),
        "near_duplicates": _duplicate_summary(near, rows, examples),
        "duplicates_with_conflicting_labels": _duplicate_summary(conflicting, rows, examples),
    }


def _duplicate_summary(groups: list[list[int]], rows: SplitRows, examples: int) -> dict[str, Any]:
    """Groups, the extra rows they hold (a group of 3 has 2 extras), and a few examples with 1-based rows."""
    return {"groups": len(groups), "extra_rows": sum(len(g) - 1 for g in groups),
            "examples": [{"rows": [i + 1 for i in g[:5]], "text": rows.texts[g[0]][:200],
                          "labels": sorted({rows.labels[i] for i in g})} for g in groups[:examples]]}


def inspect_data(config: DataConfig, tokenizer: Any, max_length: int, examples: int = 3) -> dict[str, Any]:
    """The inspection report of every split named in `config` (validation/test default to the preset's)."""
    splits = _read_all(config)
    model_limit = _model_limit(tokenizer)
    report: dict[str, Any] = {"max_length": max_length, "model_limit": model_limit, "splits": {}, "across_splits": {}}
    for name, rows in splits.items():
        report["splits"][name] = split_report(rows, token_lengths(rows.texts, tokenizer), max_length, model_limit, examples)
    train = splits["train"]
    for name, rows in splits.items():
        if name == "train":
            continue
        exact, near = cross_split_copies(train.texts, rows.texts), cross_split_copies(train.texts, rows.texts, near_key)
        report["across_splits"][f"train/{name}"] = {
            "exact_rows": len(exact), "near_rows": len(near), "fraction_of_" + name: len(near) / max(1, len(rows.texts)),
            "examples": [{"row": i + 1, "text": rows.texts[i][:200]} for i in near[:examples]]}
    return report


def _read_all(config: DataConfig) -> dict[str, SplitRows]:
    splits = {"train": read_rows(config.train, "train", config)}
    for name in ("validation", "test"):
        spec = getattr(config, name)
        if spec is None and config.train in PRESETS and name in PRESETS[config.train].files:
            spec = config.train
        if spec is not None:
            splits[name] = read_rows(spec, name, config)
    return splits


def _model_limit(tokenizer: Any) -> int:
    # Tokenizers without a declared limit report a huge sentinel (1e30); 512 is the BERT-family norm.
    limit = getattr(tokenizer, "model_max_length", 512)
    return int(limit) if limit and limit < 100_000 else 512


def drop_duplicates(config: DataConfig, out_dir: Path) -> dict[str, dict[str, int]]:
    """Write each split as out_dir/<split>.csv (text,label) without near-duplicates and empty texts.

    Within a split the first copy is kept; train rows whose text also appears in validation or test
    are removed from train (never from the evaluation splits, whose scores must stay comparable).
    """
    splits = _read_all(config)
    held_out = {near_key(t) for name, rows in splits.items() if name != "train" for t in rows.texts if t.strip()}
    out_dir = Path(out_dir)
    _check_outputs_free(out_dir, list(splits))
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for name, rows in splits.items():
        seen: set[str] = set()
        kept = []
        for text, label in zip(rows.texts, rows.labels):
            key = near_key(text)
            if not text.strip() or key in seen or (name == "train" and key in held_out):
                continue
            seen.add(key)
            kept.append((text, label))
        with open(out_dir / f"{name}.csv", "x", newline="", encoding="utf-8") as file:  # never over an existing file
            writer = csv.writer(file)
            writer.writerow(["text", "label"])
            writer.writerows(kept)
        counts[name] = {"rows": len(rows.texts), "kept": len(kept), "dropped": len(rows.texts) - len(kept)}
        log.info("%s: kept %d of %d rows -> %s", name, len(kept), len(rows.texts), out_dir / f"{name}.csv")
    return counts


def _check_outputs_free(out_dir: Path, names: list[str]) -> None:
    """The cleaned splits go to new files only: an existing file there (the input itself, a link to it, an earlier
    result) is named, and nothing is written."""
    taken = [out_dir / f"{name}.csv" for name in names if os.path.lexists(out_dir / f"{name}.csv")]
    if taken:
        raise BertfitError(f"drop_duplicates: {', '.join(map(str, taken))} already exists; write the cleaned splits to "
                           "a new folder (the input files stay as they are)")


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A human-readable digest of `inspect_data`'s report (the CLI prints it)."""
    lines = []
    for name, split in report["splits"].items():
        lengths = split["token_lengths"]
        balance = ", ".join(f"{label} {v['rows']} ({v['fraction']:.1%})" for label, v in split["class_balance"].items())
        lines += [f"{name}: {split['rows']} rows from {split['source']}",
                  f"  classes: {balance} (largest/smallest {split['imbalance_ratio']:.2f})",
                  f"  tokens: p50 {lengths['p50']:.0f}, p90 {lengths['p90']:.0f}, p95 {lengths['p95']:.0f}, "
                  f"p99 {lengths['p99']:.0f}, max {lengths['max']}; {lengths['truncated_fraction']:.2%} "
                  f"({lengths['truncated_rows']} rows) truncated at max_length {lengths['max_length']}; "
                  f"recommended max_length {lengths['recommended_max_length']} (covers {COVERAGE}%)",
                  f"  empty texts: {len(split['empty_texts'])}"
                  + (f" (rows {', '.join(map(str, split['empty_texts'][:10]))})" if split["empty_texts"] else "")
                  + f"; longer than {split['very_long_texts']['limit']} tokens: {split['very_long_texts']['rows']}"]
        for kind in ("exact_duplicates", "near_duplicates", "duplicates_with_conflicting_labels"):
            found = split[kind]
            lines.append(f"  {kind.replace('_', ' ')}: {found['groups']} groups, {found['extra_rows']} extra rows")
            lines += [f"    rows {e['rows']} {e['labels']}: {e['text'][:90]!r}" for e in found["examples"]]
    for pair, found in report["across_splits"].items():
        lines.append(f"{pair}: {found['exact_rows']} exact and {found['near_rows']} near-exact copies of train rows")
        lines += [f"    row {e['row']}: {e['text'][:90]!r}" for e in found["examples"]]
    return lines
