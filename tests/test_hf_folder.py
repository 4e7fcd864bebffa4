"""A run's model/ folder is a Hugging Face model folder: transformers loads it (trust_remote_code) and gets
bertfit's probabilities; loading it any stock way fails instead of initialising weights at random."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers.dynamic_module_utils
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForSequenceClassification,
    BertModel,
    pipeline,
)

from bertfit.artifacts import update_model_meta
from bertfit.config import load_config
from bertfit.hf_folder import MODELING_FILE, encoder_settings
from bertfit.infer.predictor import Predictor
from bertfit.infer.tokens import tokenize_like_training
from bertfit.training.recipe import train
from conftest import write_csv

KINDS = {
    "single": [],
    "multi": ["--data.multi_label", "true", "--train.metric", "f1_micro"],
    "windows": ["--model.max_length", "24", "--model.window_stride", "8", "--model.window_pooling", "max",
                "--model.max_windows", "3", "--model.keep_head", "1.0"],
}


@pytest.fixture(autouse=True)
def never_prompt(monkeypatch):
    """transformers asks on a terminal whether to run a folder's code; tests must not wait for an answer."""
    monkeypatch.setattr(transformers.dynamic_module_utils, "TIME_OUT_REMOTE_CODE", 0)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, ag_news_rows, tmp_path_factory):
    """kind -> (run directory, texts to predict), each kind trained once for the module."""
    runs = {}

    def get(kind: str) -> tuple:
        if kind not in runs:
            root = tmp_path_factory.mktemp(kind)
            overrides = ["--model.name", str(tiny_model_dir), "--model.max_length", "64", "--output_dir",
                         str(root / "runs"), "--cache_dir", str(root / "cache"), "--train.progress", "false",
                         "--train.tensorboard", "false", "--train.batch_size", "16", "--train.lr", "1e-3"]
            runs[kind] = _train(kind, overrides, root, ag_news_rows)
        return runs[kind]
    return get


def _train(kind: str, overrides: list[str], tmp_path, rows) -> tuple:
    if kind == "multi":  # a second label on the longer texts: genuinely multi-label
        median = np.median([len(text) for text, _ in rows])
        rows = [(text, label + ("|long" if len(text) > median else "")) for text, label in rows]
    write_csv(tmp_path / "train.csv", rows[:120])
    write_csv(tmp_path / "test.csv", rows[120:160])
    config = load_config(None, overrides + ["--data.train", str(tmp_path / "train.csv"), "--data.test",
                                            str(tmp_path / "test.csv"), "--name", kind, *KINDS[kind]])
    return train(config).run_dir, [text for text, _ in rows[160:172]]


@pytest.mark.parametrize("kind", list(KINDS))
def test_transformers_loads_a_run_and_gives_bertfit_probabilities(kind, trained):
    run_dir, texts = trained(kind)
    if kind == "single":  # a fitted temperature travels into config.json too
        update_model_meta(run_dir, temperature=1.7)
    predictor = Predictor(run_dir, device="cpu", backend="torch")
    if kind == "windows":  # the texts really are read in several windows
        assert np.diff(tokenize_like_training(predictor.meta, predictor.tokenizer, texts).windows).max() > 1
    expected = predictor.predict_proba(texts)

    folder = run_dir / "model"
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    probabilities = torch.sigmoid(logits) if kind == "multi" else torch.softmax(logits, -1)
    np.testing.assert_allclose(probabilities.numpy(), expected, atol=1e-5)

    classify = pipeline("text-classification", model=str(folder), trust_remote_code=True)
    scores = [{s["label"]: s["score"] for s in row} for row in classify(texts, top_k=None)]
    names = predictor.labels.names
    np.testing.assert_allclose([[row[name] for name in names] for row in scores], expected, atol=1e-5)


def test_stock_loading_fails_instead_of_initialising_at_random(trained):
    run_dir, _ = trained("single")
    folder = str(run_dir / "model")
    for load in (lambda: AutoModelForSequenceClassification.from_pretrained(folder),
                 lambda: AutoModel.from_pretrained(folder),
                 lambda: pipeline("text-classification", model=folder),
                 lambda: BertModel.from_pretrained(folder),  # a class named explicitly cannot build from it either
                 lambda: BertForSequenceClassification.from_pretrained(folder)):
        with pytest.raises(ValueError):  # config.json's top-level sizes: no head count divides its hidden size
            load()


def test_model_folders_of_earlier_versions_still_load(trained, tmp_path):
    """Before the Hugging Face layout, config.json was the encoder's own config (same weights, same bertfit.json)."""
    import shutil

    source, texts = trained("single")
    run_dir = shutil.copytree(source, tmp_path / "old")
    expected = Predictor(run_dir, device="cpu").predict_proba(texts)
    folder = run_dir / "model"
    labels = json.loads((folder / "bertfit.json").read_text())["labels"]
    (folder / "config.json").write_text(json.dumps({**encoder_settings(folder), "architectures": ["BertModel"],
                                                    "id2label": dict(enumerate(labels))}))
    (folder / MODELING_FILE).unlink()
    np.testing.assert_allclose(Predictor(run_dir, device="cpu").predict_proba(texts), expected, atol=1e-6)
    before = (folder / "config.json").read_text()
    update_model_meta(run_dir, temperature=2.0)  # an old folder's config.json is left as it is
    assert (folder / "config.json").read_text() == before


@pytest.fixture
def prompts(monkeypatch):
    """Every time transformers would ask on a terminal whether to run a folder's code (remote code, no local
    class, trust_remote_code unset), recorded instead of asked."""
    import transformers.models.auto.auto_factory
    import transformers.models.auto.configuration_auto
    import transformers.models.auto.tokenization_auto

    asked = []
    original = transformers.dynamic_module_utils.resolve_trust_remote_code

    def spy(trust_remote_code, model_name, has_local_code, has_remote_code, *args, **kwargs):
        if trust_remote_code is None and has_remote_code and not has_local_code:
            asked.append(str(model_name))
        return original(trust_remote_code, model_name, has_local_code, has_remote_code, *args, **kwargs)

    for module in (transformers.dynamic_module_utils, transformers.models.auto.configuration_auto,
                   transformers.models.auto.tokenization_auto, transformers.models.auto.auto_factory):
        if hasattr(module, "resolve_trust_remote_code"):
            monkeypatch.setattr(module, "resolve_trust_remote_code", spy)
    return asked


def _bertfit_layout_of_earlier_versions(folder) -> None:
    """config.json as bertfit wrote it before: model_type bertfit, the sizes a stock class reads left empty."""
    data = json.loads((folder / "config.json").read_text())
    data.update(model_type="bertfit", vocab_size=None, hidden_size=None, num_hidden_layers=None, num_attention_heads=None)
    (folder / "config.json").write_text(json.dumps(data))


def test_a_runs_tokenizer_loads_with_a_plain_auto_tokenizer_and_no_prompt(trained, prompts, tmp_path):
    import shutil

    from bertfit.infer.token_view import view_tokens
    from bertfit.model import load_tokenizer

    run_dir, texts = trained("single")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")  # no trust_remote_code: a tokenizer needs no code
    assert tokenizer(texts[0])["input_ids"] == load_tokenizer(str(run_dir))(texts[0])["input_ids"]
    assert prompts == []
    old = shutil.copytree(run_dir, tmp_path / "old")  # a folder of the earlier layout: bertfit's commands never ask
    _bertfit_layout_of_earlier_versions(old / "model")
    assert view_tokens(old, texts[0]).ids == view_tokens(run_dir, texts[0]).ids
    assert load_tokenizer(str(old / "model"))(texts[0])["input_ids"] == tokenizer(texts[0])["input_ids"]
    expected = Predictor(run_dir, device="cpu", backend="pytorch").predict_proba(texts)
    np.testing.assert_allclose(Predictor(old, device="cpu", backend="pytorch").predict_proba(texts), expected, atol=1e-6)
    assert prompts == []


def test_bertfit_commands_never_ask_to_run_a_folders_code(trained, tmp_path):
    """`bertfit tokenize RUN` and `bertfit inspect --model RUN/model`, stdin closed: no prompt text, no wait."""
    import subprocess
    import sys

    run_dir, texts = trained("single")
    write_csv(tmp_path / "data.csv", [(texts[0], "a"), (texts[1], "b")])
    for command in (["tokenize", str(run_dir), texts[0]],
                    ["inspect", "--data", str(tmp_path / "data.csv"), "--model", str(run_dir / "model")],
                    ["predict", str(run_dir), texts[0], "--backend", "pytorch"]):
        done = subprocess.run([sys.executable, "-m", "bertfit", *command], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "custom code" not in done.stdout + done.stderr and "trust_remote_code" not in done.stdout + done.stderr
