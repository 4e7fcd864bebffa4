"""`bertfit predict --engine ray`: Ray Data actors on a local Ray give the labels the single process gives."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


def test_ray_actors_label_as_the_single_process(tiny_exported_run, ag_news_rows, tmp_path):
    from bertfit.infer.bulk import BulkJob, predict_file
    from bertfit.infer.predictor import Predictor
    from bertfit.infer.ray_job import predict_with_ray

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(600)), "text": [text for text, _ in ag_news_rows[:300]] * 2}), source)
    job = BulkJob(source, tmp_path / "ray-out", ("text",), id_column="id", chunk_rows=100)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = predict_with_ray(tiny_exported_run, job, actors=2, backend="pytorch", cpus_per_actor=0.5)
    finally:
        ray.shutdown()
    got = pq.read_table(out).sort_by("id")  # a folder of Parquet files, one per block
    single = BulkJob(source, tmp_path / "single.parquet", ("text",), id_column="id", chunk_rows=100)
    predict_file(Predictor(tiny_exported_run, backend="pytorch", device="cpu"), single)
    expected = pq.read_table(single.out)
    assert got.column("id").to_pylist() == list(range(600))
    assert got.column("label").to_pylist() == expected.column("label").to_pylist()


def test_actors_leave_a_cpu_to_reading_and_writing():
    from bertfit.infer.ray_job import actor_cpus

    assert actor_cpus(2, 2, 1.0) == 0.5  # two actors on two CPUs would starve the read tasks: the job would wait
    assert actor_cpus(2, 1, 1.0) == 1.0
    assert actor_cpus(16, 4, 1.0) == 1.0 and actor_cpus(16, 4, 2.0) == 2.0
    assert actor_cpus(1, 1, 1.0) == 0.5
