"""Pick the fastest backend on this machine whose accuracy stays within a bound of PyTorch's.

Every candidate (PyTorch and each exported variant) is timed on the same texts in batches of the
serving shape (what the micro-batcher merges under load), in interleaved rounds so that other work on
the machine slows all of them alike; the speed of a candidate is its median texts/s over the rounds.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Any

from bertfit.deploy.check import Backend
from bertfit.infer.engine import tokenize_like_training
from bertfit.meta import ModelMeta, accuracy_loss_problem

log = logging.getLogger(__name__)


def time_backends(backends: dict[str, Backend], meta: ModelMeta, tokenizer: Any, texts: list[str],
                  batch_size: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Median and range of model-only texts/s per backend, and of its per-round ratio to PyTorch."""
    chunks = [tokenize_like_training(meta, tokenizer, texts[start:start + batch_size])
              for start in range(0, len(texts), batch_size)]
    for backend in backends.values():
        backend.logits(chunks[0])  # warm-up: first calls allocate buffers and pick kernels
    speeds: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(rounds):
        for name, backend in backends.items():
            started = time.perf_counter()
            for chunk in chunks:
                backend.logits(chunk)
            speeds[name].append(len(texts) / (time.perf_counter() - started))
    timings = {}
    for name, values in speeds.items():
        ratios = [value / base for value, base in zip(values, speeds["torch"])]
        timings[name] = {"texts_per_second": round(statistics.median(values), 2),
                         "texts_per_second_range": [round(min(values), 2), round(max(values), 2)],
                         "vs_torch": round(statistics.median(ratios), 3),
                         "vs_torch_range": [round(min(ratios), 3), round(max(ratios), 3)]}
        log.info("timing %s: %s", name, timings[name])
    return timings


def pick(timings: dict[str, dict[str, Any]], check: dict[str, Any], max_accuracy_loss: float) -> tuple[str, list[str]]:
    """The fastest candidate that passes the accuracy rule `predict` and `serve` apply too (meta.accuracy_loss_problem:
    an accuracy change >= -max_accuracy_loss points); PyTorch always qualifies."""
    eligible = [name for name in timings
                if name == "torch" or accuracy_loss_problem(check, name, max_accuracy_loss) is None]
    return max(eligible, key=lambda name: timings[name]["vs_torch"]), eligible


def selection_record(choice: str, eligible: list[str], timings: dict[str, dict[str, Any]],
                     settings: dict[str, Any], skipped: dict[str, str], cpu: dict[str, Any]) -> dict[str, Any]:
    """What export.json keeps about the choice: the machine, how it was timed, every figure, what was left out."""
    return {"choice": choice, "cpu": cpu, "load_average": [round(x, 2) for x in os.getloadavg()],
            "settings": settings, "timings": timings, "eligible": eligible, "skipped": skipped,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
