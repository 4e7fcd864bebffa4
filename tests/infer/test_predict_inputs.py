"""What predict reads and what it answers: a run's own text columns from a file or a DataFrame, joined as
training joined them, and multi-label predictions that give each predicted label with its probability."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bertfit.config import load_config
from bertfit.infer.predictor import Predictor
from conftest import headline_rows, tiny_flags, write_csv


@pytest.fixture(scope="module")
def two_column_run(tiny_model_dir, tmp_path_factory):
    from bertfit.training.recipe import train

    root = tmp_path_factory.mktemp("two-columns")
    write_csv(root / "train.csv", headline_rows(0, 160), header=("headline", "body", "topic"))
    config = load_config(None, [*tiny_flags(tiny_model_dir, root), "--name", "columns", "--data.train",
                                str(root / "train.csv"), "--data.text_columns", "headline,body",
                                "--data.label_column", "topic"])
    return train(config).run_dir


@pytest.fixture(scope="module")
def multi_label_run(tiny_model_dir, ag_news_rows, tmp_path_factory):
    from bertfit.training.recipe import train

    root = tmp_path_factory.mktemp("multi")
    rows = [(text, label + ("|long" if len(text) > 220 else "")) for text, label in ag_news_rows[:160]]
    write_csv(root / "train.csv", rows)
    config = load_config(None, [*tiny_flags(tiny_model_dir, root), "--name", "multi", "--data.train",
                                str(root / "train.csv"), "--data.multi_label", "true", "--train.metric", "f1_micro"])
    return train(config).run_dir


def test_predict_file_reads_the_runs_own_text_columns_joined_as_in_training(two_column_run, tmp_path, capsys):
    from bertfit.cli.main import main

    rows = headline_rows(300, 306)
    write_csv(tmp_path / "new.csv", rows, header=("headline", "body", "topic"))
    predictor = Predictor(two_column_run, backend="pytorch")
    assert predictor.text_columns == ("headline", "body")
    joined = predictor.predict_proba([f"{headline.strip()} {body.strip()}" for headline, body, _ in rows])
    assert main(["predict", str(two_column_run), "--file", str(tmp_path / "new.csv"), "--out", str(tmp_path / "a.csv")]) == 0
    with open(tmp_path / "a.csv", newline="", encoding="utf-8") as file:
        written = list(csv.DictReader(file))
    assert [row["text"] for row in written] == [f"{h.strip()} {b.strip()}" for h, b, _ in rows]
    got = np.array([[float(row[f"prob_{name}"]) for name in predictor.labels.names] for row in written])
    np.testing.assert_allclose(got, joined, atol=1e-5)
    # --text-column overrides the run's columns: one column, or several comma-separated
    assert main(["predict", str(two_column_run), "--file", str(tmp_path / "new.csv"), "--text-column", "body,headline",
                 "--out", str(tmp_path / "b.csv")]) == 0
    with open(tmp_path / "b.csv", newline="", encoding="utf-8") as file:
        assert next(csv.DictReader(file))["text"] == f"{rows[0][1].strip()} {rows[0][0].strip()}"
    capsys.readouterr()
    assert main(["predict", str(two_column_run), "--file", str(tmp_path / "new.csv"), "--text-column", "title"]) == 2
    assert "'title' is not a column" in capsys.readouterr().err


def test_a_dataframe_or_dataset_predicts_like_its_joined_texts(two_column_run):
    pandas = pytest.importorskip("pandas")
    rows = headline_rows(300, 305)
    frame = pandas.DataFrame(rows, columns=["headline", "body", "topic"])
    predictor = Predictor(two_column_run, backend="pytorch")
    texts = [f"{headline.strip()} {body.strip()}" for headline, body, _ in rows]
    expected = predictor.predict_proba(texts)
    np.testing.assert_allclose(predictor.predict_proba(frame), expected, atol=1e-6)
    assert [p.text for p in predictor.predict(frame)] == texts
    np.testing.assert_allclose(predictor.predict_proba(frame["body"]), predictor.predict_proba(list(frame["body"])))
    np.testing.assert_allclose(predictor.predict_proba(frame, text_columns=("body",)),
                               predictor.predict_proba(list(frame["body"])))
    datasets = pytest.importorskip("datasets")
    np.testing.assert_allclose(predictor.predict_proba(datasets.Dataset.from_pandas(frame)), expected, atol=1e-6)


def test_multi_label_predictions_give_each_label_with_its_probability(multi_label_run, capsys):
    from bertfit.artifacts import update_model_meta
    from bertfit.cli.main import main

    texts = ["Stocks rallied on Friday after the central bank held rates", "The team won the cup"]
    probabilities = Predictor(multi_label_run, backend="pytorch").predict_proba(texts)
    names = Predictor(multi_label_run, backend="pytorch").labels.names
    # Only the least likely label of the first text clears its cut-off: the top label is not predicted.
    weakest = names[int(probabilities[0].argmin())]
    update_model_meta(multi_label_run, thresholds={name: 0.0 if name == weakest else 1.01 for name in names})
    first, second = Predictor(multi_label_run, backend="pytorch").predict(texts)
    assert first.labels == tuple(n for n in names if n == weakest) and first.label == weakest
    assert first.label_probabilities == {weakest: pytest.approx(float(probabilities[0].min()))}
    assert first.confidence == pytest.approx(float(probabilities[0].min()))  # not the top label's probability
    assert first.confidence < float(probabilities[0].max())
    assert second.labels == (weakest,)
    update_model_meta(multi_label_run, thresholds=dict.fromkeys(names, 1.01))  # nothing clears: no label predicted
    none = Predictor(multi_label_run, backend="pytorch").predict(texts)[0]
    assert none.labels == () and none.label_probabilities == {}
    assert none.confidence == pytest.approx(1 - float(probabilities[0].max()))
    update_model_meta(multi_label_run, thresholds={name: 0.0 if name == weakest else 1.01 for name in names})
    assert main(["predict", str(multi_label_run), texts[0]]) == 0
    assert capsys.readouterr().out.startswith(f"{weakest}({probabilities[0].min():.3f})\t")
