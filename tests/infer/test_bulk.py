"""Prediction of a file in chunks: equal to the in-memory predict, resumed == uninterrupted, shards add up to
the whole, one chunk held at a time."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertfit.errors import BertfitError
from bertfit.infer import bulk
from bertfit.infer.bulk import BulkJob, predict_file
from bertfit.infer.predictor import Predictor

ROWS, CHUNK = 1200, 200  # six chunks


@pytest.fixture(scope="module")
def predictor(tiny_exported_run) -> Predictor:
    # PyTorch: int8 ONNX quantises activations per model call, so its probabilities move with how texts are batched
    return Predictor(tiny_exported_run, backend="pytorch", device="cpu")


@pytest.fixture(scope="module")
def big_file(ag_news_rows, tmp_path_factory):
    """1200 real AG News rows (the 400 repeated, each copy marked) with an id and a topic column, as Parquet."""
    path = tmp_path_factory.mktemp("bulk") / "big.parquet"
    texts = [f"{text} ({copy})" for copy in range(ROWS // len(ag_news_rows)) for text, _ in ag_news_rows]
    topics = [label for _ in range(ROWS // len(ag_news_rows)) for _, label in ag_news_rows]
    pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(ROWS)], "text": texts, "topic": topics}), path,
                   row_group_size=350)  # row groups that do not line up with chunks
    return path


@pytest.fixture(scope="module")
def whole(predictor, big_file, tmp_path_factory):
    """The uninterrupted streamed output and the in-memory predictions of the same texts."""
    out = tmp_path_factory.mktemp("whole") / "preds.parquet"
    result = predict_file(predictor, BulkJob(big_file, out, ("text",), id_column="id", keep=("topic",), chunk_rows=CHUNK))
    texts = pq.read_table(big_file, columns=["text"]).column("text").to_pylist()
    return result, pq.read_table(out), predictor.predict(texts)


def test_streamed_output_equals_the_in_memory_predict(whole, big_file, predictor):
    result, table, in_memory = whole
    source = pq.read_table(big_file)
    assert result.output_rows == result.rows == ROWS and result.chunks == ROWS // CHUNK
    assert table.column_names == ["id", "topic", "text", "label", "confidence",
                                  *(f"prob_{name}" for name in predictor.labels.names)]
    assert table.column("id").to_pylist() == source.column("id").to_pylist()
    assert table.column("topic").to_pylist() == source.column("topic").to_pylist()
    assert table.column("label").to_pylist() == [p.label for p in in_memory]
    probabilities = np.array([table.column(f"prob_{name}").to_pylist() for name in predictor.labels.names]).T
    np.testing.assert_allclose(probabilities, [list(p.probabilities.values()) for p in in_memory], atol=1e-6)
    assert not result.out.with_name(result.out.name + bulk.PARTS_SUFFIX).exists()  # parts are gone once joined


def test_one_chunk_is_read_at_a_time(predictor, big_file, tmp_path, monkeypatch):
    pulled, seen = [0], []
    real = bulk.read_records

    def counting(path, config):
        for record in real(path, config):
            pulled[0] += 1
            yield record

    monkeypatch.setattr(bulk, "read_records", counting)
    monkeypatch.setattr(predictor, "predict", lambda texts, real=predictor.predict: seen.append((pulled[0], len(texts)))
                        or real(texts))
    result = predict_file(predictor, BulkJob(big_file, tmp_path / "p.parquet", ("text",), chunk_rows=CHUNK))
    assert result.max_rows_held == CHUNK
    predicted = np.cumsum([rows for _, rows in seen])
    assert [rows_pulled for rows_pulled, _ in seen] == list(predicted)  # never a row beyond the chunk in hand


def test_an_interrupted_run_resumes_to_the_same_output(whole, predictor, big_file, tmp_path, monkeypatch):
    out, calls = tmp_path / "preds.parquet", []
    real = predictor.predict

    def crash_on_third(texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third chunk is predicted
        return real(texts)

    job = BulkJob(big_file, out, ("text",), id_column="id", keep=("topic",), chunk_rows=CHUNK)
    monkeypatch.setattr(predictor, "predict", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        predict_file(predictor, job)
    monkeypatch.setattr(predictor, "predict", real)
    assert not out.exists() and len(list(job.parts.glob("chunk-*.parquet"))) == 2
    assert json.loads((job.parts / bulk.PROGRESS_FILE).read_text())["chunks_done"] == 2
    with pytest.raises(BertfitError, match="--resume"):  # never silently started over
        predict_file(predictor, job)
    with pytest.raises(BertfitError, match="chunk_rows changed"):
        predict_file(predictor, BulkJob(big_file, out, ("text",), id_column="id", keep=("topic",), chunk_rows=300),
                     resume=True)
    result = predict_file(predictor, job, resume=True)
    assert (result.resumed_chunks, result.chunks) == (2, ROWS // CHUNK - 2)
    table = pq.read_table(out)
    assert table.equals(whole[1])
    assert len(set(table.column("id").to_pylist())) == ROWS


def test_shards_together_are_the_whole(whole, predictor, big_file, tmp_path):
    shards = [pq.read_table(tmp_path / f"p{i}.parquet") for i in range(2) if predict_file(
        predictor, BulkJob(big_file, tmp_path / f"p{i}.parquet", ("text",), id_column="id", keep=("topic",),
                           chunk_rows=CHUNK, shard=(i, 2)))]
    assert [s.num_rows for s in shards] == [3 * CHUNK, 3 * CHUNK]
    assert shards[0].column("id")[CHUNK].as_py() == f"doc-{2 * CHUNK}"  # chunks 0, 2, 4 then 1, 3, 5
    joined = pa.concat_tables(shards).to_pylist()
    assert sorted(joined, key=lambda row: int(row["id"].split("-")[1])) == whole[1].to_pylist()


def test_more_shards_than_chunks_writes_an_empty_output(predictor, big_file, tmp_path):
    result = predict_file(predictor, BulkJob(big_file, tmp_path / "p.csv", ("text",), chunk_rows=ROWS, shard=(1, 2)))
    assert result.output_rows == 0
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as file:
        assert next(csv.reader(file))[:4] == ["row", "text", "label", "confidence"]


def test_cli_csv_in_and_jsonl_or_csv_out_with_row_numbers(predictor, tiny_exported_run, ag_news_rows, tmp_path, capsys):
    from bertfit.cli.main import main
    from conftest import write_csv

    rows = ag_news_rows[:250]
    source = write_csv(tmp_path / "in.csv", rows, header=("text", "topic"))
    run = str(tiny_exported_run)
    assert main(["predict", run, "--file", str(source), "--out", str(tmp_path / "p.jsonl"), "--chunk-rows", "100",
                 "--keep", "topic", "--no-text", "--backend", "pytorch"]) == 0
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = predictor.predict([text for text, _ in rows])
    assert [r["row"] for r in records] == list(range(1, 251)) and "text" not in records[0]
    assert [r["topic"] for r in records] == [label for _, label in rows]
    assert [r["label"] for r in records] == [p.label for p in expected]
    assert main(["predict", run, "--file", str(source), "--out", str(tmp_path / "p.csv"), "--chunk-rows", "100",
                 "--backend", "pytorch"]) == 0
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as file:
        written = list(csv.DictReader(file))
    assert [row["text"] for row in written] == [text.strip() for text, _ in rows]  # joined as training joins
    assert [float(row["confidence"]) for row in written] == pytest.approx([p.confidence for p in expected], abs=1e-6)
    capsys.readouterr()
    assert main(["predict", run, "hello", "--resume"]) == 2
    assert "--resume needs --file" in capsys.readouterr().err
    assert main(["predict", run, "--file", str(source), "--out", str(tmp_path / "q.csv"), "--id-column", "nope"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err


def test_an_empty_text_is_refused_with_its_row(predictor, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["good news", "fine", "  ", "more"]))
    with pytest.raises(BertfitError, match=r"row 3: empty text"):
        predict_file(predictor, BulkJob(source, tmp_path / "p.parquet", ("text",), chunk_rows=2))
