"""Labels are matched by name across every join: a preset's whole numbers stand for the preset's own names, never
for positions in another label list; a label outside the set is one error naming it and the set."""

from __future__ import annotations

import numpy as np
import pytest

from bertfit.config import DataConfig, load_config
from bertfit.curate.folds import read_training_rows
from bertfit.data.labels import LabelMap, map_labels, multi_hot
from bertfit.data.presets import PRESETS
from bertfit.data.read import RawSplit, read_split
from bertfit.data.splits import load_dataset
from bertfit.errors import BertfitError

AG_NEWS = PRESETS["ag_news"].label_names  # World, Sports, Business, Sci/Tech: ids 0..3 in the preset's files
SORTED = LabelMap(("Business", "Sci/Tech", "Sports", "World"))  # a run trained on names, sorted


def test_a_presets_ids_go_through_its_own_names_to_the_runs_ids():
    part = RawSplit("ag_news test", ["a", "b", "c", "d"], [0, 1, 2, 3], AG_NEWS)
    ids = map_labels(part, SORTED)
    assert [SORTED.names[i] for i in ids] == ["World", "Sports", "Business", "Sci/Tech"]


def test_a_label_outside_the_set_is_one_error_naming_it_the_set_and_the_count():
    part = RawSplit("other.csv", ["a", "b", "c", "d"], ["World", "Weather", "Sports", "Weather"], None)
    with pytest.raises(BertfitError) as error:
        map_labels(part, SORTED)
    message = str(error.value)
    assert "other.csv row 2: label 'Weather' is not in the label set (Business, Sci/Tech, Sports, World)" in message
    assert "2 rows carry labels outside it: 'Weather' (2 rows)" in message
    # a whole number with no names declared for it is a label like any other, not a position in the run's list
    with pytest.raises(BertfitError, match="row 1: label 0 is not in the label set"):
        map_labels(RawSplit("ints.csv", ["a"], [0], None), SORTED)
    # a preset id names its own label; that name is what must be in the set
    with pytest.raises(BertfitError, match=r"label 3 \('Sci/Tech' in ag_news's own label names\) is not in the label set"):
        map_labels(RawSplit("ag_news", ["a"], [3], AG_NEWS), LabelMap(("World", "Sports")))


def test_numbers_that_are_names_stay_names():
    """Sentiment140's 0/4 declared as names: "4" is the name 4, not position 4."""
    part = RawSplit("s140", ["a", "b"], ["4", "0"], ("0", "4"))
    assert map_labels(part, LabelMap(("0", "4"))) == [1, 0]


def test_multi_hot_matches_by_name_and_refuses_a_bare_position():
    declared = RawSplit("a.csv", ["x", "y"], ["2|0", "1"], ("red", "green", "blue"))
    run = LabelMap(("blue", "green", "red"))
    assert multi_hot(declared, run, "|") == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    with pytest.raises(BertfitError, match="row 1: label '0' is not in the label set"):
        multi_hot(RawSplit("b.csv", ["x"], ["0|blue"], None), run, "|")


def test_training_on_a_preset_with_label_names_in_another_order_keeps_every_text_with_its_label():
    config = DataConfig(train="ag_news", label_names=("Business", "Sci/Tech", "Sports", "World"), max_eval_rows=200)
    dataset = load_dataset(config, seed=0)
    assert dataset.labels.names == ("Business", "Sci/Tech", "Sports", "World")
    raw = read_split("ag_news", "test", DataConfig(train="ag_news"))  # as read, before any label mapping
    truth = {text: AG_NEWS[label] for text, label in zip(raw.texts, raw.raw_labels)}
    test = dataset.splits["test"]
    assert [dataset.labels.names[i] for i in test.labels] == [truth[text] for text in test.texts]


def test_the_audit_reads_a_preset_by_name_too(tmp_path):
    """curate.folds.read_training_rows calls the same map_labels: names line up with the preset's."""
    config = load_config(None, ["--data.train", "ag_news", "--data.label_names", "Sci/Tech,World,Sports,Business",
                                "--cache_dir", str(tmp_path)])
    rows = read_training_rows(config)
    raw = read_split("ag_news", "train", config.data)
    assert [rows.names[i] for i in rows.labels] == [AG_NEWS[label] for label in raw.raw_labels]
    assert np.bincount(rows.labels).min() > 0
