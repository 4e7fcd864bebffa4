"""Prediction inside Spark: a `predict_batch_udf` that loads the run's Predictor once per executor process.

    from bertfit.infer.spark import predict_udf
    label = predict_udf("runs/news")
    df = df.withColumn("label", label("text"))                # one text column, or label("headline", "body")

Spark sends the column(s) to the UDF in Arrow batches of `batch_size` rows; the texts of several columns are
joined with a space as training joined them. `output="struct"` gives a struct of label and confidence instead
of the label alone. The run folder must be readable on every executor (a shared file system, or shipped with
the job). Needs pyspark (`pip install bertfit[scale-out]`) and Java 17 or later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bertfit.errors import BertfitError

OUTPUTS = ("label", "struct")


def predict_udf(run_dir: str | Path, output: str = "label", batch_size: int = 256, backend: str = "auto",
                threads: int | None = None) -> Any:
    """A pandas UDF of one or more text columns: each row's label (or struct<label, confidence>)."""
    try:
        from pyspark.ml.functions import predict_batch_udf
        from pyspark.sql.types import DoubleType, StringType, StructField, StructType
    except ImportError:
        raise BertfitError("predict_udf needs pyspark: pip install 'bertfit[scale-out]'") from None
    if output not in OUTPUTS:
        raise BertfitError(f"output: {output!r} is not one of {', '.join(OUTPUTS)}")
    run = str(Path(run_dir).resolve())
    return_type = StringType() if output == "label" else \
        StructType([StructField("label", StringType()), StructField("confidence", DoubleType())])
    return predict_batch_udf(lambda: _make_predict(run, output, backend, threads), return_type=return_type,
                             batch_size=batch_size)


def _make_predict(run: str, output: str, backend: str, threads: int | None) -> Callable[..., Any]:
    """Runs once per executor Python process (Spark caches what it returns): the model is loaded here only."""
    import numpy as np

    from bertfit.data.tables import join_text_columns
    from bertfit.infer.predictor import Predictor

    predictor = Predictor(run, backend=backend, threads=threads)

    def predict(*columns: np.ndarray) -> Any:
        names = tuple(str(i) for i in range(len(columns)))
        texts = join_text_columns(dict(zip(names, (list(c) for c in columns))), names)
        predictions = predictor.predict(texts)
        labels = np.array([p.label for p in predictions], dtype=object)
        if output == "label":
            return labels
        return {"label": labels, "confidence": np.array([p.confidence for p in predictions], dtype=np.float64)}

    return predict
