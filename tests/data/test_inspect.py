"""`bertfit inspect` on a crafted dataset whose sizes, duplicates and lengths are known."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bertfit.cli.main import main
from bertfit.config import DataConfig
from bertfit.data.inspection import drop_duplicates, inspect_data, near_key
from bertfit.model import load_tokenizer
from conftest import write_csv

LONG = " ".join(["word"] * 300)  # one token per word: well past max_length 64


@pytest.fixture
def crafted(tmp_path):
    train = [("The cat sat on the mat.", "pets"), ("The cat sat on the mat.", "pets"),  # exact copy
             ("the CAT sat on the mat", "pets"),  # near copy of the two above
             ("Stocks fell sharply", "money"), ("stocks fell sharply!", "pets"),  # near copy, other label
             ("", "money"),  # empty
             (LONG, "money"), ("Dogs bark at night", "pets"), ("Bonds rose today", "money"),
             ("Leaked test row, word for word", "money")]
    test = [("Leaked test row, word for word", "money"), ("LEAKED test row word for word", "money"),
            ("A fresh sentence", "pets"), ("Another new one here", "money")]
    return write_csv(tmp_path / "train.csv", train), write_csv(tmp_path / "test.csv", test), train, test


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_inspect_counts_duplicates_balance_and_lengths(crafted, tokenizer):
    train_path, test_path, train, test = crafted
    report = inspect_data(DataConfig(train=str(train_path), test=str(test_path)), tokenizer, max_length=64)
    split = report["splits"]["train"]
    assert split["rows"] == 10 and report["splits"]["test"]["rows"] == 4
    assert split["class_balance"]["money"]["rows"] == 5 and split["class_balance"]["pets"]["fraction"] == 0.5
    assert split["empty_texts"] == [6]
    assert (split["exact_duplicates"]["groups"], split["exact_duplicates"]["extra_rows"]) == (1, 1)
    assert split["exact_duplicates"]["examples"][0]["rows"] == [1, 2]
    assert (split["near_duplicates"]["groups"], split["near_duplicates"]["extra_rows"]) == (2, 3)
    assert split["duplicates_with_conflicting_labels"]["examples"][0]["labels"] == ["money", "pets"]
    lengths = np.array([len(tokenizer(t)["input_ids"]) for t, _ in train])
    summary = split["token_lengths"]
    assert summary["max"] == lengths.max() == 302  # 300 words + [CLS] + [SEP]
    assert summary["p50"] == np.percentile(lengths, 50) and summary["p99"] == pytest.approx(np.percentile(lengths, 99))
    assert summary["truncated_rows"] == 1 and summary["truncated_fraction"] == 0.1
    assert summary["recommended_max_length"] % 8 == 0 and summary["recommended_max_length"] >= np.percentile(lengths, 99)
    across = report["across_splits"]["train/test"]
    assert (across["exact_rows"], across["near_rows"]) == (1, 2)


def test_drop_duplicates_keeps_first_copies_and_removes_leaked_train_rows(crafted, tmp_path):
    train_path, test_path, _, _ = crafted
    counts = drop_duplicates(DataConfig(train=str(train_path), test=str(test_path)), tmp_path / "clean")
    with open(tmp_path / "clean" / "train.csv", newline="", encoding="utf-8") as file:
        kept = [row["text"] for row in csv.DictReader(file)]
    # 10 rows - 2 near copies of the cat - 1 near copy of stocks - 1 empty - 1 leaked into test
    assert counts["train"] == {"rows": 10, "kept": 5, "dropped": 5}
    assert kept[0] == "The cat sat on the mat." and "Leaked test row, word for word" not in kept
    assert counts["test"]["kept"] == 3  # the test split's own near copy goes; leaks stay in test
    assert len({near_key(t) for t in kept}) == len(kept)


def test_inspect_cli_prints_and_writes_json(crafted, tmp_path, tiny_model_dir, capsys):
    train_path, test_path, _, _ = crafted
    code = main(["inspect", "--data", str(train_path), "--test", str(test_path), "--model", str(tiny_model_dir),
                 "--max-length", "64", "--out", str(tmp_path / "inspect.json")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "recommended max_length" in printed and "train/test: 1 exact and 2 near-exact" in printed
    assert json.loads((tmp_path / "inspect.json").read_text())["splits"]["train"]["rows"] == 10


def test_inspect_cli_names_a_missing_column(crafted, tiny_model_dir, capsys):
    train_path, _, _, _ = crafted
    code = main(["inspect", "--data", str(train_path), "--label-column", "category", "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "'category' not found" in err and "set --label-column" in err
