"""Inference backends: the same `logits(split)` from the PyTorch model or an exported copy of it.

    torch            the PyTorch classifier (any device)
    onnx-fp32/int8   ONNX Runtime on model.onnx / model.int8.onnx (dynamic int8 quantisation)
    openvino-fp32/int8  OpenVINO on the same graphs, compiled for this CPU
    ct2-fp32/int8    CTranslate2's BERT encoder (ct2/), pooling and head in NumPy (ct2/head.npz)
    static           a static student of the model (bertfit.infer.static): averaged token vectors, in NumPy

Each exported backend needs its runtime package; `unavailable(engine)` says why one cannot run here.

The exported backends need neither torch nor transformers: a cold `bertfit predict` on an export skips their imports.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bertfit.data.batching import TokenizedSplit, eval_batches, pad_rows
from bertfit.errors import BertfitError
from bertfit.infer import ENGINE_PACKAGES, STATIC, engine_of
from bertfit.infer.static import StaticBackend, load_static
from bertfit.meta import ExportMeta

if TYPE_CHECKING:
    import torch

    from bertfit.infer.engine import InferenceContext


class TorchBackend:
    """The PyTorch classifier on the context's device."""

    name = "pytorch"

    def __init__(self, model: torch.nn.Module, context: InferenceContext):
        self.model, self.context = model.to(context.device), context

    def logits(self, split: TokenizedSplit) -> np.ndarray:
        from bertfit.infer.engine import row_logits

        return row_logits(self.model, split, self.context)


def unavailable(engine: str) -> str | None:
    """Why `engine` (onnx, openvino, ct2) cannot run on this machine, or None when it can."""
    module, extra = ENGINE_PACKAGES[engine]
    try:
        importlib.import_module(module)
    except ImportError as error:  # missing, or a wheel this CPU / OS cannot load
        return f"{module} cannot be imported ({error}); pip install 'bertfit[{extra}]'"
    return None


def _require(engine: str):
    reason = unavailable(engine)
    if reason is not None:
        raise BertfitError(f"the {engine} backend needs its runtime: {reason}")
    return importlib.import_module(ENGINE_PACKAGES[engine][0])


class GraphBackend:
    """An exported model run by one engine: numpy in, logits out, batched like the engine (longest rows first)."""

    def __init__(self, name: str, runner: OnnxRunner | OpenVinoRunner | CTranslate2Runner, pad_id: int, batch_size: int):
        self.name, self.runner, self.pad_id, self.batch_size = name, runner, pad_id, batch_size

    def logits(self, split: TokenizedSplit) -> np.ndarray:
        """In numpy: no torch on this path."""
        outputs = np.zeros((len(split), self.runner.width), dtype=np.float32)
        for rows in eval_batches(split.lengths, self.batch_size):
            outputs[rows] = self.runner.run(*pad_rows(split, rows, self.pad_id))
        return outputs


class OnnxRunner:
    """An exported model file run by ONNX Runtime on the CPU."""

    def __init__(self, path: Path, threads: int | None):
        onnxruntime = _require("onnx")
        options = onnxruntime.SessionOptions()
        # Idle ORT worker threads spin by default; in a server they would starve the event loop and the
        # tokenizer of the same cores between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.width = self.session.get_outputs()[0].shape[-1]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]


class OpenVinoRunner:
    """An exported graph (ONNX or OpenVINO IR) compiled by OpenVINO for this CPU, fp32 arithmetic outside int8 ops."""

    def __init__(self, path: Path, threads: int | None):
        openvino = _require("openvino")
        # f32: on AMX / AVX-512 BF16 CPUs OpenVINO would otherwise run in bf16, unlike what was checked.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = openvino.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output("logits")
        self.width = int(self.output.get_partial_shape()[-1].get_length())

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.request.infer({"input_ids": input_ids, "attention_mask": attention_mask})[self.output].copy()


class CTranslate2Runner:
    """CTranslate2's encoder (its own int8/fp32 kernels) + the classifier's pooling and head in NumPy."""

    def __init__(self, folder: Path, threads: int | None, int8: bool):
        self.ctranslate2 = _require("ct2")
        self.encoder = self.ctranslate2.Encoder(str(folder), "cpu", compute_type="int8" if int8 else "float32",
                                                intra_threads=threads or 0)
        with np.load(Path(folder) / CT2_HEAD) as head:
            self.weight, self.bias, self.pooling = head["weight"], head["bias"], str(head["pooling"])
        self.width = self.bias.shape[0]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        view = self.ctranslate2.StorageView.from_array
        lengths = attention_mask.sum(1).astype(np.int32)
        output = self.encoder.forward_batch(view(np.ascontiguousarray(input_ids, dtype=np.int32)), view(lengths))
        hidden = np.asarray(output.last_hidden_state)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask[..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
        return (pooled @ self.weight.T + self.bias).astype(np.float32)


CT2_HEAD = "head.npz"  # weight, bias and pooling of the classifier, beside CTranslate2's model.bin


def open_export(folder: Path, export: ExportMeta, variant: str, batch_size: int,
                threads: int | None = None) -> GraphBackend | StaticBackend:
    """The backend for one exported variant (onnx-int8, openvino-fp32, static, ...) of the export in `folder`."""
    name = export.files.get(variant)
    if name is None or not (Path(folder) / name).exists():
        exported = ", ".join(export.files) or "none"
        how = "--target auto --student STUDENT_RUN" if variant == STATIC else \
            f"--target {engine_of(variant)}` or `--target auto"
        raise BertfitError(f"{folder}: no {variant} export (exported: {exported}); run `bertfit export RUN {how}`")
    path, engine = Path(folder) / name, engine_of(variant)
    if variant == STATIC:  # NumPy on the teacher's tokens: no engine, no threads to set
        return StaticBackend(load_static(path, len(export.model.labels)))
    runners = {"ct2": lambda: CTranslate2Runner(path, threads, int8=variant.endswith("int8")),
               "openvino": lambda: OpenVinoRunner(path, threads), "onnx": lambda: OnnxRunner(path, threads)}
    if engine not in runners:
        raise BertfitError(f"{folder}: {variant} names the engine {engine!r}, which bertfit does not know; "
                           "export the run again")
    try:
        runner = runners[engine]()
    except BertfitError:
        raise
    except Exception as error:  # each engine raises its own types for a truncated or zeroed file
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise BertfitError(f"{path}: damaged {variant} export ({first}); run `bertfit export` again") from None
    return GraphBackend(variant, runner, export.pad_token_id, batch_size)
