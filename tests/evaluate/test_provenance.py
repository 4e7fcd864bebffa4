"""Evaluation figures carry their data, split and rows everywhere; a slice never hides training's full test figure;
--max-rows bounds the whole evaluation; compare shows learning rates as they are."""

from __future__ import annotations

import csv
import shutil

import pytest
import yaml

from bertfit.artifacts import read_results
from bertfit.cli.main import main
from bertfit.config import load_config
from bertfit.data.presets import data_dir
from bertfit.errors import BertfitError
from bertfit.evaluate.model_card import render_model_card
from bertfit.evaluate.report import base_model_label, render_compare, render_report
from bertfit.evaluate.run import evaluate_run
from bertfit.training.recipe import train

SENTIMENT140 = data_dir() / "sentiment140" / "testdata.manual.2009.06.14.csv"  # 0/2/4, no header
SLICE = 20


@pytest.fixture(scope="module")
def sentiment_run(tiny_model_dir, tmp_path_factory):
    """A tiny run on Sentiment140 without its neutral rows (data.label_map), tested on the same file."""
    root = tmp_path_factory.mktemp("provenance")
    config = load_config(None, [
        "--model.name", str(tiny_model_dir), "--model.max_length", "48", "--output_dir", str(root / "runs"),
        "--cache_dir", str(root / "cache"), "--train.progress", "false", "--train.report_to", "[]",
        "--train.batch_size", "32", "--train.lr", "1e-3", "--train.epochs", "1", "--name", "s140",
        "--data.train", str(SENTIMENT140), "--data.test", str(SENTIMENT140), "--data.header", "false",
        "--data.text_columns", "1", "--data.label_column", "0", "--data.label_map", "{0: negative, 4: positive, 2: null}"])
    return train(config).run_dir


def _kept_rows() -> int:
    with open(SENTIMENT140, newline="", encoding="utf-8") as file:
        return sum(row[0] != "2" for row in csv.reader(file))


def test_max_rows_below_one_is_an_error(sentiment_run, capsys):
    with pytest.raises(BertfitError, match="max_rows: must be >= 1"):
        evaluate_run(sentiment_run, max_rows=0)
    assert main(["evaluate", str(sentiment_run), "--max-rows", "0"]) == 2
    assert "--max-rows: must be >= 1" in capsys.readouterr().err


def test_a_slice_is_labelled_bounds_the_whole_evaluation_and_keeps_the_full_test_figure(sentiment_run, tmp_path,
                                                                                       tiny_model_dir):
    whole = _kept_rows()
    results = read_results(sentiment_run)
    assert results["rows"]["test"] == whole  # label_map applied to test as to train
    sliced = evaluate_run(sentiment_run, max_rows=SLICE, figures=False)
    assert (sliced["split"], sliced["rows"], sliced["source_rows"], sliced["sliced"]) == ("test", SLICE, whole, True)
    # validation bounded too: 20 rows are too few to fit a temperature on, so none is fitted or stored
    assert "calibration" not in sliced and f"{SLICE} validation rows (max_rows {SLICE} bounds them) are too few" in \
        sliced["calibration_skipped"]
    assert sliced["baselines_trained_on"].endswith(f"({SLICE} rows)")  # and the TF-IDF baseline's train set

    card = render_model_card(sentiment_run).read_text(encoding="utf-8")
    label = f"split test, first {SLICE} of {whole} rows (a slice)"
    assert label in card
    assert f"on the whole test data `{SENTIMENT140}` ({whole} rows): accuracy {results['test']['accuracy']:.4f}" in card
    page = render_report(sentiment_run, explain_errors=0, out=tmp_path / "report.html").read_text(encoding="utf-8")
    assert label in page and f"{whole} rows): accuracy {results['test']['accuracy']:.4f}" in page
    assert f"Base model {tiny_model_dir}." in page


def test_compare_prints_learning_rates_and_where_each_figure_comes_from(sentiment_run, tmp_path):
    evaluate_run(sentiment_run, max_rows=SLICE, figures=False, baselines=False)
    other = shutil.copytree(sentiment_run, tmp_path / "s140-lr")
    config = yaml.safe_load((other / "config.yaml").read_text(encoding="utf-8"))
    config["train"]["lr"] = 3e-5
    (other / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    evaluate_run(other, figures=False, baselines=False, calibrate=False)
    page = render_compare([sentiment_run, other], tmp_path / "compare.html").read_text(encoding="utf-8")
    assert "<td>0.001</td>" in page and "<td>3e-05</td>" in page and "0.0000" not in page
    whole = _kept_rows()
    assert f"first {SLICE} of {whole} rows (a slice)" in page and f"split test, {whole} rows" in page
    assert page.count(f"({whole} rows)") == 2  # training's whole-test accuracy for both


def test_the_embedded_model_is_named_in_reports():
    assert base_model_label("embedded") == "sentence-transformers/all-MiniLM-L6-v2 (embedded)"
    assert base_model_label("bert-base-uncased") == "bert-base-uncased"
