"""Distributed data-parallel training on CPU (gloo): torchrun with 2 processes, and a 2-node rendezvous.

With dropout off, 2 ranks that each take half of every global batch must reach the same weights as
one process taking the whole batch (the gradient is the same sum, reduced in a different order).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from bertfit.artifacts import read_metrics
from bertfit.runtime import Distributed, distributed_from_env, shard_rows

TORCHRUN = Path(sys.executable).parent / "torchrun"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def flags(no_dropout_model_dir, tiny_overrides, ag_news_csv) -> list[str]:
    # 64 rows in batches of 7: the last global batch has 1 row, so one rank gets an empty share.
    return tiny_overrides + ["--model.name", str(no_dropout_model_dir), "--model.dropout", "0",
                             "--data.train", str(ag_news_csv), "--data.max_train_rows", "64",
                             "--data.max_eval_rows", "24", "--train.batch_size", "7", "--train.eval_every_steps", "5"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str]) -> None:
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _single(flags: list[str], name: str) -> Path:
    """The reference: one process, whole batches (in-process: no second interpreter to start)."""
    from bertfit.config import load_config
    from bertfit.train import train

    return train(load_config(None, flags + ["--name", name])).run_dir


def _assert_same_run(single: Path, parallel: Path) -> None:
    ours, theirs = load_file(single / "checkpoint" / "model.safetensors"), load_file(parallel / "checkpoint" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_allclose(theirs[key], ours[key], atol=2e-5, rtol=1e-4, err_msg=key)
    expected, got = read_metrics(single), read_metrics(parallel)
    assert [r["step"] for r in got] == [r["step"] for r in expected]  # one line per evaluation: only rank 0 writes
    for a, b in zip(expected, got):
        assert b["eval/loss"] == pytest.approx(a["eval/loss"], abs=1e-4)


def test_shards_cover_each_batch_once():
    rows = np.arange(7)
    shards = [shard_rows(rows, Distributed(rank, 3)) for rank in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == rows.tolist()
    assert distributed_from_env().world_size >= 1


def _two_nodes(args: list[str]) -> None:
    """Two torchrun launchers, one per "node", meeting at a rendezvous on 127.0.0.1."""
    port = str(_free_port())
    nodes = [subprocess.Popen([str(TORCHRUN), "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
                               "--master-addr", "127.0.0.1", "--master-port", port, "-m", "bertfit.cli", "train", *args],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]


def test_torchrun_and_two_nodes_match_one_process_and_resume(flags):
    from bertfit.train import train

    single = _single(flags, "single")
    _run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "bertfit.cli", "train", *flags, "--name", "ddp"])
    parallel = single.parent / "ddp"
    _assert_same_run(single, parallel)
    assert (parallel / "results.json").is_file() and (parallel / "model" / "bertfit.json").is_file()

    # Resume both finished runs for a second epoch, the parallel one on a 2-node rendezvous: still equal.
    for run in (single, parallel):
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["train"]["epochs"] = 2
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    train(resume=single)
    _two_nodes(["--resume", str(parallel)])
    _assert_same_run(single, parallel)
    assert read_metrics(parallel)[-1]["epoch"] == 2
