"""The static student: it trains on its teacher, saves and reloads, predicts without torch, gives the same probabilities
through the Predictor, the service and bulk prediction, states what it loses, and serves beside its teacher only
within the export's accuracy bound."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from bertfit import artifacts
from bertfit.cli.main import main
from bertfit.config import load_config
from bertfit.data.tables import join_text_columns
from bertfit.errors import BertfitError
from bertfit.infer.predictor import Predictor
from bertfit.infer.static import load_static
from bertfit.training.recipe import train
from bertfit.training.static import StaticNet, distill_static
from conftest import headline_rows, tiny_flags, write_csv

pytest.importorskip("model2vec")
TEXTS = ["Stocks rallied on Wall Street as oil fell", "The striker scored twice in the cup final",
         "A new chip doubles the battery life of phones", "Rebels and the army agreed to a ceasefire"]
HEADER = ("headline", "body", "topic")  # not the default text / label columns


@pytest.fixture(scope="module")
def teacher(tiny_model_dir, tmp_path_factory):
    """A tiny teacher trained on AG News headlines and bodies in columns headline, body and topic."""
    root = tmp_path_factory.mktemp("static")
    write_csv(root / "train.csv", headline_rows(0, 300), HEADER)
    write_csv(root / "test.csv", headline_rows(300, 400), HEADER)
    config = load_config(None, [*tiny_flags(tiny_model_dir, root), "--name", "teacher", "--data.train",
                                str(root / "train.csv"), "--data.test", str(root / "test.csv"),
                                "--data.text_columns", "[headline, body]", "--data.label_column", "topic"])
    return train(config).run_dir


def _distill(teacher, name: str, *flags: str):
    return distill_static(teacher, ["--name", name, "--train.progress", "false", *flags])


@pytest.fixture(scope="module")
def student(teacher):
    return _distill(teacher, "student", "--distill.static_epochs", "6")


def test_the_student_trains_saves_and_reloads_to_the_same_numbers(student):
    history = artifacts.read_metrics(student.run_dir)
    assert [r["epoch"] for r in history] == list(range(1, 7))
    assert history[-1]["train/loss"] < 0.8 * history[0]["train/loss"]  # it learns the teacher's targets
    results = artifacts.read_results(student.run_dir)
    assert results["test"]["accuracy"] == student.test["accuracy"] and results["rows"]["test"] == 100
    record = results["static"]
    assert record["accuracy_loss_points"] == pytest.approx(
        100 * (record["teacher_validation_accuracy"] - record["validation_accuracy"]), abs=0.01)

    # What training computed in torch is what the NumPy student computes after a reload.
    predictor = Predictor(student.run_dir)
    assert predictor.backend_name == "static" and predictor.meta.static
    folder = artifacts.model_folder(student.run_dir)
    saved = load_static(folder / predictor.meta.static)
    net = StaticNet(saved.vectors, saved.keep > 0, saved.num_labels)
    net.head.weight.data, net.head.bias.data = torch.from_numpy(saved.weight), torch.from_numpy(saved.bias)
    encoded = predictor.tokenizer(TEXTS, truncation=True, max_length=predictor.meta.max_length)["input_ids"]
    width = max(map(len, encoded))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in encoded])
    mask = torch.tensor([[1.0] * len(row) + [0.0] * (width - len(row)) for row in encoded])
    with torch.no_grad():
        expected = torch.softmax(net(ids, mask).double(), -1).numpy()
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), expected, atol=1e-5)
    with pytest.raises(BertfitError, match="static student"):
        artifacts.load_model(student.run_dir)


def test_prediction_imports_neither_torch_nor_transformers(student):
    code = ("import json, sys\nfrom bertfit.infer.predictor import Predictor\n"
            f"p = Predictor({str(student.run_dir)!r})\nprint(json.dumps(p.predict_proba({TEXTS!r}).tolist()))\n"
            "print(json.dumps(['torch' in sys.modules, 'transformers' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert json.loads(out[-1]) == [False, False]
    np.testing.assert_allclose(json.loads(out[-2]), Predictor(student.run_dir).predict_proba(TEXTS), atol=1e-6)


def test_predictor_service_and_bulk_give_the_same_probabilities(student, tmp_path):
    from fastapi.testclient import TestClient

    from bertfit.deploy.serve import ServeSettings, create_app
    from bertfit.infer.bulk import BulkJob, predict_file

    predictor = Predictor(student.run_dir)
    expected = predictor.predict_proba(TEXTS)
    with TestClient(create_app(predictor, ServeSettings(), student.run_dir)) as client:
        body = client.post("/predict", json={"texts": TEXTS}).json()
    assert body["backend"] == "static"
    served = np.array([[p["probabilities"][name] for name in predictor.meta.labels] for p in body["predictions"]])
    np.testing.assert_allclose(served, expected, atol=1e-6)
    source = write_csv(tmp_path / "in.csv", [(text, "today") for text in TEXTS], ("headline", "body"))
    predict_file(predictor, BulkJob(source, tmp_path / "out.parquet", ("headline", "body"), chunk_rows=3))
    table = pq.read_table(tmp_path / "out.parquet").to_pydict()
    bulk = np.array([table[f"prob_{name}"] for name in predictor.meta.labels]).T
    joined = join_text_columns({"headline": TEXTS, "body": ["today"] * len(TEXTS)}, ("headline", "body"))
    np.testing.assert_allclose(bulk, predictor.predict_proba(joined), atol=1e-6)


def test_cli_journey_distil_evaluate_predict(teacher, tmp_path, capsys):
    assert main(["distill", str(teacher), "--student", "static", "--name", "cli-student",
                 "--distill.static_epochs", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    run = teacher.parent / "cli-student"
    assert f"run: {run}" in out and "points against the teacher" in out and "test: accuracy" in out
    assert main(["evaluate", str(run)]) == 0  # the run's own test file, in columns headline, body, topic
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert metrics["rows"] == 100 and metrics["accuracy"] == pytest.approx(
        artifacts.read_results(run)["test"]["accuracy"])
    assert "untrained model (random head)" not in metrics["baselines"]
    source = write_csv(tmp_path / "new.csv", [(text, "more") for text in TEXTS], ("headline", "body"))
    capsys.readouterr()
    assert main(["predict", str(run), "--file", str(source)]) == 0
    printed = [line.split("\t")[0] for line in capsys.readouterr().out.strip().splitlines()]
    joined = join_text_columns({"headline": TEXTS, "body": ["more"] * len(TEXTS)}, ("headline", "body"))
    assert printed == [p.label for p in Predictor(run).predict(joined)]
    assert main(["predict", str(run), "x", "--backend", "pytorch"]) == 2  # no network to run
    assert main(["report", str(run)]) == 0
    card = (run / "model" / "README.md").read_text()
    assert "A static student of" in card and "points lost" in card and "trust_remote_code" not in card


def test_a_loss_beyond_the_bound_is_a_warning_and_never_served(teacher, student, caplog):
    pytest.importorskip("onnxruntime")
    from bertfit.deploy.export import export_run

    weak = _distill(teacher, "weak", "--distill.static_epochs", "1", "--distill.static_lr", "1e-7",
                    "--distill.max_accuracy_loss", "0")
    record = artifacts.read_results(weak.run_dir)["static"]
    if record["accuracy_loss_points"] <= 0:
        pytest.skip("the barely trained student happened not to lose accuracy to the tiny teacher")
    assert weak.warning and f"{record['accuracy_loss_points']:.2f} accuracy points" in weak.warning
    assert any(r.levelname == "WARNING" and "distill.max_accuracy_loss" in r.message for r in caplog.records)

    settings = {"target": "auto", "max_rows": 60, "time_rows": 20, "time_rounds": 1}
    meta = export_run(teacher, student=weak.run_dir, max_accuracy_loss=0.0, **settings)
    change = meta.check["static"]["accuracy_change_points"]
    assert change < 0 and "static" in meta.files and meta.choice != "static" and "static" in meta.selection["timings"]
    assert Predictor(teacher).backend_name != "static"
    assert "beyond the 0 points allowed" in Predictor(teacher, backend="static").backend_note

    meta = export_run(teacher, student=student.run_dir, max_accuracy_loss=100.0, **settings)
    assert meta.choice == "static"  # within the bound, and many times faster than any network
    served = Predictor(teacher)
    assert served.backend_name == "static" and served.backend_note is None
    np.testing.assert_allclose(served.predict_proba(TEXTS), Predictor(student.run_dir).predict_proba(TEXTS), atol=1e-6)
    with pytest.raises(BertfitError, match="not a static student"):
        export_run(teacher, student=teacher)
