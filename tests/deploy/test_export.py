"""ONNX export round trip on a tiny trained run: same predictions as PyTorch, self-check written, CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_run(tiny_exported_run):
    return tiny_exported_run


def test_export_writes_files_and_self_check(tiny_run):
    meta = json.loads((tiny_run / "export" / "export.json").read_text())
    assert (tiny_run / "export" / "model.onnx").is_file() and (tiny_run / "export" / "model.int8.onnx").is_file()
    assert sorted(meta["labels"]) == ["Business", "Sci/Tech", "Sports", "World"]
    check = meta["check"]
    assert check["rows"] == 60 and re.fullmatch(r"validation \(\d+\) \+ test \(\d+\)", check["split"])  # capped by max_rows
    assert check["onnx-fp32"]["max_probability_difference"] < 1e-4
    assert check["onnx-fp32"]["accuracy"] == pytest.approx(check["torch_accuracy"])
    assert 0 <= check["onnx-int8"]["max_probability_difference"] < 0.2
    low, high = check["onnx-int8"]["disagreement_interval"]
    assert low <= check["onnx-int8"]["disagreement"] <= high and high > 0  # an interval, even at 0 disagreement
    assert meta["choice"] is None  # --target onnx chooses nothing: auto serves int8 if it passed the check
    assert meta["check"]["max_accuracy_loss"] == 0.5  # the bound predict and serve apply travels with the check
    assert meta["model_step"] is not None


def test_onnx_predictor_matches_torch_on_any_batch_and_length(tiny_run, ag_news_rows):
    from bertfit.infer.predictor import Predictor

    # Mixed lengths (a 1-word text, long ones) and a batch size that leaves a ragged last batch:
    # exercises dynamic axes and the restore-order step.
    texts = ["hi"] + [text for text, _ in ag_news_rows[:20]] + [" ".join(["word"] * 300)]
    torch_probs = Predictor(tiny_run, backend="torch", batch_size=7).predict_proba(texts)
    fp32 = Predictor(tiny_run, backend="onnx-fp32", batch_size=7)
    assert fp32.backend_name == "onnx-fp32"
    np.testing.assert_allclose(fp32.predict_proba(texts), torch_probs, atol=1e-4)
    int8 = Predictor(tiny_run, backend="onnx-int8", batch_size=5)
    assert int8.backend_name == "onnx-int8"
    assert np.abs(int8.predict_proba(texts) - torch_probs).max() < 0.2
    assert [p.text for p in int8.predict(texts)] == texts


def test_export_folder_predicts_on_its_own(tiny_run, tmp_path):
    import shutil

    from bertfit.infer.predictor import Predictor

    shutil.copytree(tiny_run / "export", tmp_path / "deploy")
    predictor = Predictor(tmp_path / "deploy", backend="onnx-fp32")
    assert predictor.predict(["Stocks rallied"])[0].label in predictor.labels.names


def test_stale_export_falls_back_to_torch(tiny_run, tmp_path):
    import shutil

    from bertfit.infer.predictor import Predictor

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta_path = run / "export" / "export.json"
    meta = json.loads(meta_path.read_text())
    meta["model_step"] = -1
    meta_path.write_text(json.dumps(meta))
    assert Predictor(run).backend_name == "pytorch"


def test_onnx_uses_the_temperature_calibrated_after_export(tiny_run, tmp_path):
    import shutil

    from bertfit.artifacts import update_model_meta
    from bertfit.infer.predictor import Predictor

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    update_model_meta(run, temperature=3.0)  # what `bertfit evaluate` does after fitting a temperature
    texts = ["Stocks rallied on Friday", "The match ended in a draw"]
    onnx = Predictor(run, backend="onnx-fp32")
    assert onnx.temperature == 3.0
    np.testing.assert_allclose(onnx.predict_proba(texts), Predictor(run, backend="torch").predict_proba(texts), atol=1e-4)


def test_cli_export_and_predict_backends(tiny_run, tmp_path, capsys):
    import shutil

    from bertfit.cli.main import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    assert main(["predict", str(run), "Stocks rallied", "--backend", "onnx"]) == 2
    assert "bertfit export" in capsys.readouterr().err
    assert main(["export", str(run), "--onnx", "--max-rows", "20"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["predict", str(run), "Stocks rallied", "--backend", "onnx"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("World", "Sports", "Business", "Sci/Tech")
    assert main(["export", str(tmp_path / "missing"), "--onnx"]) == 2


def test_cli_backend_choices_match_the_predictor():
    from bertfit.cli import deploy
    from bertfit.infer import BACKENDS

    assert deploy.BACKENDS is BACKENDS  # one definition, importable without torch


def test_export_traces_the_additive_mask_and_restores_attention(tiny_run):
    """The exported graph has no SDPA mask kernels (IsNaN/Where), and the live model keeps its attention."""
    import onnx

    from bertfit.artifacts import load_model

    ops = {node.op_type for node in onnx.load(str(tiny_run / "export" / "model.onnx")).graph.node}
    assert "IsNaN" not in ops and "Softmax" in ops
    loaded = load_model(tiny_run)
    before = loaded.model.encoder.config._attn_implementation
    from bertfit.deploy.export import export_onnx
    export_onnx(loaded.model, tiny_run / "scratch.onnx")
    assert loaded.model.encoder.config._attn_implementation == before
    (tiny_run / "scratch.onnx").unlink()
