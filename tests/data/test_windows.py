"""Sliding windows over long texts with pooled logits (model.window_stride)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from bertfit.config import load_config
from bertfit.data.batching import tokenize
from bertfit.data.windows import TextCut, WindowSettings, cut_windows, pool_logits, spread_windows, window_starts
from bertfit.errors import ConfigError
from conftest import write_csv


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_window_starts_cover_the_body_and_end_at_its_end():
    assert window_starts(10, budget=4, stride=4) == [0, 4, 6]  # last window aligned to the end
    assert window_starts(10, budget=4, stride=2) == [0, 2, 4, 6]
    assert window_starts(4, budget=4, stride=2) == [0]  # fits: one window
    for body, budget, stride in [(37, 6, 3), (100, 14, 7), (15, 14, 14), (50, 14, 1)]:
        starts = window_starts(body, budget, stride)
        covered = np.zeros(body, bool)
        for start in starts:
            covered[start:start + budget] = True
        assert covered.all() and starts[-1] + budget == body
        assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))


def test_cut_windows_wraps_each_window_in_the_special_tokens():
    ids = [101, *range(1, 21), 102]  # [CLS] 1..20 [SEP]
    windows = cut_windows(ids, max_length=8, stride=3)
    assert all(len(w) == 8 and w[0] == 101 and w[-1] == 102 for w in windows)
    assert [w[1] for w in windows] == [1, 4, 7, 10, 13, 15]  # body starts 0, 3, ..., then 14 = 20 - 6
    assert windows[-1][1:-1] == list(range(15, 21))
    assert cut_windows([101, 5, 6, 102], max_length=8, stride=3) == [[101, 5, 6, 102]]  # short: unchanged


def test_spread_windows_caps_evenly_from_first_to_last():
    assert spread_windows(10, 3).tolist() == [0, 4, 9]  # linspace(0, 9, 3) rounded: 0, 4.5 -> 4, 9
    assert spread_windows(10, 1).tolist() == [0]
    assert spread_windows(3, 8).tolist() == [0, 1, 2]
    assert spread_windows(5, 0).tolist() == [0, 1, 2, 3, 4]  # 0: no cap


def test_pool_logits_matches_a_hand_computation():
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [0.5, 0.5], [-1.0, 4.0], [2.0, 2.0], [0.0, 1.0]], np.float32)
    windows = np.array([0, 2, 3, 6])  # documents own 2, 1 and 3 windows
    mean = pool_logits(logits, windows, "mean")
    np.testing.assert_allclose(mean, [[2.0, -1.0], [0.5, 0.5], [1 / 3, 7 / 3]], rtol=1e-6)
    np.testing.assert_array_equal(pool_logits(logits, windows, "max"), [[3.0, 0.0], [0.5, 0.5], [2.0, 4.0]])


def test_tokenize_keeps_documents_and_their_labels(tokenizer, tmp_path):
    long_text = " ".join(f"word{i}" for i in range(60))
    texts = [long_text, "short", long_text]
    settings = WindowSettings(stride=5, max_windows=0)
    split = tokenize(texts, [1, 0, 2], tokenizer, TextCut(16, windows=settings), tmp_path)
    full = tokenizer(long_text)["input_ids"]
    expected = cut_windows(full, 16, 5)
    assert len(expected) > 3
    assert split.windows.tolist() == [0, len(expected), len(expected) + 1, 2 * len(expected) + 1]
    assert split.document_labels.tolist() == [1, 0, 2]
    assert split.labels.tolist() == [1] * len(expected) + [0] + [2] * len(expected)
    first = [split.ids[split.offsets[i]:split.offsets[i + 1]].tolist() for i in range(len(expected))]
    assert first == expected
    # The cache keeps window settings apart: a cap, and plain truncation, hand back their own tokens.
    capped = tokenize(texts, [1, 0, 2], tokenizer, TextCut(16, windows=WindowSettings(stride=5, max_windows=2)), tmp_path)
    assert capped.windows.tolist() == [0, 2, 3, 5]
    assert capped.ids[:16].tolist() == expected[0] and capped.ids[16:32].tolist() == expected[-1]
    plain = tokenize(texts, [1, 0, 2], tokenizer, TextCut(16), tmp_path)
    assert plain.windows is None and len(plain) == 3
    again = tokenize(texts, [1, 0, 2], tokenizer, TextCut(16, windows=settings), tmp_path)  # a cache hit
    np.testing.assert_array_equal(again.windows, split.windows)
    np.testing.assert_array_equal(again.ids, split.ids)


@pytest.mark.parametrize("flags, message", [
    (["--model.window_stride", "8", "--model.keep_head", "0.25"], "model.keep_head must stay 1"),
    (["--model.window_stride", "100", "--model.max_length", "64"], "use at most 62"),
    (["--model.window_stride", "-1"], "model.window_stride: must be >= 0"),
    (["--model.window_pooling", "median"], "model.window_pooling: must be one of mean, max"),
    (["--model.max_windows", "-2"], "model.max_windows: must be >= 0"),
])
def test_bad_window_settings_are_config_errors(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, flags)


def test_train_predict_evaluate_count_documents(tiny_model_dir, ag_news_rows, tmp_path):
    """A tiny run with windows: every metric counts texts, and prediction cuts texts as training did."""
    from bertfit.artifacts import load_model
    from bertfit.deploy.export import export_run
    from bertfit.evaluate.run import evaluate_run
    from bertfit.infer.engine import InferenceContext, row_logits
    from bertfit.infer.predictor import Predictor
    from bertfit.training.recipe import train

    train_rows, test_rows = ag_news_rows[:120], ag_news_rows[300:340]
    config = load_config(None, [
        "--model.name", str(tiny_model_dir), "--model.max_length", "16", "--model.window_stride", "7",
        "--model.window_pooling", "max", "--model.max_windows", "3", "--output_dir", str(tmp_path / "runs"),
        "--train.method", "standard", "--data.validation_fraction", "0.1",
        "--cache_dir", str(tmp_path / "cache"), "--train.progress", "false", "--train.tensorboard", "false",
        "--train.batch_size", "32", "--train.lr", "1e-3", "--train.epochs", "1", "--name", "windows",
        "--data.train", str(write_csv(tmp_path / "train.csv", train_rows)),
        "--data.test", str(write_csv(tmp_path / "test.csv", test_rows))])
    result = train(config)
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["rows"]["test"] == len(test_rows) and saved["rows"]["train"] == 108  # 120 minus 10% validation
    meta = json.loads((result.run_dir / "model" / "bertfit.json").read_text())
    assert (meta["window_stride"], meta["window_pooling"]) == (7, "max")

    texts = [text for text, _ in test_rows]
    predictor, loaded = Predictor(result.run_dir, backend="torch"), load_model(result.run_dir)
    windows = tokenize(texts, np.zeros(len(texts)), loaded.tokenizer, TextCut(16, windows=WindowSettings(7, "max")))
    assert len(windows) > 2 * len(texts)  # AG News texts are several 16-token windows long
    rows = row_logits(loaded.model, windows, InferenceContext.cpu(loaded.tokenizer.pad_token_id, 64))
    expected = pool_logits(rows, windows.windows, "max")
    np.testing.assert_allclose(predictor.logits(texts), expected, rtol=1e-5, atol=1e-5)
    assert len(predictor.predict(texts)) == len(texts)

    report = evaluate_run(result.run_dir, baselines=False, figures=False, calibrate=False)
    assert report["rows"] == len(test_rows) and np.asarray(report["confusion_matrix"]).sum() == len(test_rows)
    assert report["accuracy"] == pytest.approx(saved["test"]["accuracy"])

    pytest.importorskip("onnxruntime")
    export = export_run(result.run_dir, int8=False, max_rows=20)
    assert export.model.window_stride == 7 and export.check["rows"] == 20
    onnx = Predictor(result.run_dir, backend="onnx-fp32")
    np.testing.assert_allclose(onnx.logits(texts), expected, rtol=1e-3, atol=1e-3)


def test_frozen_encoder_features_keep_the_windows(tiny_model_dir, ag_news_rows, tmp_path):
    """Cached features (model.freeze encoder) are one vector per window; evaluation still pools per text."""
    from bertfit.infer.predictor import Predictor
    from bertfit.training.recipe import train

    config = load_config(None, [
        "--model.name", str(tiny_model_dir), "--model.max_length", "16", "--model.window_stride", "7",
        "--model.freeze", "encoder", "--output_dir", str(tmp_path / "runs"), "--cache_dir", str(tmp_path / "cache"),
        "--train.method", "standard", "--data.validation_fraction", "0.1",
        "--train.progress", "false", "--train.tensorboard", "false", "--train.epochs", "1", "--name", "frozen",
        "--data.train", str(write_csv(tmp_path / "train.csv", ag_news_rows[:60])),
        "--data.test", str(write_csv(tmp_path / "test.csv", ag_news_rows[300:330]))])
    result = train(config)
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["rows"]["test"] == 30 and saved["rows"]["validation"] == 6
    # The same pooled scores as a Predictor reading the texts afresh (window by window, through the encoder).
    predictions = Predictor(result.run_dir, backend="torch").predict([text for text, _ in ag_news_rows[300:330]])
    accuracy = np.mean([p.label == label for p, (_, label) in zip(predictions, ag_news_rows[300:330])])
    assert saved["test"]["accuracy"] == pytest.approx(accuracy)


def test_model_card_says_how_long_texts_are_read():
    from bertfit.evaluate.model_card import _long_text_limit

    assert "windows (stride 63)" in _long_text_limit(load_config(None, ["--model.window_stride", "63"]).model)
    assert "start and end" in _long_text_limit(load_config(None, ["--model.keep_head", "0.25"]).model)
    assert "only their start" in _long_text_limit(load_config(None, []).model)


def test_a_stride_that_would_skip_tokens_is_refused_when_tokenizing(tokenizer):
    from bertfit.errors import BertfitError

    with pytest.raises(BertfitError, match="window stride 20 must be in 1..14"):
        tokenize(["a b c"], [0], tokenizer, TextCut(16, windows=WindowSettings(stride=20)))
