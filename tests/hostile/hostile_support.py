"""Shared by the hostile-input suite: one tiny trained run (copied per test that damages it) and
a real uvicorn server with the service's connection guards."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from conftest import LiveServer, tiny_flags, write_csv


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, ag_news_rows, tmp_path_factory) -> Path:
    """A finished tiny run (120 AG News rows, 1 epoch, PyTorch only), its checkpoint kept for the resume cases."""
    from bertfit.config import load_config
    from bertfit.training.recipe import train

    root = tmp_path_factory.mktemp("hostile-run")
    config = load_config(None, [
        *tiny_flags(tiny_model_dir, root), "--model.max_length", "32", "--name", "tiny", "--train.keep_checkpoint", "true",
        "--data.train", str(write_csv(root / "train.csv", ag_news_rows[:120])),
    ])
    return train(config).run_dir


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run that a test may damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "runs" / "copy"))


def guarded_server(app, settings, max_connections: int | None = None) -> LiveServer:
    """The app under uvicorn with serve()'s own config (timeouts, connection cap), on a free loopback port."""
    from bertfit.deploy.guard import guarded_protocol
    from bertfit.deploy.serve import uvicorn_config

    config = uvicorn_config(app, settings, log_level="warning")
    if max_connections is not None:
        config.http = guarded_protocol(settings.request_timeout_s, max_connections)
    return LiveServer(app, config)


def connect(live: LiveServer) -> socket.socket:
    """A raw client socket to the server (a 15 s timeout: a read the server never ends raises)."""
    return socket.create_connection(("127.0.0.1", live.port), timeout=15)
