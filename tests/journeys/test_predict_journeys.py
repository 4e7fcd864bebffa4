"""Journeys from a trained run to predictions: train on a file with columns of its own names, export to ONNX
(fp32 and int8), predict from a file and serve; and the same from Python with pandas DataFrames."""

from __future__ import annotations

import csv
import logging
import re

import pytest

from conftest import headline_rows, tiny_flags, write_csv

pytest.importorskip("onnxruntime")

HEADER = ("headline", "body", "topic")


def read_predictions(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_train_export_predict_and_serve_one_run(tiny_model_dir, tmp_path, capsys, caplog):
    from fastapi.testclient import TestClient

    from bertfit.artifacts import read_export_meta
    from bertfit.cli.main import main
    from bertfit.deploy.serve import ServeSettings, create_app
    from bertfit.infer.predictor import Predictor

    write_csv(tmp_path / "train.csv", headline_rows(0, 240), header=HEADER)
    write_csv(tmp_path / "test.csv", headline_rows(240, 300), header=HEADER)
    write_csv(tmp_path / "new.csv", headline_rows(300, 330), header=HEADER)
    assert main(["train", *tiny_flags(tiny_model_dir, tmp_path), "--name", "news", "--data.train", str(tmp_path / "train.csv"),
                 "--data.test", str(tmp_path / "test.csv"), "--data.text_columns", "headline,body",
                 "--data.label_column", "topic"]) == 0
    run = tmp_path / "runs" / "news"
    assert main(["export", str(run), "--onnx", "--int8", "--max-rows", "60"]) == 0
    exported = capsys.readouterr().out
    served, passed_over = read_export_meta(run / "export").served_variant()
    assert f"predict and serve use on a CPU: {served.replace('torch', 'pytorch')}" in exported

    caplog.clear()
    assert main(["predict", str(run), "--file", str(tmp_path / "new.csv"), "--out", str(tmp_path / "out.csv")]) == 0
    backend = re.search(r"\(backend ([\w-]+)", capsys.readouterr().out).group(1)
    written = read_predictions(tmp_path / "out.csv")
    texts = [f"{headline.strip()} {body.strip()}" for headline, body, _ in headline_rows(300, 330)]
    assert [row["text"] for row in written] == texts  # the run's two text columns, joined as in training
    exact = [p.label for p in Predictor(run, backend="pytorch").predict(texts)]
    check = read_export_meta(run / "export").check
    if backend == "pytorch":  # no variant passed its check: the log says which and by how much
        assert passed_over and all(reason in caplog.text for reason in passed_over)
    if [row["label"] for row in written] != exact:  # only a variant whose measured loss passed may differ
        assert backend != "pytorch" and check[backend]["disagreement"] > 0
        assert check[backend]["accuracy_change_points"] >= -check["max_accuracy_loss"]
    if backend in ("pytorch", "onnx-fp32"):
        assert [row["label"] for row in written] == exact

    predictor = Predictor(run)
    with TestClient(create_app(predictor, ServeSettings(), run)) as client:
        answer = client.post("/predict", json={"texts": texts[:8]}).json()
        health = client.get("/health").json()
    assert answer["backend"] == health["backend"] == predictor.backend_name == backend
    assert [p["label"] for p in answer["predictions"]] == [row["label"] for row in written[:8]]


def test_python_api_with_dataframes_logs_and_can_be_silenced(tiny_model_dir, tmp_path, capsys, caplog):
    pandas = pytest.importorskip("pandas")
    import bertfit
    from bertfit import Predictor, evaluate_run, load_config, train

    frame = pandas.DataFrame(headline_rows(0, 200), columns=list(HEADER))
    holdout = pandas.DataFrame(headline_rows(300, 340), columns=list(HEADER))
    config = load_config(None, [*tiny_flags(tiny_model_dir, tmp_path), "--name", "frames", "--data.text_columns",
                                "headline,body", "--data.label_column", "topic"])
    assert logging.NullHandler in {type(h) for h in logging.getLogger("bertfit").handlers}
    with caplog.at_level(logging.INFO, logger="bertfit"):
        result = train(config, data={"train": frame, "test": holdout})
    assert capsys.readouterr().out == ""  # the library logs; it never prints
    assert f"run {result.run_dir}" in caplog.text and result.metrics["split"] == "test"
    metrics = evaluate_run(result.run_dir, data=holdout, baselines=False, figures=False)
    assert metrics["accuracy"] == pytest.approx(result.test["accuracy"])  # the same rows as the run's own test split
    predictor = Predictor(result.run_dir, backend="pytorch")
    texts = [f"{h.strip()} {b.strip()}" for h, b, _ in headline_rows(300, 340)]
    assert [p.label for p in predictor.predict(holdout)] == [p.label for p in predictor.predict(texts)]

    caplog.clear()
    logging.getLogger("bertfit").setLevel(logging.CRITICAL)  # what a user does to silence the library
    try:
        with caplog.at_level(logging.INFO):
            Predictor(result.run_dir, backend="pytorch").predict(holdout)
        assert not [record for record in caplog.records if record.name.startswith("bertfit")]
    finally:
        logging.getLogger("bertfit").setLevel(logging.NOTSET)
    assert bertfit.__name__ == "bertfit"


def test_train_leaves_a_checked_onnx_copy_that_predict_starts_from(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    import numpy as np

    from bertfit.artifacts import read_export_meta
    from bertfit.cli.main import main
    from bertfit.infer.predictor import Predictor

    write_csv(tmp_path / "train.csv", headline_rows(0, 160), header=HEADER)
    flags = [*tiny_flags(tiny_model_dir, tmp_path), "--data.train", str(tmp_path / "train.csv"),
             "--data.text_columns", "headline,body", "--data.label_column", "topic", "--train.onnx_copy", "true"]
    assert main(["train", *flags, "--name", "quick"]) == 0
    printed = capsys.readouterr().out
    run = tmp_path / "runs" / "quick"
    meta = read_export_meta(run / "export")
    assert list(meta.files) == ["onnx-fp32"] and meta.check["onnx-fp32"]["max_probability_difference"] < 1e-4
    assert f"ONNX copy: {run / 'export'}" in printed and f"bertfit export {run} --target auto" in printed
    texts = [f"{headline} {body}" for headline, body, _ in headline_rows(300, 310)]
    quick = Predictor(run)
    assert quick.backend_name == "onnx-fp32"
    np.testing.assert_allclose(quick.predict_proba(texts), Predictor(run, backend="pytorch").predict_proba(texts),
                               atol=1e-4)
    assert main(["predict", str(run), texts[0]]) == 0  # the printed next step runs from the copy

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxruntime" else real_find_spec(name, *args))
    assert main(["train", *flags, "--name", "plain"]) == 0
    assert "no ONNX copy (onnxruntime is not installed)" in capsys.readouterr().out
    assert not (tmp_path / "runs" / "plain" / "export").exists()
