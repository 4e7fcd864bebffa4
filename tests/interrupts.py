"""Stopping a training run at a chosen optimizer step, as Ctrl-C or a crash would, for the resume tests."""

from __future__ import annotations

import os
import signal
from typing import Any, Callable

import pytest

from bertfit.training import loop


def stop_at(monkeypatch: pytest.MonkeyPatch, step: int, how: str = "interrupt", target: tuple[Any, str] = (loop, "train_step")
            ) -> None:
    """Make the loop's step number `step` be followed by SIGINT (the loop checkpoints and stops, like a
    first Ctrl-C) or, with how="crash", raise before it runs. Call it inside `monkeypatch.context()` so
    that a later run in the same test trains normally. `target` (module, function): what a step calls once,
    e.g. (training.contrastive, "group_loss") for the contrastive encoder stage's steps."""
    module, name = target
    real_step, calls = getattr(module, name), {"n": 0}

    def patched(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step and how == "crash":
            raise RuntimeError("simulated crash")
        loss = real_step(*args, **kwargs)
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return loss
    monkeypatch.setattr(module, name, patched)


def straight_and_resumed(make_config: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch, step: int) -> tuple[Any, Any]:
    """The same run trained without a stop ("straight") and stopped after `step` then resumed ("stopped"):
    the two results, for tests that check the resumed run ends where the straight one did."""
    from bertfit.training.recipe import train

    straight = train(make_config("straight"))
    with monkeypatch.context() as patch:
        stop_at(patch, step)
        stopped = train(make_config("stopped"))
    assert stopped.interrupted and stopped.steps == step
    return straight, train(resume=stopped.run_dir)
