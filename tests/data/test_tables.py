"""A pandas DataFrame or a datasets.Dataset reads like a file: the same columns, the same checks, the same labels."""

from __future__ import annotations

import pytest

from bertfit.config import DataConfig, load_config
from bertfit.data.read import read_split
from bertfit.data.tables import save_table, table_texts, with_table_files
from bertfit.errors import BertfitError
from conftest import write_csv

pandas = pytest.importorskip("pandas")

ROWS = [("Stocks rallied", "on Friday", "Business"), ("The team won", "the cup", "Sports"), ("A new chip", "", "Sci/Tech")]


def test_a_dataframe_reads_like_the_same_csv(tmp_path):
    frame = pandas.DataFrame(ROWS, columns=["headline", "body", "topic"])
    config = DataConfig(text_columns=("headline", "body"), label_column="topic")
    from_file = read_split(str(write_csv(tmp_path / "a.csv", ROWS, header=("headline", "body", "topic"))), "train", config)
    from_frame = read_split(frame, "train", config)
    assert from_frame.texts == from_file.texts == ["Stocks rallied on Friday", "The team won the cup", "A new chip "]
    assert from_frame.raw_labels == from_file.raw_labels
    assert table_texts(frame, ("headline", "body")) == from_file.texts


def test_empty_cells_and_missing_columns_are_named(tmp_path):
    frame = pandas.DataFrame({"text": ["fine", None], "label": ["a", "b"]})
    with pytest.raises(BertfitError, match=r"DataFrame \(2 rows\) row 2: empty text"):
        read_split(frame, "train", DataConfig())
    with pytest.raises(BertfitError, match="column 'body' not found"):
        read_split(frame, "train", DataConfig(text_columns=("body",)))
    with pytest.raises(BertfitError, match="not a file name, a pandas DataFrame or a datasets.Dataset"):
        table_texts(object(), ("text",))


def test_a_dataset_keeps_its_class_names_in_the_saved_file(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    table = datasets.Dataset.from_dict({"text": ["bad", "good", "fine"], "label": [0, 1, 1]}, features=features)
    part = read_split(table, "train", DataConfig())
    assert part.raw_labels == [0, 1, 1] and part.label_names == ("negative", "positive")
    path = save_table(table, tmp_path)
    assert save_table(table, tmp_path) == path  # the same content, the same file
    assert read_split(str(path), "train", DataConfig()).raw_labels == ["negative", "positive", "positive"]


def test_tables_given_to_a_run_become_files_its_config_names(tmp_path):
    frame = pandas.DataFrame(ROWS, columns=["headline", "body", "topic"])
    config = with_table_files(load_config(None, ["--cache_dir", str(tmp_path)]), {"train": frame})
    assert config.data.train.startswith(str(tmp_path / "tables")) and config.data.train.endswith(".parquet")
    with pytest.raises(BertfitError, match="unknown split 'holdout'"):
        with_table_files(config, {"holdout": frame})
