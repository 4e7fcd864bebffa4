"""Speed paths: frozen-encoder feature cache, CPU bf16, torch.compile."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel

from bertfit.artifacts import read_metrics
from bertfit.config import load_config
from bertfit.infer.predictor import Predictor
from bertfit.runtime.device import compile_toolchain_problem
from bertfit.training.recipe import train
from interrupts import straight_and_resumed

TEXTS = ["the match ended in a draw", "shares fell sharply today", "a new chip was unveiled"]


@pytest.fixture
def frozen_config(tiny_overrides, ag_news_csv, no_dropout_model_dir):
    """Two epochs of 6 steps over 96 rows (112 read, 16 held out), frozen encoder, no dropout; evaluation every 4 steps."""
    def config(name: str, *extra: str):
        return load_config(None, tiny_overrides + [
            "--name", name, "--model.name", str(no_dropout_model_dir), "--data.train", str(ag_news_csv),
            "--data.test", str(ag_news_csv.parent / "test.csv"), "--data.max_train_rows", "112",
            "--data.max_eval_rows", "40", "--train.epochs", "2", "--train.eval_every_steps", "4",
            "--train.checkpoint_every_steps", "3", "--model.freeze", "encoder", "--model.dropout", "0",
            "--train.lr", "1e-2", "--train.keep_checkpoint", "true", *extra])
    return config


@pytest.fixture
def encoder_rows(monkeypatch):
    """Counts the texts that go through BertModel.forward."""
    counted = {"rows": 0}
    real_forward = BertModel.forward

    def counting(self, input_ids=None, *args, **kwargs):
        counted["rows"] += int(input_ids.shape[0])
        return real_forward(self, input_ids, *args, **kwargs)
    monkeypatch.setattr(BertModel, "forward", counting)
    return counted


def _head(result) -> dict[str, torch.Tensor]:
    weights = load_file(result.run_dir / "checkpoint" / "model.safetensors")
    return {k: v for k, v in weights.items() if k.startswith("head.")}


def test_cached_features_train_the_same_head_with_one_encoder_pass(frozen_config, encoder_rows):
    slow = train(frozen_config("slow", "--train.cache_features", "none"))
    slow_rows, encoder_rows["rows"] = encoder_rows["rows"], 0
    fast = train(frozen_config("fast"))
    assert fast.steps == slow.steps == 12
    rows = json.loads((fast.run_dir / "results.json").read_text())["rows"]
    assert encoder_rows["rows"] == sum(rows.values())  # each text encoded once, not once per epoch and evaluation
    assert slow_rows >= 2 * rows["train"] + 3 * rows["validation"] + rows["test"]  # 2 epochs, 3 evaluations, test
    slow_head, fast_head = _head(slow), _head(fast)
    for key in slow_head:
        torch.testing.assert_close(fast_head[key], slow_head[key], rtol=1e-4, atol=1e-5)
    assert fast.validation["loss"] == pytest.approx(slow.validation["loss"], rel=1e-4)
    assert fast.test["accuracy"] == slow.test["accuracy"]
    assert [r["step"] for r in read_metrics(fast.run_dir)] == [4, 8, 12]
    # The run directory is an ordinary one: its model/ folder holds the whole classifier.
    np.testing.assert_allclose(Predictor(fast.run_dir).predict_proba(TEXTS), Predictor(slow.run_dir).predict_proba(TEXTS),
                               rtol=1e-4, atol=1e-5)


def test_feature_disk_cache_skips_the_encoder_on_a_second_run(frozen_config, encoder_rows):
    first = train(frozen_config("first", "--train.cache_features", "disk"))
    assert encoder_rows["rows"] > 0
    encoder_rows["rows"] = 0
    second = train(frozen_config("second", "--train.cache_features", "disk"))
    assert encoder_rows["rows"] == 0  # every split's vectors came from the cache
    for key, value in _head(first).items():
        torch.testing.assert_close(_head(second)[key], value, rtol=0, atol=0)
    changed = train(frozen_config("other-pooling", "--train.cache_features", "disk", "--model.pooling", "cls"))
    assert encoder_rows["rows"] > 0 and changed.steps == 12  # another pooling is another cache key


def test_cached_features_resume_matches_uninterrupted(frozen_config, monkeypatch):
    straight, resumed = straight_and_resumed(frozen_config, monkeypatch, 5)
    assert resumed.steps == 12 and not resumed.interrupted
    for key, value in _head(straight).items():
        torch.testing.assert_close(_head(resumed)[key], value, rtol=1e-5, atol=1e-6)


def test_cpu_bf16_trains_end_to_end(tiny_overrides, ag_news_csv):
    result = train(load_config(None, tiny_overrides + [
        "--name", "bf16", "--data.train", str(ag_news_csv), "--data.max_train_rows", "64", "--data.max_eval_rows", "32",
        "--train.precision", "bf16", "--train.device", "cpu"]))
    assert result.steps == 4 and np.isfinite(result.validation["loss"])
    weights = load_file(result.run_dir / "model" / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in weights.values())  # autocast computes in bf16, weights stay fp32
    assert np.isfinite(Predictor(result.run_dir, precision="bf16").predict_proba(TEXTS)).all()


def _compiled_run(tiny_overrides, ag_news_csv, name: str):
    result = train(load_config(None, tiny_overrides + [
        "--name", name, "--data.train", str(ag_news_csv), "--data.max_train_rows", "48", "--data.max_eval_rows", "16",
        "--train.compile", "true", "--train.device", "cpu"]))
    assert result.steps == 3 and np.isfinite(result.validation["loss"])
    weights = load_file(result.run_dir / "model" / "model.safetensors")
    assert not any("_orig_mod" in key for key in weights)  # compiled in place: saved keys are the plain ones
    assert np.isfinite(Predictor(result.run_dir).predict_proba(TEXTS)).all()


def test_compiled_model_trains(tiny_overrides, ag_news_csv, monkeypatch):
    """Dynamo traces the model (train steps, evaluation); aot_eager skips code generation, which takes minutes here."""
    real_compile = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: real_compile(self, backend="aot_eager", **kw))
    _compiled_run(tiny_overrides, ag_news_csv, "compiled")


CPU_TOOLCHAIN_PROBLEM = compile_toolchain_problem(torch.device("cpu"))


@pytest.mark.skipif(CPU_TOOLCHAIN_PROBLEM is not None, reason=f"torch.compile cannot build CPU kernels: {CPU_TOOLCHAIN_PROBLEM}")
@pytest.mark.skipif(not os.environ.get("BERTFIT_SLOW_TESTS"),
                    reason="inductor compiles C++ kernels for ~2 minutes on 2 cores; set BERTFIT_SLOW_TESTS=1")
def test_compiled_model_trains_with_inductor(tiny_overrides, ag_news_csv):
    _compiled_run(tiny_overrides, ag_news_csv, "inductor")
