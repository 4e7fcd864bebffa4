"""Helpers for tests that start bertfit in child processes (torchrun, accelerate) and compare runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from bertfit.artifacts import read_metrics

TORCHRUN, ACCELERATE = Path(sys.executable).parent / "torchrun", Path(sys.executable).parent / "accelerate"
SRC = Path(__file__).resolve().parents[1] / "src"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(extra or {})}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str], extra_env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, env=_env(extra_env), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _single(flags: list[str], name: str) -> Path:
    """The reference: one process, whole batches (in-process: no second interpreter to start)."""
    from bertfit.config import load_config
    from bertfit.training.recipe import train

    return train(load_config(None, flags + ["--name", name])).run_dir


def _assert_same_run(single: Path, parallel: Path) -> None:
    ours = load_file(single / "checkpoint" / "model.safetensors")
    theirs = load_file(parallel / "checkpoint" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_allclose(theirs[key], ours[key], atol=2e-5, rtol=1e-4, err_msg=key)
    expected, got = read_metrics(single), read_metrics(parallel)
    assert [r["step"] for r in got] == [r["step"] for r in expected]  # one line per evaluation: only rank 0 writes
    for a, b in zip(expected, got):
        assert b["eval/loss"] == pytest.approx(a["eval/loss"], abs=1e-4)
