"""The stacked ensemble (model + TF-IDF): the weight search is never worse than either part on validation,
train.stack auto builds it only when TF-IDF wins, `bertfit stack` adds it to a finished run, and the
Predictor, evaluate and multi-label runs use it."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest

from bertfit import artifacts
from bertfit.cli.main import main
from bertfit.config import load_config, replace
from bertfit.data.splits import load_dataset
from bertfit.errors import BertfitError, ConfigError
from bertfit.infer.predictor import Predictor
from bertfit.infer.stack import mix
from bertfit.infer.tfidf import load_tfidf
from bertfit.metrics import probability_metrics, softmax
from bertfit.training.recipe import train
from bertfit.training.stack import choose_weight, stack_at_end_of_training
from conftest import keyword_flags, keyword_rows, write_csv

pytest.importorskip("sklearn")

def assert_same_scores(found: dict, expected: dict) -> None:
    assert set(found) == set(expected) == {"model", "tfidf", "stack"}
    for part in expected:
        assert found[part] == pytest.approx(expected[part], abs=1e-6)


@pytest.fixture(scope="module")
def stacked_run(tiny_model_dir, tmp_path_factory):
    """train.stack auto on the keyword task: TF-IDF wins, the stack is built at the end of training."""
    root = tmp_path_factory.mktemp("stacked")
    return train(load_config(None, keyword_flags(tiny_model_dir, root, "auto", "auto")))


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro", "f1_micro", "loss"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_the_chosen_weight_is_never_worse_than_either_part(metric, multi_label):
    names = ("a", "b", "c", "d")
    for seed in range(8):
        rng = np.random.default_rng(seed)
        if multi_label:
            labels = (rng.random((60, 4)) < 0.3).astype(float)
            model = 1 / (1 + np.exp(-(rng.normal(size=(60, 4)) + 2 * (labels - 0.5) * rng.random())))
            tfidf = 1 / (1 + np.exp(-(rng.normal(size=(60, 4)) + 2 * (labels - 0.5) * rng.random())))
        else:
            labels = rng.integers(0, 4, 60)
            model = softmax(rng.normal(size=(60, 4)) + 2 * rng.random() * np.eye(4)[labels])
            tfidf = softmax(rng.normal(size=(60, 4)) + 2 * rng.random() * np.eye(4)[labels])
        choice = choose_weight(model, tfidf, labels, names, metric)
        best = choice.validation["stack"][metric]
        worse = (lambda a, b: a > b + 1e-12) if metric == "loss" else (lambda a, b: a < b - 1e-12)
        assert not worse(best, choice.validation["model"][metric]) and not worse(best, choice.validation["tfidf"][metric])
        if not multi_label:  # the parts are the parts themselves, scored as anything else is
            assert choice.validation["model"][metric] == pytest.approx(probability_metrics(model, labels, names)[metric])
            assert choice.validation["stack"][metric] == pytest.approx(
                probability_metrics(mix(model, tfidf, choice.model_weight), labels, names)[metric])


def test_ties_go_to_the_model_and_a_better_tfidf_takes_over():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50)
    model = softmax(rng.normal(size=(50, 3)))
    assert choose_weight(model, model.copy(), labels, ("a", "b", "c"), "accuracy").model_weight == 1.0
    perfect = np.eye(3)[labels] * 0.9 + 0.1 / 3
    choice = choose_weight(model, perfect, labels, ("a", "b", "c"), "accuracy")
    assert choice.model_weight < 1 and choice.validation["stack"]["accuracy"] == 1.0
    # of the weights that reach it, the one nearest the model
    nearer = mix(model, perfect, choice.model_weight + 0.05)
    assert probability_metrics(nearer, labels, ("a", "b", "c"))["accuracy"] < 1.0


def test_auto_builds_the_stack_when_tfidf_wins(stacked_run):
    run_dir = stacked_run.run_dir
    results = json.loads((run_dir / "results.json").read_text())
    record = results["stack"]
    assert record["built"] and stacked_run.stack == record
    assert record["validation"]["tfidf"]["accuracy"] > record["validation"]["model"]["accuracy"]
    assert record["validation"]["stack"]["accuracy"] >= record["validation"]["tfidf"]["accuracy"]
    assert record["model_weight"] < 1 and set(record["test"]) == {"model", "tfidf", "stack"}
    assert results["tfidf_validation"] == record["validation"]["tfidf"]
    meta = json.loads((run_dir / "model" / "bertfit.json").read_text())
    assert meta["stack"]["file"] == "stack/tfidf.npz" and meta["stack"]["model_weight"] == record["model_weight"]
    assert (run_dir / "model" / "stack" / "tfidf.npz").is_file()


def test_the_predictor_gives_the_stacks_probabilities_on_long_texts(stacked_run):
    run_dir = stacked_run.run_dir
    texts = [text for text, _ in keyword_rows(12, seed=3, words=90)]  # several windows each
    predictor = Predictor(run_dir, device="cpu", batch_size=5)
    meta = artifacts.read_model_meta(run_dir)
    tfidf = load_tfidf(run_dir / "model" / "stack" / "tfidf.npz", 3, False)
    expected = mix(softmax(predictor.logits(texts) / meta.stack.temperature), tfidf.proba(texts), meta.stack.model_weight)
    np.testing.assert_allclose(predictor.predict_proba(texts), expected, atol=1e-12)
    assert not np.allclose(predictor.predict_proba(texts), predictor.model_proba(texts), atol=1e-3)
    assert [p.label for p in predictor.predict(texts)] == [meta.labels[i] for i in expected.argmax(1)]
    # the test figures results.json records for the stack are what the Predictor gives on the test file
    rows = keyword_rows(45, seed=2)
    predicted = [p.label for p in predictor.predict([text for text, _ in rows])]
    accuracy = np.mean([a == label for a, (_, label) in zip(predicted, rows)])
    assert stacked_run.stack["test"]["stack"]["accuracy"] == pytest.approx(accuracy)


def test_auto_keeps_the_model_alone_when_it_wins(stacked_run, tmp_path, caplog):
    """The decision itself, on the trained run's data with the model's validation logits made perfect or useless."""
    run_dir = tmp_path / "run"
    shutil.copytree(stacked_run.run_dir, run_dir)
    config = artifacts.read_run_config(run_dir)
    dataset = load_dataset(config.data, config.train.seed)
    truth = np.asarray(dataset.splits["validation"].labels)
    perfect = {"validation": 20 * np.eye(3)[truth]}
    outcome = stack_at_end_of_training(run_dir, config, dataset, perfect)
    assert outcome["stack"]["built"] is False and artifacts.read_model_meta(run_dir).stack is None
    assert not (run_dir / "model" / "stack" / "tfidf.npz").exists()  # the earlier stack is gone
    useless = {"validation": np.zeros((len(truth), 3))}
    with caplog.at_level(logging.WARNING):
        assert stack_at_end_of_training(run_dir, config, dataset, useless)["stack"]["built"] is True
    assert "beats the fine-tuned model" in caplog.text and "built a stacked ensemble" in caplog.text
    few = dataclasses.replace(dataset, splits={**dataset.splits, "validation": dataset.splits["validation"].head(30)})
    caplog.clear()
    with caplog.at_level(logging.INFO):  # TF-IDF still wins, but 30 rows are too few for auto to choose a weight on
        assert stack_at_end_of_training(run_dir, config, few, {"validation": np.zeros((30, 3))})["stack"]["built"] is False
    assert "too few to choose" in caplog.text and artifacts.read_model_meta(run_dir).stack is None
    never = replace(config, train={"stack": "never"})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert stack_at_end_of_training(run_dir, never, dataset, useless)["stack"]["built"] is False
    assert f"bertfit stack {run_dir}" in caplog.text and artifacts.read_model_meta(run_dir).stack is None


def test_bertfit_stack_adds_it_to_a_finished_run(tiny_model_dir, tmp_path, capsys):
    result = train(load_config(None, keyword_flags(tiny_model_dir, tmp_path, "never", "never")))
    assert result.stack["built"] is False and artifacts.read_model_meta(result.run_dir).stack is None
    texts = [text for text, _ in keyword_rows(6, seed=4)]
    alone = Predictor(result.run_dir, device="cpu").predict_proba(texts)
    assert main(["stack", str(result.run_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stack: ") and "validation: model accuracy" in out and "test: " in out
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["stack"]["built"] and results["best_step"] == result.best_step  # the rest is kept
    stacked = Predictor(result.run_dir, device="cpu")
    assert stacked.stack is not None and not np.allclose(stacked.predict_proba(texts), alone)
    np.testing.assert_allclose(stacked.model_proba(texts), alone, atol=1e-6)
    assert main(["stack", str(tmp_path / "missing")]) == 2


def test_evaluate_reports_the_stack_and_its_parts(stacked_run, capsys):
    from bertfit.evaluate.model_card import render_model_card
    from bertfit.evaluate.run import evaluate_run

    evaluation = evaluate_run(stacked_run.run_dir, device="cpu", baselines=False, figures=False)
    scores = evaluation["stack"]["scores"]
    assert_same_scores(scores, stacked_run.stack["test"])  # the same test rows as training's own figures
    assert evaluation["accuracy"] == pytest.approx(scores["model"]["accuracy"])  # the headline is the model's
    card = render_model_card(stacked_run.run_dir).read_text()
    assert "stacked ensemble" in card and "x TF-IDF (served)" in card
    from bertfit.evaluate.report import render_report

    assert "x TF-IDF (served)" in render_report(stacked_run.run_dir, explain_errors=0).read_text()
    assert main(["evaluate", str(stacked_run.run_dir), "--no-baselines", "--no-figures", "--device", "cpu"]) == 0
    assert "what predict and serve use" in capsys.readouterr().out


def test_multi_label_stack_mixes_each_label_and_retunes_thresholds(tiny_model_dir, tmp_path):
    rows = keyword_rows(150, seed=5)
    rows = [(text, label + ("|long" if i % 2 else "")) for i, (text, label) in enumerate(rows)]
    flags = keyword_flags(tiny_model_dir, tmp_path, "ml", "always")
    write_csv(tmp_path / "train.csv", rows[:120])  # in place of the single-label files keyword_flags wrote
    write_csv(tmp_path / "test.csv", rows[120:])
    result = train(load_config(None, flags + ["--data.multi_label", "true", "--train.metric", "f1_micro"]))
    meta = artifacts.read_model_meta(result.run_dir)
    assert meta.stack is not None and set(meta.stack.thresholds) == set(meta.labels) == {"long", "money", "space", "sport"}
    validation = result.stack["validation"]
    assert validation["stack"]["f1_micro"] >= max(validation["model"]["f1_micro"], validation["tfidf"]["f1_micro"])
    predictor = Predictor(result.run_dir, device="cpu")
    texts = [text for text, _ in rows[120:]]
    probabilities = predictor.predict_proba(texts)
    tfidf = load_tfidf(result.run_dir / "model" / "stack" / "tfidf.npz", 4, True)
    w = meta.stack.model_weight
    np.testing.assert_allclose(probabilities, w * predictor.model_proba(texts) + (1 - w) * tfidf.proba(texts), atol=1e-12)
    cuts = [meta.stack.thresholds[n] for n in meta.labels]
    for prediction, row in zip(predictor.predict(texts), probabilities):
        assert set(prediction.labels) == {n for n, p, c in zip(meta.labels, row, cuts) if p >= c}
    from bertfit.evaluate.run import evaluate_run

    assert_same_scores(evaluate_run(result.run_dir, device="cpu")["stack"]["scores"], result.stack["test"])


def test_always_is_refused_where_no_stack_can_be_fitted(tmp_path):
    with pytest.raises(ConfigError, match="train.stack: always fits TF-IDF on the whole training split"):
        load_config(None, ["--data.streaming", "true", "--data.train", "x.csv", "--data.validation", "v.csv",
                           "--data.label_names", "a,b", "--train.stack", "always"])
    with pytest.raises(ConfigError, match="train.stack: always is not done at the end of distillation"):
        load_config(None, ["--distill.teacher", "runs/t", "--train.stack", "always"])
    with pytest.raises(ConfigError, match="train.stack"):
        load_config(None, ["--train.stack", "sometimes"])


def test_a_damaged_stack_is_one_line_naming_the_file(stacked_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(stacked_run.run_dir, run_dir)
    npz = run_dir / "model" / "stack" / "tfidf.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    assert main(["predict", str(run_dir), "goal", "--backend", "torch"]) == 2
    err = capsys.readouterr().err
    assert str(npz) in err and "damaged" in err and err.count("\n") == 1
    meta_file = run_dir / "model" / "bertfit.json"
    meta = json.loads(meta_file.read_text())
    meta["stack"]["file"] = "../../outside.npz"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(BertfitError, match=r"bertfit.json: stack.file '../../outside.npz' must be a path inside"):
        Predictor(run_dir, backend="torch")
    meta["stack"] = {"file": "stack/tfidf.npz", "model_weight": 1.5}
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(BertfitError, match=r"bertfit.json: stack.model_weight must be in \[0, 1\]"):
        Predictor(run_dir, backend="torch")
