"""data.label_map renames, merges and drops labels, the same way in every split, and never silently."""

from __future__ import annotations

import csv
import logging

import pytest

from bertfit.config import DataConfig, load_config
from bertfit.data.presets import data_dir
from bertfit.data.splits import load_dataset
from bertfit.errors import BertfitError, ConfigError

SENTIMENT140 = data_dir() / "sentiment140" / "testdata.manual.2009.06.14.csv"  # no header: polarity,text; 0/2/4


def _polarities() -> list[str]:
    with open(SENTIMENT140, newline="", encoding="utf-8") as file:
        return [row[0] for row in csv.reader(file)]


def _config(label_map: dict, **fields) -> DataConfig:
    raw = {"train": str(SENTIMENT140), "test": str(SENTIMENT140), "header": False, "text_columns": ["1"],
           "label_column": "0", "label_map": label_map, **fields}
    return load_config(None, [f"--data.{k}={v}" if not isinstance(v, (dict, list)) else f"--data.{k}={v!r}"
                              for k, v in raw.items()]).data


def test_sentiment140_keeps_negative_and_positive_and_counts_the_dropped_neutral_rows(caplog):
    polarity = _polarities()
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(_config({0: "negative", 4: "positive", 2: None}), seed=0)
    assert dataset.labels.names == ("negative", "positive")
    kept = polarity.count("0") + polarity.count("4")
    assert len(dataset.splits["train"]) + len(dataset.splits["validation"]) == kept == len(dataset.splits["test"])
    test = dataset.splits["test"]
    assert test.labels.count(0) == polarity.count("0") and test.labels.count(1) == polarity.count("4")
    dropped = [r.getMessage() for r in caplog.records if "label_map dropped" in r.getMessage()]
    assert len(dropped) == 2  # train and test, each with its count
    assert all(f"dropped {polarity.count('2')} of {len(polarity)} rows (labels 2)" in m for m in dropped)


def test_two_source_labels_merge_into_one_name():
    dataset = load_dataset(_config({0: "polar", 4: "polar", 2: "neutral"}), seed=0)
    assert dataset.labels.names == ("neutral", "polar")
    assert dataset.splits["test"].labels.count(0) == _polarities().count("2")


def test_a_key_that_never_occurs_in_train_is_an_error():
    with pytest.raises(BertfitError, match=r"data.label_map: '3' never occurs as a label in .*labels: 0, 2, 4"):
        load_dataset(_config({0: "negative", 4: "positive", 3: None}), seed=0)


def test_preset_labels_map_by_their_declared_names():
    dataset = load_dataset(DataConfig(train="ag_news", label_map={"Sci/Tech": "Business", "World": None},
                                      max_train_rows=50, max_eval_rows=20), seed=0)
    assert dataset.labels.names == ("Sports", "Business")


def test_label_map_is_refused_with_multi_label_data():
    with pytest.raises(ConfigError, match="data.label_map: not supported with data.multi_label"):
        load_config(None, ["--data.multi_label", "true", "--data.label_map", "{a: b}"])


def test_an_error_after_dropped_rows_names_the_row_as_numbered_in_its_file(tmp_path):
    """Rows that data.label_map drops do not shift the row numbers that later messages give."""
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(8)) + "last,drop\n")
    test.write_text("text,label\nfirst,drop\nsecond,drop\nthird,a\nfourth,zzz\n")
    config = DataConfig(train=str(train), test=str(test), label_map={"drop": None, "a": "a", "b": "b"})
    with pytest.raises(BertfitError, match=r"test.csv row 4: label 'zzz' never occurs in the training data"):
        load_dataset(config, seed=0)
