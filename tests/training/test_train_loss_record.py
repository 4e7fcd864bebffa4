"""The training loss and accuracy stored with each evaluation survive an interruption and resume unchanged."""

from __future__ import annotations

import contextlib

import pytest

from bertfit.artifacts import read_metrics
from bertfit.config import load_config
from bertfit.training import loop
from bertfit.training.recipe import train
from conftest import write_csv

STOP_AT_STEP = 5  # between two evaluations (every 4 steps) and off a checkpoint boundary


class _StopAfter:
    """Stands in for Ctrl-C: asks the loop to stop once STOP_AT_STEP training steps have run."""

    steps = 0

    def __init__(self) -> None:
        pass

    @property
    def requested(self) -> bool:
        return _StopAfter.steps >= STOP_AT_STEP

    def installed(self):
        return contextlib.nullcontext()


def test_resumed_run_records_the_same_train_loss(tiny_overrides, no_dropout_model_dir, tmp_path, ag_news_rows,
                                                 monkeypatch):
    write_csv(tmp_path / "train.csv", ag_news_rows[:120])
    overrides = [*tiny_overrides, "--model.name", str(no_dropout_model_dir), "--model.dropout", "0",
                 "--data.train", str(tmp_path / "train.csv"), "--train.epochs", "2",
                 "--train.eval_every_steps", "4", "--train.checkpoint_every_steps", "0"]
    whole = train(load_config(None, [*overrides, "--name", "whole"]))

    original_step = loop.train_step

    def counting_step(*args, **kwargs):
        _StopAfter.steps += 1
        return original_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", counting_step)
    monkeypatch.setattr(loop, "StopRequest", _StopAfter)
    first = train(load_config(None, [*overrides, "--name", "split"]))
    assert first.interrupted and first.steps == STOP_AT_STEP
    monkeypatch.undo()
    train(resume=first.run_dir)

    expected, resumed = read_metrics(whole.run_dir), read_metrics(first.run_dir)
    assert [r["step"] for r in resumed] == [r["step"] for r in expected]
    for a, b in zip(expected, resumed):
        assert b["eval/loss"] == pytest.approx(a["eval/loss"], rel=1e-5)  # same weights: the premise holds
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-5)
        assert b["train/accuracy"] == a["train/accuracy"]
