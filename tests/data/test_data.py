import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertfit.config import DataConfig
from bertfit.data.labels import natural_key
from bertfit.data.splits import load_dataset
from bertfit.errors import BertfitError
from conftest import write_csv

ROWS = [(f"text number {i}", ["neg", "pos", "mid"][i % 3]) for i in range(30)]


def _config(path: Path, **fields) -> DataConfig:
    return DataConfig(train=str(path), **fields)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_file_format_reads_the_same_rows(tmp_path: Path, fmt: str):
    records = [{"text": t, "label": label} for t, label in ROWS]
    path = tmp_path / f"data.{fmt}"
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        path.write_text("text" + sep + "label\n" + "".join(f"{t}{sep}{label}\n" for t, label in ROWS))
    elif fmt == "json":
        path.write_text(json.dumps(records))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    dataset = load_dataset(_config(path, validation_fraction=0.2), seed=1)
    assert dataset.labels.names == ("mid", "neg", "pos")
    train, validation = dataset.splits["train"], dataset.splits["validation"]
    assert len(train) + len(validation) == 30
    assert sorted(train.texts + validation.texts) == sorted(t for t, _ in ROWS)
    # stratified: 2 of each class's 10 rows go to validation
    assert sorted(validation.labels) == [0, 0, 1, 1, 2, 2]
    for text, label in zip(train.texts, train.labels):
        assert dataset.labels.names[label] == dict(ROWS)[text]


def test_split_is_seeded(tmp_path: Path):
    path = write_csv(tmp_path / "d.csv", ROWS)
    first = load_dataset(_config(path), seed=7).splits["validation"].texts
    assert load_dataset(_config(path), seed=7).splits["validation"].texts == first
    assert load_dataset(_config(path), seed=8).splits["validation"].texts != first


def test_text_columns_are_joined_and_labels_sorted_naturally(tmp_path: Path):
    rows = [("Title", f"body {i}", str([2, 10, 1][i % 3])) for i in range(9)]
    path = write_csv(tmp_path / "d.csv", rows, header=("title", "description", "class"))
    dataset = load_dataset(_config(path, text_columns=("title", "description"), label_column="class"), seed=0)
    assert dataset.labels.names == ("1", "2", "10")
    assert all(t.startswith("Title body ") for t in dataset.splits["train"].texts)
    assert natural_key("class2") < natural_key("class10")


def test_integer_labels_index_declared_names(tmp_path: Path):
    path = write_csv(tmp_path / "d.csv", [(f"t{i}", i % 2) for i in range(10)])
    dataset = load_dataset(_config(path, label_names=("bad", "good")), seed=0)
    train = dataset.splits["train"]
    assert dataset.labels.names == ("bad", "good")
    assert [int(t[1:]) % 2 for t in train.texts] == train.labels


def test_ag_news_preset_maps_one_based_classes():
    dataset = load_dataset(DataConfig(train="ag_news", max_eval_rows=50), seed=0)
    assert dataset.labels.names == ("World", "Sports", "Business", "Sci/Tech")
    test = dataset.splits["test"]
    assert len(test) == 50 and set(test.labels) <= {0, 1, 2, 3}
    full = load_dataset(DataConfig(train="ag_news"), seed=0).splits["test"]
    assert len(full) == 7600 and sorted(set(full.labels)) == [0, 1, 2, 3]
    # the first official row: class 3 (Business), "Fears for T N pension after talks"
    index = next(i for i, t in enumerate(full.texts) if t.startswith("Fears for T N pension after talks"))
    assert full.labels[index] == 2


@pytest.mark.parametrize("content, config_fields, message", [
    ("text,label\nhello,a\n,b\nbye,b\n", {}, r"d\.csv row 2: empty text"),
    ("txt,label\nhello,a\nbye,b\n", {}, r"column 'text' not found \(columns: txt, label\); set data.text_columns"),
    ("text,lbl\nhello,a\nbye,b\n", {}, r"column 'label' not found .*set data.label_column"),
    ("text,label\nhello,a\nbye,a\n", {}, r"every training row has label 'a'"),
    ("text,label\nhello,a\nbye,zzz\n", {"label_names": ("a", "b")}, r"row 2: label 'zzz' is not in the label set"),
    ("text,label\nhello,a\nbye,\n", {}, r"row 2: missing label"),
    ("text,label\nhello,a,extra\n", {}, r"line 2: 3 fields where the header has 2"),
])
def test_bad_rows_name_file_and_row(tmp_path: Path, content, config_fields, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(BertfitError, match=message):
        load_dataset(_config(path, **config_fields), seed=0)


def test_non_utf8_bytes_are_reported_with_line(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nhello,a\ncaf\xe9,b\n")
    with pytest.raises(BertfitError, match=r"d\.csv line 3: byte 0xe9 is not valid UTF-8"):
        load_dataset(_config(path), seed=0)


def test_missing_file_and_unknown_format(tmp_path: Path):
    with pytest.raises(BertfitError, match=r"data.train: file .*nope.csv not found"):
        load_dataset(_config(tmp_path / "nope.csv"), seed=0)
    odd = tmp_path / "d.xlsx"
    odd.write_text("x")
    with pytest.raises(BertfitError, match="unknown file type '.xlsx'"):
        load_dataset(_config(odd), seed=0)


def test_hub_name_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(BertfitError, match=r"could not load hub dataset 'someone/no-such-dataset'.*Offline\?"):
        load_dataset(DataConfig(train="someone/no-such-dataset"), seed=0)
