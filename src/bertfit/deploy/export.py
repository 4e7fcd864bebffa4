"""ONNX export of a trained run, optional int8 quantisation, and a self-check against PyTorch.

    RUN/export/
      model.onnx        input_ids, attention_mask (int64, dynamic batch and sequence) -> logits
      model.int8.onnx   the same graph with int8 weights (dynamic quantisation), when asked for
      tokenizer files   so the folder serves on its own, without the PyTorch weights
      export.json       labels, temperature, max_length, pad id, files, and the self-check

The self-check runs PyTorch and every exported file on the run's test texts and writes the largest
probability difference and each file's accuracy (and its change against PyTorch) to export.json,
so a broken or lossy export is visible before anyone serves it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertfit import __version__, artifacts
from bertfit.atomic import atomic_dir
from bertfit.data.labels import LabelMap, map_labels
from bertfit.data.presets import PRESETS
from bertfit.data.read import read_split
from bertfit.errors import BertfitError
from bertfit.infer.backends import OnnxBackend, TorchBackend
from bertfit.infer.engine import InferenceContext, tokenize_like_training
from bertfit.meta import ExportMeta
from bertfit.metrics import softmax
from bertfit.model import merge_lora

log = logging.getLogger(__name__)

FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
OPSET = 17


def export_run(run_dir: str | Path, int8: bool = True, max_rows: int | None = None,
               batch_size: int = 64) -> ExportMeta:
    """Export RUN's best model to RUN/export (fp32, and int8 when asked), check it, write export.json."""
    if max_rows is not None and max_rows < 1:
        raise BertfitError(f"max_rows: must be >= 1, got {max_rows}")
    run_dir = Path(run_dir)
    loaded = artifacts.load_model(run_dir)
    if loaded.meta.multi_label:
        raise BertfitError(f"{run_dir}: ONNX export of multi-label runs is not supported yet; "
                           "serve it with backend torch")
    merge_lora(loaded.model)  # a plain encoder + head: no PEFT needed at inference
    with atomic_dir(run_dir / artifacts.EXPORT_DIR) as staging:
        started = time.perf_counter()
        export_onnx(loaded.model, staging / FP32_FILE)
        files = {"fp32": FP32_FILE}
        if int8:
            quantize_int8(staging / FP32_FILE, staging / INT8_FILE)
            files["int8"] = INT8_FILE
        loaded.tokenizer.save_pretrained(staging)
        model = dataclasses.replace(loaded.meta, bertfit_version=__version__)
        meta = ExportMeta(model, loaded.tokenizer.pad_token_id, files, OPSET, round(time.perf_counter() - started, 2))
        meta = dataclasses.replace(meta, check=self_check(run_dir, loaded, staging, files, max_rows, batch_size))
        artifacts.write_export_meta(staging, meta)
    log.info("exported %s to %s", run_dir, run_dir / artifacts.EXPORT_DIR)
    return meta


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    """Trace the classifier with the TorchScript-based exporter; batch and sequence axes stay dynamic."""
    model = model.eval().cpu()
    # SDPA attention traces its padding mask as -inf + Softmax + IsNaN/Where (about a quarter of the int8
    # graph's CPU time); eager attention traces the plain additive mask, same numbers, fewer kernels.
    previous = _set_attention(model.encoder, "eager")
    try:
        _trace(model, path)
    finally:
        _set_attention(model.encoder, previous)


def _set_attention(encoder: torch.nn.Module, implementation: str | None) -> str | None:
    """Switch a transformers encoder's attention kernel; returns the previous one (None: not switchable)."""
    config = getattr(encoder, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if implementation is None or previous is None or not hasattr(encoder, "set_attn_implementation"):
        return previous
    try:
        encoder.set_attn_implementation(implementation)
    except (ValueError, ImportError) as error:  # an architecture without eager attention: trace as it is
        log.warning("%s: keeping %s attention for the export (%s)", type(encoder).__name__, previous, error)
    return previous


def _trace(model: torch.nn.Module, path: Path) -> None:
    # Two rows of different lengths, so no shape is constant-folded into the graph.
    input_ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    attention_mask = (input_ids != 0).to(torch.int64)
    dynamic = {0: "batch", 1: "sequence"}
    try:
        torch.onnx.export(model, (input_ids, attention_mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic,
                                                                 "logits": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    except Exception as error:  # the exporter raises many types; the user needs the model and the cause
        raise BertfitError(f"ONNX export of {type(model.encoder).__name__} failed: {error}") from error


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic quantisation: int8 weights for MatMul/Gemm, activations quantised per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime's quantiser logs a line per tensor on the root logger; keep the CLI output readable.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        # Per-channel scales keep small classifier heads accurate; QInt8 weights run fast on x86 (VNNI/AVX2).
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)


def check_texts(run_dir: Path, labels_names: tuple[str, ...], max_rows: int | None) -> tuple[str, list[str], list[int]]:
    """The run's test texts and label ids (as evaluate.py reads them); training texts when it has no test data."""
    config = artifacts.read_run_config(run_dir)
    data = dataclasses.replace(config.data, label_names=labels_names)
    if config.data.test is not None or config.data.train in PRESETS:
        split, spec = "test", config.data.test or config.data.train
    else:
        split, spec = "train", config.data.train
        log.warning("%s has no test data; the export check uses training texts", run_dir)
    part = read_split(spec, split, data)
    ids = map_labels(part, LabelMap(labels_names))
    rows = max_rows or len(part.texts)
    return split, part.texts[:rows], ids[:rows]


def self_check(run_dir: Path, loaded: artifacts.LoadedModel, folder: Path, files: dict[str, str],
               max_rows: int | None, batch_size: int) -> dict[str, Any]:
    """PyTorch vs each ONNX file on real texts: max |p_onnx - p_torch| and accuracy with its change."""
    split, texts, label_ids = check_texts(run_dir, loaded.meta.labels, max_rows)
    if not texts:
        raise BertfitError(f"{run_dir}: no texts to check the export with; its {split} data is empty")
    tokens = tokenize_like_training(loaded.meta, loaded.tokenizer, texts, label_ids)
    labels = np.asarray(label_ids)
    pad_id = loaded.tokenizer.pad_token_id

    def probabilities(backend: TorchBackend | OnnxBackend) -> np.ndarray:
        return softmax(tokens.document_logits(backend.logits(tokens)) / loaded.meta.temperature)

    reference = probabilities(TorchBackend(loaded.model, InferenceContext.cpu(pad_id, batch_size)))
    torch_accuracy = float((reference.argmax(-1) == labels).mean())
    result: dict[str, Any] = {"split": split, "rows": len(texts), "torch_accuracy": torch_accuracy}
    for kind, name in files.items():
        checked = probabilities(OnnxBackend(folder / name, pad_id, batch_size))
        accuracy = float((checked.argmax(-1) == labels).mean())
        result[kind] = {"max_probability_difference": float(np.abs(checked - reference).max()),
                        "accuracy": accuracy, "accuracy_change_points": round(100 * (accuracy - torch_accuracy), 3),
                        "same_label_fraction": float((checked.argmax(-1) == reference.argmax(-1)).mean())}
        log.info("export check %s: %s", kind, result[kind])
    return result
