"""End to end on one tiny trained run: evaluate writes its files, report/compare/explain render them."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import f1_score

from bertfit.artifacts import read_metrics
from bertfit.cli.main import main
from bertfit.infer.predictor import Predictor
from conftest import write_csv


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory, ag_news_rows):
    folder = tmp_path_factory.mktemp("report")
    write_csv(folder / "train.csv", ag_news_rows[:200])
    write_csv(folder / "validation.csv", ag_news_rows[200:300])  # 100 rows: enough to fit a temperature on
    write_csv(folder / "test.csv", ag_news_rows[300:])
    code = main(["train", "--model.name", str(tiny_model_dir), "--model.max_length", "64", "--output_dir", str(folder / "runs"),
                 "--train.method", "standard", "--train.stack", "never",  # the model's own figures (a stack: test_stack)
                 "--cache_dir", str(folder / "cache"), "--train.progress", "false", "--train.tensorboard", "false",
                 "--train.batch_size", "16", "--train.lr", "1e-3", "--train.epochs", "2", "--train.eval_every_steps", "6",
                 "--data.train", str(folder / "train.csv"), "--data.validation", str(folder / "validation.csv"),
                 "--data.test", str(folder / "test.csv"), "--name", "tiny", "--quiet"])
    assert code == 0
    run = folder / "runs" / "tiny"
    assert main(["evaluate", str(run)]) == 0
    return run


def test_training_records_train_loss_with_each_evaluation(run_dir):
    history = read_metrics(run_dir)
    assert len(history) >= 3
    assert all(r["train/loss"] > 0 and np.isfinite(r["train/loss"]) for r in history)
    # a running mean over the steps since the previous evaluation, so it moves between evaluations
    assert all(0 <= r["train/accuracy"] <= 1 for r in history)
    assert len({r["train/accuracy"] for r in history}) > 1


def test_evaluate_writes_metrics_figures_and_errors(run_dir):
    folder = run_dir / "eval" / "test"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["rows"] == 100
    for key in ("accuracy", "f1_macro", "precision_weighted", "recall_macro", "loss", "ece"):
        assert 0 <= metrics[key] <= (10 if key == "loss" else 1)
    assert set(metrics["per_class"]) == {"World", "Sports", "Business", "Sci/Tech"}
    assert np.sum(metrics["confusion_matrix"]) == 100
    with open(folder / "errors.csv", newline="", encoding="utf-8") as file:
        errors = list(csv.DictReader(file))
    assert len(errors) == round(100 * (1 - metrics["accuracy"]))
    confidences = [float(e["confidence"]) for e in errors]
    assert confidences == sorted(confidences, reverse=True)
    assert all(e["true"] != e["predicted"] for e in errors)
    # the run's own Predictor on the same file, scored by scikit-learn, gives the same numbers
    with open(run_dir.parent.parent / "test.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    predicted = [p.label for p in Predictor(run_dir, device="cpu").predict([r["text"] for r in rows])]
    truth = [r["label"] for r in rows]
    assert metrics["accuracy"] == pytest.approx(np.mean([a == b for a, b in zip(truth, predicted)]))
    assert metrics["f1_macro"] == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0))
    assert {int(e["row"]) for e in errors} == {i + 1 for i, (a, b) in enumerate(zip(truth, predicted)) if a != b}
    import matplotlib.image

    for name in ("confusion.png", "curves.png", "reliability.png"):
        image = matplotlib.image.imread(folder / name)
        assert image.shape[0] > 300 and image.shape[1] > 500 and image.std() > 0.01  # a real picture, not blank


def test_calibration_is_stored_and_used_by_predictor(run_dir):
    metrics = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert calibration["validation_loss_after"] <= calibration["validation_loss_before"] + 1e-9
    meta = json.loads((run_dir / "model" / "bertfit.json").read_text())
    assert meta["temperature"] == pytest.approx(calibration["temperature"]) != 1.0
    predictor = Predictor(run_dir, device="cpu")
    texts = ["Stocks rallied on Friday", "The striker scored twice"]
    logits = predictor.logits(texts)
    expected = np.exp(logits / meta["temperature"]) / np.exp(logits / meta["temperature"]).sum(-1, keepdims=True)
    assert predictor.predict_proba(texts) == pytest.approx(expected, rel=1e-5)


def test_baselines_are_scored_on_the_same_rows(run_dir):
    baselines = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())["baselines"]
    assert set(baselines) == {"majority class", "tf-idf + logistic regression", "untrained model (random head)"}
    with open(run_dir.parent.parent / "test.csv", newline="", encoding="utf-8") as file:
        labels = [row["label"] for row in csv.DictReader(file)]
    with open(run_dir.parent.parent / "train.csv", newline="", encoding="utf-8") as file:
        train_labels = [row["label"] for row in csv.DictReader(file)]
    # majority class: the validation split is held out of train, so compare with a tolerance of its size
    top = max(set(train_labels), key=train_labels.count)
    assert baselines["majority class"]["accuracy"] == pytest.approx(labels.count(top) / len(labels), abs=0.05)
    assert baselines["tf-idf + logistic regression"]["accuracy"] > baselines["majority class"]["accuracy"]


def test_report_html_is_self_contained_and_model_card_written(run_dir):
    assert main(["report", str(run_dir), "--explain-errors", "2"]) == 0
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "src=\"http" not in page and "<link" not in page
    assert "Fine-tuned vs baselines" in page and "tf-idf + logistic regression" in page
    assert page.count('class="attribution"') == 2
    card = (run_dir / "model" / "README.md").read_text()
    for heading in ("## Intended use", "## Data", "## Hyper-parameters", "## Metrics (", "split test", "## Limits"):
        assert heading in card
    assert "lr 0.001" in card
    assert "only their start is read" in card  # the run cut long texts at the end (keep_head 1)
    metrics = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
    beaten_by = [n for n, b in metrics["baselines"].items() if b["accuracy"] >= metrics["accuracy"]]
    assert card.count("baseline does at least as well") == len(beaten_by)
    assert all(f"The {name} baseline" in card for name in beaten_by)


def test_compare_highlights_differing_hyperparameters(run_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    config = (other / "config.yaml").read_text().replace("lr: 0.001", "lr: 0.0002")
    (other / "config.yaml").write_text(config)
    out = tmp_path / "compare.html"
    assert main(["compare", str(run_dir), str(other), "--out", str(out)]) == 0
    page = out.read_text()
    assert "1 differ" in page and '<tr class="diff"><td class=t>train.lr' in page
    assert page.count("data:image/png;base64,") == 1


def test_explain_attributions_add_up_to_the_logit_difference(run_dir, tmp_path, capsys):
    from bertfit.artifacts import load_model
    from bertfit.evaluate.explain import integrated_gradients

    attribution = integrated_gradients(load_model(run_dir), "Oil prices fell as markets slid", steps=64)
    assert len(attribution.tokens) == len(attribution.scores) > 5
    assert attribution.completeness_gap < 0.05 * max(1e-3, abs(sum(attribution.scores))) + 1e-3
    out = tmp_path / "explain.html"
    assert main(["explain", str(run_dir), "Oil prices fell as markets slid", "--out", str(out), "--device", "cpu"]) == 0
    assert "rgba(" in out.read_text() and "written" in capsys.readouterr().out


def test_bad_input_exits_2(run_dir, tmp_path, capsys):
    assert main(["explain", str(run_dir), "text", "--label", "Weather"]) == 2
    assert "'Weather' is not a label" in capsys.readouterr().err
    assert main(["compare", str(run_dir)]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert "run `bertfit evaluate" in capsys.readouterr().err


def test_model_card_lines_load_the_model_in_transformers(run_dir, monkeypatch):
    """The card's Python lines, run as written from the runs folder, classify with bertfit's probabilities."""
    from bertfit.evaluate.model_card import render_model_card
    from bertfit.infer.predictor import Predictor

    code = render_model_card(run_dir).read_text().split("```python\n")[1].split("```")[0]
    assert "trust_remote_code=True" in code and code.count("\n") == 3
    monkeypatch.chdir(run_dir.parent)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (the card's own three lines)
    scores = {s["label"]: s["score"] for s in namespace["classifier"]("your text", top_k=None)}
    expected = Predictor(run_dir, device="cpu", backend="pytorch").predict(["your text"])[0].probabilities
    assert scores == pytest.approx(expected, abs=1e-5)


def test_model_card_says_whether_validation_rows_existed_from_the_run_not_the_config(run_dir, tmp_path):
    """data.validation_fraction 0 leaves a preset's own validation split in place: the rows the run counted decide."""
    import yaml

    from bertfit.evaluate.model_card import render_model_card

    copy = shutil.copytree(run_dir, tmp_path / "tiny")
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"]["validation_fraction"] = 0.0
    config["data"]["validation"] = None  # as a preset's run: its own validation split, none named
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    results = json.loads((copy / "results.json").read_text())
    counted = results["rows"]["validation"]
    card = render_model_card(copy).read_text()
    assert f"- validation: `the preset's validation split` ({counted} rows)" in card
    assert "fitted on validation data" in card and "none held out" not in card
    del results["rows"]["validation"]  # as a run that held out none records it
    (copy / "results.json").write_text(json.dumps(results))
    card = render_model_card(copy).read_text()
    assert "none held out (data.validation_fraction 0)" in card and "not fitted: no validation rows" in card
    assert "the last weights (step" in card


def test_model_card_says_which_weights_the_run_kept(run_dir, tmp_path):
    import yaml

    from bertfit.evaluate.model_card import render_model_card

    copy = shutil.copytree(run_dir, tmp_path / "tiny")
    for keep, said in (("last", "- the last weights (step"), ("best", "- best checkpoint by validation f1_macro (step")):
        config = yaml.safe_load((copy / "config.yaml").read_text())
        config["train"]["keep"] = keep
        (copy / "config.yaml").write_text(yaml.safe_dump(config))
        assert said in render_model_card(copy).read_text()
