"""Shared by the hostile-input suite: one tiny trained run (copied per test that damages it) and
a real uvicorn server with the service's connection guards."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import write_csv


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, ag_news_rows, tmp_path_factory) -> Path:
    """A finished tiny run (120 AG News rows, 1 epoch, PyTorch only)."""
    from bertfit.config import load_config
    from bertfit.training.recipe import train

    root = tmp_path_factory.mktemp("hostile-run")
    config = load_config(None, [
        "--model.name", str(tiny_model_dir), "--model.max_length", "32", "--output_dir", str(root / "runs"),
        "--cache_dir", str(root / "cache"), "--train.progress", "false", "--train.tensorboard", "false",
        "--train.batch_size", "16", "--train.epochs", "1", "--name", "tiny",
        "--data.train", str(write_csv(root / "train.csv", ag_news_rows[:120])),
    ])
    return train(config).run_dir


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run that a test may damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "runs" / "copy"))


class GuardedServer:
    """The app under uvicorn with serve()'s own config (timeouts, connection cap), on a free loopback port."""

    def __init__(self, app, settings, max_connections: int | None = None):
        import uvicorn

        from bertfit.deploy.guard import guarded_protocol
        from bertfit.deploy.serve import uvicorn_config

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(app, settings, log_level="warning")
        if max_connections is not None:
            config.http = guarded_protocol(settings.request_timeout_s, max_connections)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "GuardedServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=15)
