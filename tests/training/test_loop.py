"""The loop's contracts: accumulation equals one big batch, resume equals no interruption, reload is exact."""

import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertfit.artifacts import read_metrics
from bertfit.config import load_config
from bertfit.data.batching import PaddedBatches, tokenize
from bertfit.data.windows import TextCut
from bertfit.evaluate.run import evaluate_run
from bertfit.infer.engine import InferenceContext
from bertfit.infer.predictor import Predictor
from bertfit.model import TextClassifier, load_encoder, load_tokenizer
from bertfit.runtime.device import choose_precision
from bertfit.training import loop, steps
from bertfit.training.recipe import train
from interrupts import stop_at

TEXTS = ["the match ended in a draw", "shares fell sharply today", "a new chip was unveiled",
         "rebels seized the capital city after a long siege"]


def _sgd_session(model: torch.nn.Module) -> loop.Session:
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    device = torch.device("cpu")
    context = InferenceContext(device, choose_precision("fp32", device), pad_id=0, batch_size=64)
    return loop.Session(model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False),
                        torch.nn.CrossEntropyLoss(reduction="sum"), context, max_grad_norm=0.0)


def test_accumulating_4x1_equals_one_batch_of_4(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    batches = PaddedBatches(tokenize(TEXTS, [0, 1, 2, 3], tokenizer, TextCut(64)), tokenizer.pad_token_id)
    torch.manual_seed(0)
    reference = TextClassifier(load_encoder(str(tiny_model_dir)), num_labels=4).eval()  # eval: no dropout
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    results = []
    for groups in ([np.arange(4)], [np.array([i]) for i in range(4)]):
        reference.load_state_dict(start)
        loss = loop.train_step(_sgd_session(reference), [batches[rows] for rows in groups])
        # With SGD at lr 1, the weight change is exactly minus the gradient.
        results.append((loss.item(), {k: (start[k] - v).clone() for k, v in reference.state_dict().items()}))
    (full_loss, full_grad), (accumulated_loss, accumulated_grad) = results
    assert accumulated_loss == pytest.approx(full_loss, rel=1e-5)
    assert max(full_grad[k].abs().max().item() for k in full_grad) > 1e-4  # the step did move the weights
    for key in full_grad:
        torch.testing.assert_close(accumulated_grad[key], full_grad[key], rtol=1e-4, atol=1e-6)


@pytest.fixture
def resumable(tiny_overrides, ag_news_csv):
    """Two epochs of 6 steps, evaluating every 4 steps and checkpointing every 3."""
    def config(name: str):
        return load_config(None, tiny_overrides + [
            "--name", name, "--data.train", str(ag_news_csv), "--data.max_train_rows", "112",
            "--data.max_eval_rows", "40", "--train.epochs", "2", "--train.eval_every_steps", "4",
            "--train.checkpoint_every_steps", "3", "--train.keep_checkpoint", "true"])
    return config


def _final_weights(result) -> dict:
    return load_file(result.run_dir / "checkpoint" / "model.safetensors")


@pytest.mark.parametrize("how, stop_step", [("interrupt", 5), ("crash", 8)])
def test_resumed_run_matches_uninterrupted_run(resumable, monkeypatch, how, stop_step):
    uninterrupted = train(resumable("straight"))
    assert uninterrupted.steps == 12 and not uninterrupted.interrupted

    with monkeypatch.context() as patch:
        stop_at(patch, stop_step, how)
        if how == "crash":
            with pytest.raises(RuntimeError, match="simulated crash"):
                train(resumable("stopped"))
        else:
            stopped = train(resumable("stopped"))
            assert stopped.interrupted and stopped.steps == stop_step
    run_dir = uninterrupted.run_dir.parent / "stopped"
    resumed = train(resume=run_dir)

    assert resumed.steps == 12 and not resumed.interrupted
    expected, actual = _final_weights(uninterrupted), _final_weights(resumed)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in read_metrics(run_dir)] == [4, 8, 12]  # no duplicated evaluations
    assert resumed.validation["loss"] == pytest.approx(uninterrupted.validation["loss"], rel=1e-5)


def test_saved_model_reloads_and_predicts_identically(tiny_overrides, ag_news_csv):
    result = train(load_config(None, tiny_overrides + ["--name", "reload", "--data.train", str(ag_news_csv),
                                                       "--data.test", str(ag_news_csv.parent / "test.csv")]))
    reloaded = evaluate_run(result.run_dir, str(ag_news_csv.parent / "test.csv"), calibrate=False, baselines=False)
    assert reloaded["rows"] == 100
    assert reloaded["loss"] == pytest.approx(result.test["loss"], rel=1e-5)
    assert reloaded["accuracy"] == result.test["accuracy"]
    predictor = Predictor(result.run_dir)
    once, twice = predictor.predict_proba(TEXTS), Predictor(result.run_dir).predict_proba(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(once, twice, rtol=1e-5, atol=1e-6)  # order restored, weights identical
    assert predictor.labels.names == ("Business", "Sci/Tech", "Sports", "World")


def test_a_cpu_that_computes_bf16_fast_trains_in_it_and_scores_as_evaluate_does(tiny_overrides, ag_news_csv, monkeypatch,
                                                                                caplog):
    from bertfit.runtime import device

    monkeypatch.setattr(device, "cpu_bf16_speedup", lambda: 8.0)  # what AMX measures; the run needs no AMX to take it
    autocasts = []
    real_autocast = steps.autocast
    monkeypatch.setattr(steps, "autocast", lambda where, precision: autocasts.append(precision.name)
                        or real_autocast(where, precision))
    with caplog.at_level(logging.INFO, logger="bertfit.training.recipe"):
        result = train(load_config(None, tiny_overrides + ["--name", "amx", "--data.train", str(ag_news_csv),
                                                           "--data.test", str(ag_news_csv.parent / "test.csv"),
                                                           "--train.device", "cpu"]))
    assert set(autocasts) == {"bf16"} and "cpu bf16 (fp32 evaluation)" in caplog.text
    reloaded = evaluate_run(result.run_dir, str(ag_news_csv.parent / "test.csv"), calibrate=False, baselines=False)
    assert reloaded["loss"] == pytest.approx(result.test["loss"], rel=1e-5)  # the run's scores are evaluate's


def _script_validation_accuracy(monkeypatch, scores: list[float]) -> None:
    """Each evaluation reports the next of `scores` as its validation accuracy (the rest of its metrics are real)."""
    scripted, real_evaluate = iter(scores), loop.evaluate

    def fake_evaluate(*args, **kwargs):
        return {**real_evaluate(*args, **kwargs), "accuracy": next(scripted)}
    monkeypatch.setattr(loop, "evaluate", fake_evaluate)


def test_early_stopping_keeps_the_best_checkpoint(tiny_overrides, ag_news_csv, monkeypatch):
    """Validation accuracy scripted as 0.5, 0.7, 0.6, 0.65: patience 2 stops at the 4th evaluation."""
    _script_validation_accuracy(monkeypatch, [0.5, 0.7, 0.6, 0.65, 0.9, 0.9])
    result = train(load_config(None, tiny_overrides + [
        "--name", "early", "--data.train", str(ag_news_csv), "--data.max_train_rows", "112", "--train.epochs", "1",
        "--train.eval_every_steps", "1", "--train.metric", "accuracy", "--train.early_stopping_patience", "2"]))
    history = read_metrics(result.run_dir)
    assert [r["eval/accuracy"] for r in history] == [0.5, 0.7, 0.6, 0.65]
    assert result.steps == 4 and result.best_step == 2
    assert json.loads((result.run_dir / "model" / "bertfit.json").read_text())["step"] == 2


@pytest.mark.parametrize("keep", ["auto", "best"])
def test_a_small_validation_split_keeps_the_last_weights_unless_told(tiny_overrides, ag_news_csv, monkeypatch, keep):
    """Validation accuracy scripted 0.5, 0.9, then lower: on a handful of rows the 0.9 is a lucky evaluation, so
    auto keeps the last step's weights; train.keep best keeps step 2's."""
    _script_validation_accuracy(monkeypatch, [0.5, 0.9] + [0.6] * 20)
    result = train(load_config(None, tiny_overrides + [
        "--name", keep, "--data.train", str(ag_news_csv), "--data.max_train_rows", "112", "--train.epochs", "1",
        "--train.eval_every_steps", "1", "--train.metric", "accuracy", "--train.keep", keep]))
    kept_step = result.steps if keep == "auto" else 2
    assert result.steps >= 4 and result.best_step == kept_step and result.kept == ("last" if keep == "auto" else "best")
    assert result.validation["accuracy"] == (0.6 if keep == "auto" else 0.9)
    assert json.loads((result.run_dir / "model" / "bertfit.json").read_text())["step"] == kept_step


def test_a_finished_run_drops_its_checkpoint_unless_kept(tiny_overrides, ag_news_csv, monkeypatch):
    from bertfit.errors import BertfitError

    def config(name: str, *extra: str):  # 3 steps, a checkpoint after each
        return load_config(None, tiny_overrides + ["--name", name, "--data.train", str(ag_news_csv),
                                                   "--data.max_train_rows", "48", "--data.max_eval_rows", "16",
                                                   "--train.checkpoint_every_steps", "1", *extra])
    with monkeypatch.context() as patch:
        stop_at(patch, 2, "interrupt")
        stopped = train(config("dropped"))
    assert stopped.interrupted and (stopped.run_dir / "checkpoint").is_dir()  # unfinished: kept to resume from
    finished = train(resume=stopped.run_dir)
    assert finished.steps == 3 and not finished.interrupted
    assert not (finished.run_dir / "checkpoint").exists() and (finished.run_dir / "model" / "bertfit.json").is_file()
    with pytest.raises(BertfitError, match="has finished .* nothing to resume"):
        train(resume=finished.run_dir)
    kept = train(config("kept", "--train.keep_checkpoint", "true"))
    assert (kept.run_dir / "checkpoint" / "model.safetensors").is_file()


def test_without_validation_rows_an_epoch_end_writes_no_checkpoint(tiny_overrides, ag_news_csv, monkeypatch):
    """No validation split (a few-shot run): an epoch's end records the training scores only; model/ and the
    checkpoint are written every train.checkpoint_every_steps and at the end, and model/ is the last step's."""
    from bertfit import artifacts
    from bertfit.training import writer

    written: list[tuple[str, int]] = []
    save_model, save_checkpoint = artifacts.save_model, writer.save_checkpoint
    monkeypatch.setattr(artifacts, "save_model", lambda folder, model, tokenizer, meta:
                        written.append(("model", meta.step)) or save_model(folder, model, tokenizer, meta))
    monkeypatch.setattr(writer, "save_checkpoint", lambda run_dir, model, extra:
                        written.append(("checkpoint", extra["loop"]["step"])) or save_checkpoint(run_dir, model, extra))
    result = train(load_config(None, tiny_overrides + [  # 32 rows in batches of 8: 4 steps an epoch, 6 epochs
        "--name", "no-validation", "--data.train", str(ag_news_csv), "--data.max_train_rows", "32",
        "--data.validation_fraction", "0", "--train.batch_size", "8", "--train.epochs", "6",
        "--train.checkpoint_every_steps", "10"]))
    assert result.steps == 24 and result.kept == "last" and len(read_metrics(result.run_dir)) == 6  # a record an epoch
    assert written == [("model", 10), ("checkpoint", 10), ("model", 20), ("checkpoint", 20), ("model", 24),
                       ("checkpoint", 24)]
    assert json.loads((result.run_dir / "model" / "bertfit.json").read_text())["step"] == 24


@pytest.mark.parametrize("started, spec", [("bf16", "auto"), ("fp32", "auto"), ("bf16", "fp32")])
def test_a_resumed_cpu_run_trains_in_the_precision_it_started_with(tmp_path, monkeypatch, started, spec):
    """auto measures the CPU when a run starts (env.json records the choice); its resume keeps that choice whatever a
    busy core measures then, or the resumed weights would not be the unbroken run's."""
    from bertfit.runtime import device as device_module
    from bertfit.runtime.distributed import Distributed
    from bertfit.training.writer import training_precision

    now = "fp32" if started == "bf16" else "bf16"  # the measurement now points the other way
    monkeypatch.setattr(device_module, "cpu_bf16_speedup", lambda: 10.0 if now == "bf16" else 1.0)
    (tmp_path / "env.json").write_text(json.dumps({"precision": started}))
    config, cpu = load_config(None, ["--train.precision", spec]), torch.device("cpu")
    assert training_precision(config, cpu, tmp_path, Distributed()).name == (started if spec == "auto" else spec)
    assert training_precision(config, cpu, None, Distributed()).name == (now if spec == "auto" else spec)  # a new run
