"""A preset with no local copy loads from the Hub in the Hub's own format: the same splits, labels mapped by name.

The Hub copy here is a local folder laid out as the Hub serves a dataset (data/<split>-00000-of-00001.parquet with
ClassLabel features in the Hub's label order, which differs from the preset's), so the mapping is proven offline.
"""

import dataclasses
import json

import pytest

from bertfit.config import DataConfig, load_config
from bertfit.data import presets
from bertfit.data.hub_presets import HubCopy
from bertfit.data.read import read_split
from bertfit.data.splits import load_dataset
from bertfit.errors import BertfitError
from conftest import tiny_flags

datasets = pytest.importorskip("datasets")
HUB_ORDER = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]  # TREC's ClassLabel order on the Hub
QUESTIONS = {"DESC": "What is the meaning of life ?", "HUM": "Who wrote Hamlet ?", "LOC": "Where is Lima ?",
             "NUM": "How many feet are in a mile ?", "ENTY": "What animal barks ?", "ABBR": "What does NASA stand for ?"}


@pytest.fixture
def hub_trec(tmp_path, monkeypatch):
    """The trec preset with no local copy, its Hub copy a folder in the Hub's format."""
    features = datasets.Features({"text": datasets.Value("string"),
                                  "coarse_label": datasets.ClassLabel(names=HUB_ORDER)})
    for split, repeat in (("train", 8), ("test", 2)):
        rows = [(text, HUB_ORDER.index(label)) for label, text in QUESTIONS.items()] * repeat
        table = datasets.Dataset.from_dict({"text": [t for t, _ in rows], "coarse_label": [label for _, label in rows]},
                                           features=features)
        table.to_parquet(str(tmp_path / "hub" / "data" / f"{split}-00000-of-00001.parquet"))
    empty = tmp_path / "no-local-copies"
    (empty / "ag_news").mkdir(parents=True)  # a data folder that lacks trec
    monkeypatch.setenv("BERTFIT_DATA_DIR", str(empty))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    copy = dataclasses.replace(presets.PRESETS["trec"].hub, name=str(tmp_path / "hub"))
    monkeypatch.setitem(presets.PRESETS, "trec", dataclasses.replace(presets.PRESETS["trec"], hub=copy))
    return tmp_path


def test_a_preset_without_a_local_copy_loads_its_hub_copy_with_labels_matched_by_name(hub_trec):
    part = read_split("trec", "train", DataConfig(train="trec"))
    names = presets.PRESETS["trec"].label_names  # DESC, ENTY, ABBR, ...: not the Hub's order
    assert part.source.startswith("hub:") and len(part.texts) == 48
    assert all(QUESTIONS[names[label]] == text for text, label in zip(part.texts, part.raw_labels))
    dataset = load_dataset(DataConfig(train="trec"), seed=0)
    assert dataset.labels.names == names and set(dataset.splits) == {"train", "validation", "test"}
    assert len(dataset.splits["test"]) == 12


def test_a_run_trains_on_the_hub_copy(hub_trec, tiny_model_dir):
    from bertfit.training.recipe import train

    flags = tiny_flags(tiny_model_dir, hub_trec) + ["--data.train", "trec", "--name", "hub", "--train.max_steps", "2"]
    result = train(load_config(None, flags))
    labels = json.loads((result.run_dir / "labels.json").read_text())
    assert labels == list(presets.PRESETS["trec"].label_names) and result.test is not None  # the preset's order


def test_offline_without_a_local_copy_is_one_line_with_both_ways_out(hub_trec, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    copy = HubCopy("no-such-owner/no-such-dataset", label_column="coarse_label")
    monkeypatch.setitem(presets.PRESETS, "trec", dataclasses.replace(presets.PRESETS["trec"], hub=copy))
    with pytest.raises(BertfitError) as caught:
        read_split("trec", "train", DataConfig(train="trec"))
    message = str(caught.value)
    assert "\n" not in message and "no-such-owner/no-such-dataset" in message
    assert "connect to the internet" in message and "BERTFIT_DATA_DIR" in message and "TREC.train.all" in message


def test_every_preset_names_a_hub_copy_and_a_local_copy_wins():
    assert all(preset.hub.name.count("/") == 1 for preset in presets.PRESETS.values())
    part = read_split("trec", "test", DataConfig(train="trec"))  # the shared data folder has trec
    assert not part.source.startswith("hub:") and len(part.texts) == 500
