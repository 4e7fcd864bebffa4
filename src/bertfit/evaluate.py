"""Evaluate a trained run on a labelled split: `evaluate_run("runs/x", "ag_news")`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bertfit import artifacts
from bertfit.batching import tokenize
from bertfit.data import map_labels, read_split
from bertfit.errors import BertfitError
from bertfit.metrics import classification_metrics
from bertfit.predict import Predictor, batch_logits


def evaluate_run(run_dir: str | Path, data: str | None = None, split: str = "test", batch_size: int = 128,
                 device: str = "auto", max_rows: int | None = None) -> dict[str, Any]:
    """Metrics of the run's best model on `data` (a file, preset or hub name; default: the run's own test
    data), with the run's column mapping and label set. Written to RUN/eval/<split>.json."""
    run_dir = Path(run_dir)
    config = artifacts.read_run_config(run_dir)
    spec = data or getattr(config.data, split, None) or (config.data.train if split != "train" else None)
    if spec is None:
        raise BertfitError(f"{run_dir}: the run has no {split} data; pass --data FILE")
    # Metrics describe the trained PyTorch model; the export checks itself (export.json).
    predictor = Predictor(run_dir, device=device, batch_size=batch_size, backend="torch")
    part = read_split(spec, split, dataclasses.replace(config.data, label_names=predictor.labels.names))
    labels = map_labels(part, predictor.labels)
    texts = part.texts[:max_rows] if max_rows else part.texts
    labels = labels[: len(texts)]
    tokens = tokenize(texts, labels, predictor.tokenizer, predictor.meta["max_length"], cache_dir=None)
    logits = batch_logits(predictor.model, tokens, predictor.tokenizer.pad_token_id, batch_size,
                          predictor.device, predictor.precision)
    metrics = classification_metrics(logits / predictor.temperature, tokens.labels, predictor.labels.names)
    result = {"data": part.source, "split": split, "rows": len(texts), **metrics}
    artifacts.write_json_atomic(run_dir / "eval" / f"{split}.json", result)
    return result
