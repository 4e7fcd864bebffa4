"""`bertfit export RUN --hf DIR`: a stock sentence-transformers folder (no remote code) giving bertfit's probabilities."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from bertfit.cli.main import main

SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def calibrated_model(tiny_exported_run, tmp_path_factory):
    """The tiny run's model folder with a calibration temperature that is not 1, as `bertfit evaluate` fits."""
    from bertfit import artifacts

    folder = tmp_path_factory.mktemp("calibrated") / "model"
    shutil.copytree(tiny_exported_run / "model", folder)
    artifacts.update_model_meta(folder, temperature=1.7)
    return folder


def test_hf_folder_loads_without_remote_code_and_gives_bertfit_probabilities(calibrated_model, ag_news_rows, tmp_path,
                                                                             capsys, caplog):
    from bertfit.infer.predictor import Predictor

    out = tmp_path / "hf"
    assert main(["export", str(calibrated_model), "--hf", str(out)]) == 0
    assert "sentence-transformers folder written" in capsys.readouterr().out
    assert not list(out.glob("*.py")), "the folder carries no code"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and "auto_map" not in config
    texts = ["hi", *(text for text, _ in ag_news_rows[:12]), " ".join(["word"] * 300)]  # the last one is truncated
    stock = SentenceTransformer(str(out), device="cpu", trust_remote_code=False)
    assert "MISSING" not in caplog.text, "every weight the stock class expects is in the folder"
    probabilities = softmax(stock.encode(texts, batch_size=5, convert_to_numpy=True).astype(np.float64))
    expected = Predictor(calibrated_model, backend="torch").predict_proba(texts)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    labels = json.loads((out / "labels.json").read_text())
    assert labels["labels"] == list(Predictor(calibrated_model, backend="torch").labels.names)
    assert config["id2label"] == {str(i): name for i, name in enumerate(labels["labels"])}


def test_export_again_replaces_its_own_folder_and_refuses_others(calibrated_model, tmp_path):
    out = tmp_path / "hf"
    assert main(["export", str(calibrated_model), "--hf", str(out)]) == 0
    assert main(["export", str(calibrated_model), "--hf", str(out)]) == 0  # bertfit's own folder: replaced
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["export", str(calibrated_model), "--hf", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_what_a_stock_folder_cannot_carry_is_said():
    from bertfit.deploy.hf_export import folder_readme, lost_in_export
    from bertfit.meta import ModelMeta, StackMeta

    plain = ModelMeta(("a", "b"), None, 128)
    assert lost_in_export(plain) == []
    windows = dataclasses.replace(plain, window_stride=64)
    head_tail = dataclasses.replace(plain, keep_head=0.25)
    stacked = dataclasses.replace(plain, stack=StackMeta.__new__(StackMeta))
    assert "sliding windows" in lost_in_export(windows)[0]
    assert "head+tail" in lost_in_export(head_tail)[0] and "25% head" in lost_in_export(head_tail)[0]
    assert "TF-IDF stack" in lost_in_export(stacked)[0]
    assert "sliding windows" in folder_readme(windows, lost_in_export(windows))
