"""`bertfit train --init-from RUN`: start from a run's weights, keep its label ids, grow the head for new labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from bertfit.cli.main import main
from conftest import write_csv


def test_init_from_keeps_old_ids_and_adds_rows(tiny_overrides, tmp_path, ag_news_rows):
    three = [row for row in ag_news_rows if row[1] != "Sci/Tech"][:60]
    write_csv(tmp_path / "three.csv", three)
    write_csv(tmp_path / "four.csv", ag_news_rows[:80])
    assert main(["train", *tiny_overrides, "--data.train", str(tmp_path / "three.csv"), "--name", "old"]) == 0
    runs = tmp_path / "runs"
    # lr 1e-9: the new run barely moves, so its weights show what it started from.
    assert main(["train", *tiny_overrides, "--data.train", str(tmp_path / "four.csv"), "--name", "new",
                 "--init-from", str(runs / "old"), "--train.lr", "1e-9"]) == 0
    old_labels = json.loads((runs / "old" / "labels.json").read_text())
    new_labels = json.loads((runs / "new" / "labels.json").read_text())
    assert old_labels == ["Business", "Sports", "World"]
    assert new_labels == old_labels + ["Sci/Tech"]  # old ids kept, the new label appended
    old, new = load_file(runs / "old" / "model" / "model.safetensors"), load_file(runs / "new" / "model" / "model.safetensors")
    np.testing.assert_allclose(new["head.weight"][:3], old["head.weight"], atol=1e-6)
    assert new["head.weight"].shape == (4, old["head.weight"].shape[1])
    assert not np.allclose(new["head.weight"][3], 0)  # a fresh row, not zeros
    encoder_key = "encoder.encoder.layer.1.output.dense.weight"
    np.testing.assert_allclose(new[encoder_key], old[encoder_key], atol=1e-6)


def test_init_from_missing_run_is_a_clear_error(tiny_overrides, ag_news_csv, tmp_path, capsys):
    code = main(["train", *tiny_overrides, "--data.train", str(ag_news_csv), "--init-from", str(tmp_path / "nope")])
    assert code == 2
    assert "no trained model found" in capsys.readouterr().err


def test_grown_model_reports_what_the_earlier_labels_lost(tiny_overrides, tmp_path, ag_news_rows, capsys):
    """The forgetting figure: the earlier model and the grown one, on the same test rows of the earlier labels."""
    from bertfit.infer.predictor import Predictor

    three = [row for row in ag_news_rows if row[1] != "Sci/Tech"][:60]
    write_csv(tmp_path / "three.csv", three)
    write_csv(tmp_path / "four.csv", ag_news_rows[:80])
    test_rows = ag_news_rows[300:360]
    write_csv(tmp_path / "test.csv", test_rows)
    runs = tmp_path / "runs"
    assert main(["train", *tiny_overrides, "--data.train", str(tmp_path / "three.csv"), "--name", "old"]) == 0
    assert main(["train", *tiny_overrides, "--data.train", str(tmp_path / "four.csv"), "--data.test",
                 str(tmp_path / "test.csv"), "--name", "new", "--init-from", str(runs / "old"),
                 "--train.lr", "5e-3"]) == 0
    assert "points forgotten" in capsys.readouterr().out
    test = json.loads((runs / "new" / "results.json").read_text())["test"]

    old_rows = [(text, label) for text, label in test_rows if label != "Sci/Tech"]
    new_rows = [(text, label) for text, label in test_rows if label == "Sci/Tech"]
    assert (test["old_labels_rows"], test["new_labels_rows"]) == (len(old_rows), len(new_rows)) and new_rows

    def accuracy(run: str, rows: list[tuple[str, str]]) -> float:
        predictions = Predictor(runs / run, device="cpu").predict([text for text, _ in rows])
        return float(np.mean([p.label == label for p, (_, label) in zip(predictions, rows)]))

    assert test["accuracy/old_labels_before"] == pytest.approx(accuracy("old", old_rows))
    assert test["accuracy/old_labels"] == pytest.approx(accuracy("new", old_rows))
    assert test["accuracy/new_labels"] == pytest.approx(accuracy("new", new_rows))
    assert test["forgetting_points"] == pytest.approx(
        100 * (test["accuracy/old_labels_before"] - test["accuracy/old_labels"]), abs=1e-3)
