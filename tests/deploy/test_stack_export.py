"""A run with a stacked ensemble exports and serves like any run: the export carries the TF-IDF part, ONNX
and PyTorch give the same stacked probabilities, the service answers with them, and an export made before
the stack is never served in its place."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bertfit import artifacts
from bertfit.infer.predictor import Predictor
from conftest import LiveServer, keyword_flags, keyword_rows

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")
httpx = pytest.importorskip("httpx")

TEXTS = ["goal", *[text for text, _ in keyword_rows(9, seed=7, words=70)]]  # short and several windows long


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    from bertfit.config import load_config
    from bertfit.deploy.export import export_run
    from bertfit.training.recipe import train

    root = tmp_path_factory.mktemp("stack-export")
    result = train(load_config(None, keyword_flags(tiny_model_dir, root, "stacked", "auto")))
    assert result.stack["built"]
    export_run(result.run_dir, int8=False, max_rows=30)
    return result.run_dir


def test_the_export_carries_the_stack(run_dir):
    export = run_dir / "export"
    meta = artifacts.read_export_meta(export)
    assert meta.model.stack == artifacts.read_model_meta(run_dir).stack is not None
    assert (export / "stack" / "tfidf.npz").read_bytes() == (run_dir / "model" / "stack" / "tfidf.npz").read_bytes()
    assert meta.check["onnx-fp32"]["max_probability_difference"] < 1e-4  # the network against itself
    assert "stacked ensemble" in (export / "README.md").read_text()


def test_onnx_and_torch_give_the_same_stacked_probabilities(run_dir, tmp_path):
    torch_path = Predictor(run_dir, backend="torch", device="cpu", batch_size=4)
    auto = Predictor(run_dir, batch_size=3)  # on this CPU: the export
    assert auto.backend_name == "onnx-fp32" and auto.stack is not None
    expected = torch_path.predict_proba(TEXTS)
    np.testing.assert_allclose(auto.predict_proba(TEXTS), expected, atol=1e-5)
    assert not np.allclose(expected, torch_path.model_proba(TEXTS), atol=1e-3)  # the stack, not the model alone
    shutil.copytree(run_dir / "export", tmp_path / "deploy")  # the export folder serves on its own
    np.testing.assert_allclose(Predictor(tmp_path / "deploy", backend="onnx-fp32").predict_proba(TEXTS), expected, atol=1e-5)


def test_the_service_answers_with_the_stack(run_dir):
    from bertfit.deploy.serve import ServeSettings, create_app

    predictor = Predictor(run_dir, batch_size=8)
    with LiveServer(create_app(predictor, ServeSettings(max_wait_ms=20), run_dir)) as server:
        answer = httpx.post(f"{server.url}/predict", json={"texts": TEXTS}).json()
        metadata = httpx.get(f"{server.url}/metadata").json()
    expected = Predictor(run_dir, backend="torch", device="cpu").predict_proba(TEXTS)
    names = predictor.labels.names
    for row, prediction in zip(expected, answer["predictions"]):
        assert [prediction["probabilities"][n] for n in names] == pytest.approx(row.tolist(), abs=1e-5)
        assert prediction["label"] == names[int(row.argmax())]
    assert metadata["model"]["stack"]["model_weight"] == predictor.stack.meta.model_weight < 1


def test_an_export_without_the_current_stack_is_not_served(run_dir, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    export_json = run / "export" / "export.json"
    record = json.loads(export_json.read_text())
    del record["stack"]  # as exported before `bertfit stack` added it
    export_json.write_text(json.dumps(record))
    predictor = Predictor(run)
    assert predictor.backend_name == "pytorch" and predictor.stack is not None
    assert "stacked ensemble" in caplog.text and "bertfit export" in caplog.text


CHECK = """
import sys
from bertfit.cli.main import main
code = main(["predict", sys.argv[1], "the striker scored a goal"])
heavy = sorted(name for name in ("torch", "transformers", "sklearn", "scipy") if name in sys.modules)
print("HEAVY", ",".join(heavy))
sys.exit(code)
"""


def test_predicting_on_a_stacked_export_imports_nothing_heavy(run_dir):
    done = subprocess.run([sys.executable, "-c", CHECK, str(run_dir)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY \n" in done.stdout, done.stdout
