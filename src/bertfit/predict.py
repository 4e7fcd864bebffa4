"""Batch prediction from a run directory, model folder or export folder (imports nothing from training).

`Predictor(path).predict(texts)` picks a backend: ONNX Runtime when the run has an export
(RUN/export, written by `bertfit export`) and the device is the CPU, PyTorch otherwise; `backend=`
forces one. Both backends run length-sorted batches (longest first) and return rows in input order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bertfit.artifacts import META_FILE, load_model, read_model_meta
from bertfit.batching import PaddedBatches, TokenizedSplit, eval_batches, loader, tokenize
from bertfit.data import LabelMap
from bertfit.errors import BertfitError
from bertfit.metrics import sigmoid, softmax
from bertfit.runtime import Precision, autocast, choose_device, choose_precision, set_cpu_threads
from bertfit.windows import WindowSettings

log = logging.getLogger(__name__)

EXPORT_DIR, EXPORT_META = "export", "export.json"
BACKENDS = ("auto", "torch", "onnx", "onnx-fp32", "onnx-int8")


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    labels: tuple[str, ...] | None = None  # multi-label models: every label at or above its threshold


def tokenize_like_training(meta: dict[str, Any], tokenizer: Any, texts: list[str], labels=None) -> TokenizedSplit:
    """Tokens cut as the model was trained: max_length, head+tail share and sliding windows from its
    bertfit.json (or export.json); with windows, pass the rows' logits through split.document_logits."""
    labels = np.zeros(len(texts), dtype=np.int64) if labels is None else labels
    return tokenize(list(texts), labels, tokenizer, meta["max_length"], cache_dir=None,
                    keep_head=meta.get("keep_head", 1.0), windows=WindowSettings.from_meta(meta))


@torch.inference_mode()
def batch_outputs(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], width: int, split: TokenizedSplit,
                  pad_id: int, batch_size: int, device: torch.device, precision: Precision) -> np.ndarray:
    """forward(input_ids, attention_mask) for every row of `split`, in row order, as float32 (batches
    run longest first, so memory peaks early and padding is minimal, then rows are put back)."""
    outputs = np.zeros((len(split), width), dtype=np.float32)
    for batch in loader(split, eval_batches(split.lengths, batch_size), pad_id, pin_memory=device.type == "cuda"):
        with autocast(device, precision):
            out = forward(batch["input_ids"].to(device, non_blocking=True),
                          batch["attention_mask"].to(device, non_blocking=True))
        outputs[batch["rows"].numpy()] = out.float().cpu().numpy()
    return outputs


def batch_logits(model: torch.nn.Module, split: TokenizedSplit, pad_id: int, batch_size: int,
                 device: torch.device, precision: Precision) -> np.ndarray:
    """Logits for every row of `split`, in row order, with the model in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    try:
        return batch_outputs(model, model.head.out_features, split, pad_id, batch_size, device, precision)
    finally:
        model.train(was_training)


class TorchBackend:
    """The PyTorch classifier on a device."""

    def __init__(self, model: torch.nn.Module, pad_id: int, batch_size: int, device: torch.device | None = None,
                 precision: Precision | None = None):
        self.device = device or torch.device("cpu")
        self.precision = precision or Precision("fp32", None)
        self.model, self.pad_id, self.batch_size = model.to(self.device), pad_id, batch_size
        self.name = "torch"

    def logits(self, split: TokenizedSplit) -> np.ndarray:
        return batch_logits(self.model, split, self.pad_id, self.batch_size, self.device, self.precision)


class OnnxBackend:
    """An exported model file run by ONNX Runtime on the CPU."""

    def __init__(self, path: Path, pad_id: int, batch_size: int, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise BertfitError("the ONNX backend needs onnxruntime: pip install 'bertfit[serve]'") from None
        options = onnxruntime.SessionOptions()
        # Idle ORT worker threads spin by default; in a server they would starve the event loop and the
        # tokenizer of the same cores between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.pad_id, self.batch_size = pad_id, batch_size
        self.name = "onnx-int8" if ".int8." in Path(path).name else "onnx-fp32"

    def logits(self, split: TokenizedSplit) -> np.ndarray:
        padded = PaddedBatches(split, self.pad_id)
        pieces, order = [], []
        for rows in eval_batches(split.lengths, self.batch_size):
            batch = padded[rows]
            inputs = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
            pieces.append(self.session.run(["logits"], inputs)[0])
            order.append(rows)
        if not pieces:
            return np.zeros((0, self.session.get_outputs()[0].shape[-1] or 0), dtype=np.float32)
        logits = np.empty((len(split), pieces[0].shape[1]), dtype=np.float32)
        logits[np.concatenate(order)] = np.concatenate(pieces)
        return logits


def export_folder(path: Path) -> Path | None:
    """The export folder of a run directory or model folder, or `path` itself when it is one."""
    path = Path(path)
    candidates = [path, path / EXPORT_DIR]
    if (path / META_FILE).is_file():  # a run's model/ folder: its export sits beside it
        candidates.append(path.parent / EXPORT_DIR)
    return next((c for c in candidates if (c / EXPORT_META).is_file()), None)


def choose_onnx_file(folder: Path, meta: dict[str, Any], backend: str) -> Path:
    """onnx prefers the int8 file when it was exported; onnx-fp32 / onnx-int8 ask for one."""
    files = meta.get("files", {})
    kind = {"onnx-fp32": "fp32", "onnx-int8": "int8"}.get(backend) or ("int8" if "int8" in files else "fp32")
    if kind not in files or not (folder / files[kind]).is_file():
        flag = " --int8" if kind == "int8" else ""
        raise BertfitError(f"{folder}: no {kind} ONNX model; run `bertfit export RUN --onnx{flag}`")
    return folder / files[kind]


class Predictor:
    """Model (PyTorch or ONNX) + tokenizer + labels; `predict(texts)` keeps the input order.

    `threads` caps the CPU threads one model call uses (default: every core). A server whose clients
    share its cores runs faster with fewer: threads that wait on each other are descheduled.
    """

    def __init__(self, path: str | Path, device: str = "auto", precision: str = "auto", batch_size: int = 64,
                 backend: str = "auto", threads: int | None = None):
        if backend not in BACKENDS:
            raise BertfitError(f"backend: unknown {backend!r}; use one of {', '.join(BACKENDS)}")
        path, self.batch_size, self.threads = Path(path), batch_size, threads
        folder = export_folder(path)
        if backend == "auto":
            use_onnx = folder is not None and device in ("auto", "cpu") and choose_device(device).type == "cpu"
            backend = "onnx" if use_onnx and _export_is_current(path, folder) else "torch"
        if backend == "torch":
            self._load_torch(path, device, precision)
        else:
            if folder is None:
                raise BertfitError(f"{path}: no ONNX export (expected {path / EXPORT_DIR / EXPORT_META}); "
                                   "run `bertfit export RUN --onnx` or use --backend torch")
            self._load_onnx(folder, backend, path)
        log.info("predictor for %s uses the %s backend", path, self.backend.name)

    def _load_torch(self, path: Path, device: str, precision: str) -> None:
        loaded = load_model(path)
        self.device = choose_device(device)
        self.precision = choose_precision(precision, self.device)
        if self.threads:
            set_cpu_threads(self.threads)
        self.model, self.tokenizer, self.labels, self.meta = loaded.model, loaded.tokenizer, loaded.labels, loaded.meta
        self.temperature = float(loaded.meta.get("temperature", 1.0))
        self.backend = TorchBackend(self.model, self.tokenizer.pad_token_id, self.batch_size, self.device, self.precision)

    def _load_onnx(self, folder: Path, backend: str, path: Path) -> None:
        from transformers import AutoTokenizer

        self.meta = json.loads((folder / EXPORT_META).read_text(encoding="utf-8"))
        try:  # `bertfit evaluate` may calibrate after the export: the temperature is the model's, not the graph's
            self.meta["temperature"] = read_model_meta(path)["temperature"]
        except BertfitError:
            pass  # an export folder on its own carries the temperature it was exported with
        model_file = choose_onnx_file(folder, self.meta, backend)
        self.device, self.model = torch.device("cpu"), None
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.labels = LabelMap(tuple(self.meta["labels"]))
        self.temperature = float(self.meta.get("temperature", 1.0))
        self.backend = OnnxBackend(model_file, self.tokenizer.pad_token_id, self.batch_size, self.threads)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def logits(self, texts: list[str]) -> np.ndarray:
        """One row per text; with sliding windows, the pooled logits of its windows (pooled here, outside
        the network, so the PyTorch and ONNX backends pool alike)."""
        split = tokenize_like_training(self.meta, self.tokenizer, texts)
        return split.document_logits(self.backend.logits(split))

    @property
    def multi_label(self) -> bool:
        return self.meta.get("problem_type") == "multi_label_classification"

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities (rows sum to 1), or for multi-label models one independent probability per label."""
        scaled = self.logits(texts) / self.temperature
        return sigmoid(scaled) if self.multi_label else softmax(scaled)

    def predict(self, texts: list[str]) -> list[Prediction]:
        probabilities = self.predict_proba(texts)
        names = self.labels.names
        if self.multi_label:
            cuts = np.array([self.meta.get("thresholds", {}).get(name, 0.5) for name in names])
            chosen = [tuple(n for n, p, c in zip(names, row, cuts) if p >= c) for row in probabilities]
            return [Prediction(text, "|".join(found), float(row.max()), dict(zip(names, map(float, row))), found)
                    for text, row, found in zip(texts, probabilities, chosen)]
        return [Prediction(text, names[int(row.argmax())], float(row.max()), dict(zip(names, map(float, row))))
                for text, row in zip(texts, probabilities)]


def _export_is_current(path: Path, folder: Path) -> bool:
    """False when the model was retrained (or resumed) after the export: serving it would be stale."""
    try:
        model_meta = read_model_meta(path)
    except BertfitError:
        return True  # an export folder on its own: nothing to compare against
    export_step = json.loads((folder / EXPORT_META).read_text(encoding="utf-8")).get("model_step")
    if export_step is not None and export_step != model_meta.get("step"):
        log.warning("%s is older than the model (step %s vs %s); using PyTorch. Re-run `bertfit export`",
                    folder, export_step, model_meta.get("step"))
        return False
    return True
