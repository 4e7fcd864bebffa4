"""`bertfit.infer.spark.predict_udf`: a local[2] Spark session labels a DataFrame as the Predictor does."""

from __future__ import annotations

import shutil
import sys

import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java", allow_module_level=True)


def test_predict_udf_labels_as_the_predictor(tiny_exported_run, ag_news_rows, monkeypatch):
    from pyspark.sql import SparkSession

    from bertfit.infer.predictor import Predictor
    from bertfit.infer.spark import predict_udf

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # executors need bertfit: this interpreter has it
    rows = [(i, text) for i, (text, _) in enumerate(ag_news_rows[:120])]
    spark = (SparkSession.builder.master("local[2]").appName("bertfit-test").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    try:
        df = spark.createDataFrame(rows, "id long, text string").repartition(2)
        labelled = df.withColumn("label", predict_udf(tiny_exported_run, batch_size=50, backend="pytorch")("text"))
        both = df.withColumn("p", predict_udf(tiny_exported_run, output="struct", backend="pytorch")("text"))
        got = {row.id: row.label for row in labelled.collect()}
        structs = {row.id: (row.p.label, row.p.confidence) for row in both.collect()}
    finally:
        spark.stop()
    expected = Predictor(tiny_exported_run, backend="pytorch", device="cpu").predict([text for _, text in rows])
    assert [got[i] for i, _ in rows] == [p.label for p in expected]
    assert [structs[i][0] for i, _ in rows] == [p.label for p in expected]
    assert [structs[i][1] for i, _ in rows] == pytest.approx([p.confidence for p in expected], abs=1e-5)
