"""data.streaming: every row once per epoch, bucketed batches, a normal run, exact resume, clear bad-row errors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertfit.artifacts import read_metrics
from bertfit.config import load_config
from bertfit.data.batching import PAD_MULTIPLE
from bertfit.data.streaming import StreamedSplit, load_streamed
from bertfit.errors import BertfitError, ConfigError
from bertfit.model import load_tokenizer
from bertfit.runtime.distributed import Distributed
from bertfit.training.recipe import train
from conftest import write_csv
from interrupts import stop_at

NAMES = ["Business", "Sci/Tech", "Sports", "World"]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows), encoding="utf-8")
    return path


@pytest.fixture
def stream_files(tmp_path, ag_news_rows):
    """250 AG News training rows as CSV, JSONL and Parquet (row groups of 100), 50 validation rows as CSV."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, labels = zip(*ag_news_rows[:250])
    pq.write_table(pa.table({"text": list(texts), "label": list(labels)}), tmp_path / "train.parquet", row_group_size=100)
    return {"csv": write_csv(tmp_path / "train.csv", ag_news_rows[:250]), "parquet": tmp_path / "train.parquet",
            "jsonl": _write_jsonl(tmp_path / "train.jsonl", ag_news_rows[:250]),
            "validation": write_csv(tmp_path / "validation.csv", ag_news_rows[250:300])}


def _config(tiny_overrides, train_file, validation, *extra):
    return load_config(None, tiny_overrides + [
        "--data.streaming", "true", "--data.train", str(train_file), "--data.validation", str(validation),
        "--data.label_names", ",".join(NAMES), "--data.shuffle_buffer_rows", "40", *extra])


def _stream(config) -> StreamedSplit:
    return load_streamed(config, load_tokenizer(config.model.name))[1]


def _epoch_texts(stream: StreamedSplit, epoch: int, dist: Distributed, tokenizer) -> list[str]:
    texts = []
    for batch in stream.batches(epoch, 0, dist, tokenizer.pad_token_id):
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            texts.append(tokenizer.decode(ids[mask.bool()], skip_special_tokens=True))
    return texts


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_every_row_once_per_epoch_across_chunks_and_ranks(tiny_overrides, stream_files, ag_news_rows, kind):
    config = _config(tiny_overrides, stream_files[kind], stream_files["validation"])
    stream, tokenizer = _stream(config), load_tokenizer(config.model.name)
    assert len(stream) == 250 and stream.chunk_rows == 48  # 40 rounded up to whole batches of 16: 6 chunks
    expected = Counter(tokenizer.decode(tokenizer(text, truncation=True, max_length=64)["input_ids"],
                                        skip_special_tokens=True) for text, _ in ag_news_rows[:250])
    one_process = _epoch_texts(stream, 0, Distributed(), tokenizer)
    two_ranks = [_epoch_texts(stream, 0, Distributed(rank=rank, world_size=2), tokenizer) for rank in (0, 1)]
    assert Counter(one_process) == expected
    assert Counter(two_ranks[0]) + Counter(two_ranks[1]) == expected
    assert set(two_ranks[0]).isdisjoint(two_ranks[1])
    assert _epoch_texts(stream, 1, Distributed(), tokenizer) != one_process  # a new shuffle each epoch


def test_batches_are_bucketed_padded_and_sized_as_announced(tiny_overrides, stream_files):
    config = _config(tiny_overrides, stream_files["csv"], stream_files["validation"], "--train.bucket_batches", "3")
    stream = _stream(config)
    batches = list(stream.batches(0, 0, Distributed(), 0))
    assert [len(batch["labels"]) for batch in batches] == stream.batch_sizes(0)
    widths = [batch["input_ids"].shape[1] for batch in batches]
    assert all(width % PAD_MULTIPLE == 0 for width in widths)
    lengths = [batch["attention_mask"].sum(1).numpy() for batch in batches]
    # Bucketing: a batch's texts are close in length, far closer than the spread of the whole stream.
    spread_in_batches = np.mean([lengths_of.max() - lengths_of.min() for lengths_of in lengths])
    all_lengths = np.concatenate(lengths)
    assert spread_in_batches < (all_lengths.max() - all_lengths.min()) / 2
    assert all(width - PAD_MULTIPLE < lengths_of.max() <= width for width, lengths_of in zip(widths, lengths))


def test_reader_holds_at_most_one_chunk(tiny_overrides, stream_files):
    stream = _stream(_config(tiny_overrides, stream_files["csv"], stream_files["validation"]))
    for _ in stream.batches(0, 0, Distributed(), 0):
        pass
    assert 0 < stream.max_rows_held <= stream.chunk_rows < len(stream)


def test_streamed_training_makes_a_normal_run(tiny_overrides, stream_files):
    result = train(_config(tiny_overrides, stream_files["jsonl"], stream_files["validation"], "--name", "streamed",
                           "--data.test", str(stream_files["validation"]), "--data.max_train_rows", "100"))
    assert result.steps == 7 and not result.interrupted  # ceil(100 / 16) batches, one epoch
    for name in ("config.yaml", "results.json", "metrics.jsonl", "model/bertfit.json"):
        assert (result.run_dir / name).is_file(), name
    rows = json.loads((result.run_dir / "results.json").read_text())["rows"]
    assert rows == {"train": 100, "validation": 50, "test": 50}
    assert 0 <= result.test["accuracy"] <= 1


def test_resumed_stream_matches_uninterrupted(tiny_overrides, stream_files, monkeypatch):
    extra = ("--train.epochs", "2", "--train.eval_every_steps", "4", "--train.checkpoint_every_steps", "0",
             "--train.keep_checkpoint", "true",
             "--train.grad_accum_steps", "2", "--data.max_train_rows", "128")
    straight = train(_config(tiny_overrides, stream_files["csv"], stream_files["validation"], "--name", "straight", *extra))
    assert straight.steps == 8  # 8 batches of 16 per epoch, 2 per step, 2 epochs
    with monkeypatch.context() as patch:
        stop_at(patch, 2)  # after batch 4: inside the second chunk (3 batches) of the first epoch
        stopped = train(_config(tiny_overrides, stream_files["csv"], stream_files["validation"], "--name", "stopped", *extra))
    assert stopped.interrupted and stopped.steps == 2
    resumed = train(resume=stopped.run_dir)
    assert resumed.steps == 8 and not resumed.interrupted
    expected = load_file(straight.run_dir / "checkpoint" / "model.safetensors")
    actual = load_file(resumed.run_dir / "checkpoint" / "model.safetensors")
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in read_metrics(resumed.run_dir)] == [4, 8]
    assert resumed.validation["loss"] == pytest.approx(straight.validation["loss"], rel=1e-5)


@pytest.mark.parametrize("bad_row, message", [(("  ", "World"), "row 100: empty text"),
                                              (("some news", "Weather"), "row 100: label 'Weather' is not in the label set")])
def test_bad_row_deep_in_the_stream_names_file_and_row(tiny_overrides, stream_files, ag_news_rows, tmp_path,
                                                       bad_row, message):
    rows = list(ag_news_rows[:250])
    rows[99] = bad_row  # in the third chunk of 48 rows
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(BertfitError, match=f"bad.csv {message}"):
        _stream(_config(tiny_overrides, path, stream_files["validation"]))


def test_missing_requirements_are_listed_by_the_config(tiny_overrides):
    """Every streaming conflict at once, from the config alone: no file is read, no tokenizer loaded."""
    with pytest.raises(ConfigError) as error:
        load_config(None, tiny_overrides + ["--data.streaming", "true", "--data.train", "ag_news",
                                            "--train.class_weights", "balanced", "--model.window_stride", "30"])
    for field in ("data.label_names", "data.validation", "data.train", "train.class_weights", "model.window_stride"):
        assert field in str(error.value)


def test_torchrun_two_ranks_match_one_process(flags_for_ranks):
    from launch import TORCHRUN, _assert_same_run, _run, _single

    single = _single(flags_for_ranks, "single")
    _run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "bertfit.cli", "train", *flags_for_ranks,
          "--name", "ddp"])
    _assert_same_run(single, single.parent / "ddp")


@pytest.fixture
def flags_for_ranks(no_dropout_model_dir, tiny_overrides, stream_files) -> list[str]:
    # 64 rows in batches of 7 and chunks of 21: the last global batch has 1 row, one rank's share is empty.
    return tiny_overrides + ["--model.name", str(no_dropout_model_dir), "--model.dropout", "0",
                             "--data.streaming", "true", "--data.train", str(stream_files["csv"]),
                             "--data.validation", str(stream_files["validation"]), "--data.label_names", ",".join(NAMES),
                             "--data.max_train_rows", "64", "--data.shuffle_buffer_rows", "20",
                             "--train.batch_size", "7", "--train.eval_every_steps", "5", "--train.keep_checkpoint", "true",
                             "--train.precision", "fp32"]  # the tolerances are fp32's (auto is bf16 on a CPU with AMX)
