"""What serves is what passed: predict and serve use an exported variant only if its measured accuracy change
against PyTorch is within the export's bound (the rule --target auto chooses by), and say why otherwise."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

pytest.importorskip("onnxruntime")

# A measured loss beyond the 0.5-point bound, as `bertfit export --onnx --int8` recorded it for a real run.
LOSSY = {"accuracy": 0.9, "accuracy_change_points": -1.25, "accuracy_change_interval_points": [-3.07, 0.57],
         "disagreement": 0.02, "disagreement_interval": [0.01, 0.03], "same_label_fraction": 0.98,
         "max_probability_difference": 0.3}


def lossy_copy(tiny_exported_run, folder, variants=("onnx-int8",)):
    """A copy of the exported tiny run whose check records `variants` as losing 1.25 points."""
    run = shutil.copytree(tiny_exported_run, folder)
    path = run / "export" / "export.json"
    record = json.loads(path.read_text())
    record["check"].update({variant: LOSSY for variant in variants})
    path.write_text(json.dumps(record))
    return run


def test_a_lossy_int8_is_not_served_and_the_log_says_why(tiny_exported_run, tmp_path, caplog):
    from bertfit.infer.predictor import Predictor

    run = lossy_copy(tiny_exported_run, tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="bertfit"):
        predictor = Predictor(run)
    assert predictor.backend_name == "onnx-fp32"  # fp32 lost nothing: it serves
    assert "onnx-int8 measured -1.25 accuracy points (95% [-3.07, +0.57])" in predictor.backend_note
    assert "-1.25" in caplog.text and "onnx-fp32" in caplog.text


def test_when_no_variant_passed_predict_keeps_the_pytorch_model(tiny_exported_run, tmp_path, caplog):
    from bertfit.infer.predictor import Predictor

    run = lossy_copy(tiny_exported_run, tmp_path / "run", ("onnx-int8", "onnx-fp32"))
    texts = ["Stocks rallied on Friday", "The team won the cup"]
    with caplog.at_level(logging.WARNING, logger="bertfit"):
        predictor = Predictor(run)
    assert predictor.backend_name == "pytorch" and predictor.export is None
    assert "exact PyTorch model" in caplog.text and "onnx-fp32 measured -1.25" in caplog.text
    exact = Predictor(run, backend="pytorch").predict_proba(texts)
    assert (predictor.predict_proba(texts) == exact).all()


def test_a_named_variant_still_serves_with_a_warning_of_its_loss(tiny_exported_run, tmp_path, caplog):
    from bertfit.infer.predictor import Predictor

    run = lossy_copy(tiny_exported_run, tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="bertfit"):
        predictor = Predictor(run, backend="onnx-int8")
    assert predictor.backend_name == "onnx-int8"
    assert "-1.25 accuracy points" in caplog.text and "asked for" in caplog.text


def test_backend_names_say_what_runs_and_old_names_map_plainly(tiny_exported_run):
    from bertfit.errors import BertfitError
    from bertfit.infer.predictor import Predictor

    assert Predictor(tiny_exported_run, backend="onnx").backend_name == "onnx-fp32"  # never an implied int8
    assert Predictor(tiny_exported_run, backend="torch").backend_name == "pytorch"
    with pytest.raises(BertfitError, match="onnx-int8"):
        Predictor(tiny_exported_run, backend="int8")


def test_cli_predict_and_export_print_what_serves(tiny_exported_run, tmp_path, capsys, caplog):
    from bertfit.cli.main import main
    from bertfit.meta import ExportMeta

    run = lossy_copy(tiny_exported_run, tmp_path / "run")
    assert main(["predict", str(run), "Stocks rallied", "--out", str(tmp_path / "p.csv")]) == 0
    assert "backend onnx-fp32" in capsys.readouterr().out and "onnx-int8 measured -1.25" in caplog.text
    record = json.loads((run / "export" / "export.json").read_text())
    served, passed_over = ExportMeta.from_dict(record, "export.json").served_variant()
    assert served == "onnx-fp32" and len(passed_over) == 1


def test_auto_choice_and_predict_apply_one_rule():
    from bertfit.deploy.choose import pick
    from bertfit.meta import accuracy_loss_problem

    check = {"rows": 400, "onnx-fp32": {"accuracy": 0.9, "accuracy_change_points": 0.0}, "onnx-int8": LOSSY}
    timings = {"torch": {"vs_torch": 1.0}, "onnx-fp32": {"vs_torch": 1.5}, "onnx-int8": {"vs_torch": 3.0}}
    choice, eligible = pick(timings, check, 0.5)
    assert (choice, eligible) == ("onnx-fp32", ["torch", "onnx-fp32"])
    assert accuracy_loss_problem(check, "onnx-int8", 0.5) is not None and accuracy_loss_problem(check, "onnx-int8", 2.0) is None


def test_the_service_answers_with_the_backend_predict_chose(tiny_exported_run, tmp_path):
    from fastapi.testclient import TestClient

    from bertfit.deploy.serve import ServeSettings, create_app
    from bertfit.infer.predictor import Predictor

    run = lossy_copy(tiny_exported_run, tmp_path / "run")
    predictor = Predictor(run)
    with TestClient(create_app(predictor, ServeSettings(), run)) as client:
        answer = client.post("/predict", json={"text": "Stocks rallied"}).json()
        metadata = client.get("/metadata").json()
    assert answer["backend"] == metadata["model"]["backend"] == "onnx-fp32"
    assert "-1.25" in metadata["model"]["backend_note"]
