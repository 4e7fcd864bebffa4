"""Shared fixtures: a tiny random BERT built in-process, small real data slices, CLI runner."""

from __future__ import annotations

import csv
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# An empty model registry: model.name auto chooses among installed encoders, and a test's choice must not depend
# on what this machine happens to have installed (registry tests point BERTFIT_HOME at folders of their own).
os.environ["BERTFIT_HOME"] = tempfile.mkdtemp(prefix="bertfit-home-")

from bertfit.data.presets import data_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with random weights and the embedded model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bertfit.model import resolve_model_name

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name("embedded"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def no_dropout_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT with its internal dropout off, for comparisons dropout masks would blur: different
    batch splits across ranks, or a frozen encoder in train vs eval mode."""
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    BertModel.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def write_csv(path: Path, rows: list[tuple], header: tuple = ("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def ag_news_rows() -> list[tuple[str, str]]:
    """The first 400 rows of the real AG News test set as (text, label name)."""
    names = ["World", "Sports", "Business", "Sci/Tech"]
    with open(data_dir() / "ag_news" / "test.csv", newline="", encoding="utf-8") as file:
        rows = [(f"{title} {body}", names[int(label) - 1]) for label, title, body in csv.reader(file)]
    return rows[:400]


def headline_rows(start: int, stop: int) -> list[tuple[str, str, str]]:
    """Rows of the real AG News test set as (headline, body, topic name): data with two text columns."""
    names = ["World", "Sports", "Business", "Sci/Tech"]
    with open(data_dir() / "ag_news" / "test.csv", newline="", encoding="utf-8") as file:
        rows = [(title, body, names[int(label) - 1]) for label, title, body in csv.reader(file)]
    return rows[start:stop]


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file bertfit wrote, as one dict a row."""
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.fixture
def ag_news_csv(tmp_path, ag_news_rows) -> Path:
    """train.csv (300 rows) and test.csv (100 rows) of real AG News text with string labels."""
    write_csv(tmp_path / "test.csv", ag_news_rows[300:])
    return write_csv(tmp_path / "train.csv", ag_news_rows[:300])


def tiny_flags(model_dir: Path, root: Path) -> list[str]:
    """Flags for a fast CPU run of the tiny model into root/runs (the standard method: the few-shot default
    would pick contrastive tuning for these small slices; no stacked ensemble, which TF-IDF would earn against
    a barely trained tiny model: tests of the model itself compare its own probabilities, tests/training/test_stack.py
    turns it on; no ONNX copy at the end of `bertfit train`: tests/journeys/test_predict_journeys.py checks it)."""
    return ["--model.name", str(model_dir), "--model.max_length", "64", "--output_dir", str(root / "runs"),
            "--train.method", "standard", "--train.stack", "never",
            "--cache_dir", str(root / "cache"), "--train.progress", "false", "--train.tensorboard", "false",
            "--train.batch_size", "16", "--train.lr", "1e-3", "--train.epochs", "1", "--train.onnx_copy", "false"]


KEYWORDS = {"sport": ("goal", "striker", "referee"), "money": ("shares", "profit", "investor"),
            "space": ("rocket", "orbit", "astronaut")}
FILLER = ("the of and to in that it was for on are with as his they be at one have this from or had by word but what "
          "some we can out other were all there when up use your how said an each she which do their time if will way "
          "about many then them write would like so these her long make thing see him two has look more day could go "
          "come did number sound no most people my over know water than call first who may down side been now find").split()


def keyword_rows(count: int, seed: int, words: int = 40) -> list[tuple[str, str]]:
    """Texts of common filler words with one keyword of their label among them: TF-IDF reads them at once,
    a barely trained tiny model cannot. 40 words are longer than 32 tokens: read in sliding windows."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = list(KEYWORDS)[index % len(KEYWORDS)]
        text = [rng.choice(FILLER) for _ in range(words)]
        text[rng.randrange(words)] = rng.choice(KEYWORDS[label])
        rows.append((" ".join(text), label))
    return rows


def keyword_flags(model_dir: Path, root: Path, name: str, stack: str) -> list[str]:
    """A barely trained tiny run (2 steps at lr 1e-5, windows of 32 tokens) on the keyword task in root/train.csv
    and root/test.csv, with train.stack `stack`: TF-IDF beats its model on validation."""
    write_csv(root / "train.csv", keyword_rows(600, seed=1))  # 120 validation rows: train.stack auto decides on >= 100
    write_csv(root / "test.csv", keyword_rows(45, seed=2))
    flags = tiny_flags(model_dir, root)
    flags[flags.index("--train.stack") + 1] = stack
    return flags + ["--name", name, "--data.train", str(root / "train.csv"), "--data.test", str(root / "test.csv"),
                    "--model.max_length", "32", "--model.window_stride", "15", "--train.max_steps", "2",
                    "--train.lr", "1e-5", "--train.metric", "accuracy", "--data.validation_fraction", "0.2"]


@pytest.fixture
def tiny_overrides(tiny_model_dir, tmp_path) -> list[str]:
    """Flags for a fast CPU run of the tiny model into tmp_path/runs."""
    return tiny_flags(tiny_model_dir, tmp_path)


@pytest.fixture(scope="session")
def tiny_exported_run(tiny_model_dir, ag_news_rows, tmp_path_factory) -> Path:
    """A tiny run (300 AG News rows, 1 epoch) exported to ONNX fp32 + int8, shared by the export and serve tests."""
    pytest.importorskip("onnxruntime")
    from bertfit.config import load_config
    from bertfit.deploy.export import export_run
    from bertfit.training.recipe import train

    root = tmp_path_factory.mktemp("exported")
    config = load_config(None, [
        *tiny_flags(tiny_model_dir, root), "--name", "tiny",
        "--data.train", str(write_csv(root / "train.csv", ag_news_rows[:300])),
        "--data.test", str(write_csv(root / "test.csv", ag_news_rows[300:])),
    ])
    run_dir = train(config).run_dir
    export_run(run_dir, int8=True, max_rows=60)
    return run_dir


class LiveServer:
    """uvicorn in a thread, bound to 127.0.0.1 on a port the OS picks."""

    def __init__(self, app, config=None):  # config: a uvicorn.Config of `app` (default: uvicorn's defaults)
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(config or uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "LiveServer":
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
