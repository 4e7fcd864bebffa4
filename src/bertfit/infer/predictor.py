"""Batch prediction from a run directory, model folder or export folder (imports nothing from training).

`Predictor(path).predict(texts)` picks a backend: when the run has an export (RUN/export, written by
`bertfit export`) and the device is the CPU, the variant `bertfit export --target auto` chose for this
machine (older exports: ONNX int8, else fp32); PyTorch otherwise. `backend=` forces one (torch, onnx,
onnx-int8, openvino-fp32, ct2-int8, ...). All run through the inference engine and return rows in input order. The
exported backends import neither torch nor transformers (tokenizer.json is read by `tokenizers` alone),
so a cold `bertfit predict` on an export starts in about a second of CPU. A run with a stacked ensemble
(model + TF-IDF, bertfit.infer.stack) gives the stack's probabilities on every backend.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertfit.artifacts import (
    EXPORT_DIR,
    EXPORT_META,
    RESULTS_FILE,
    export_folder,
    is_run_dir,
    load_model,
    model_folder,
    read_export_meta,
    read_model_meta,
)
from bertfit.data.labels import LabelMap
from bertfit.errors import BertfitError
from bertfit.infer import BACKENDS
from bertfit.infer.backends import TorchBackend, open_export
from bertfit.infer.stack import Stack, model_probabilities, open_stack
from bertfit.infer.tokens import TokenizerFile, tokenize_like_training
from bertfit.meta import ExportMeta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    labels: tuple[str, ...] | None = None  # multi-label models: every label at or above its threshold


def choose_variant(export: ExportMeta, backend: str) -> str:
    """The exported variant a backend name asks for: onnx -> ExportMeta.onnx_variant, any other name itself."""
    return export.onnx_variant() if backend == "onnx" else backend


def text_problem(text: object) -> str | None:
    """Why a text cannot be classified (what training refuses too), or None: not a string, empty or only
    spaces, or not encodable as UTF-8 (a lone surrogate from JSON such as "\\ud800")."""
    if not isinstance(text, str):
        return f"is a {type(text).__name__}, not a string"
    if not text.strip():
        return "is empty; send text to classify"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"has an invalid character at position {error.start} (a lone UTF-16 surrogate); send valid Unicode"
    return None


class Predictor:
    """Model (PyTorch or an exported variant) + tokenizer + labels; `predict(texts)` keeps the input order.

    `threads` caps the CPU threads one model call uses (default: every core). A server whose clients
    share its cores runs faster with fewer: threads that wait on each other are descheduled.
    `meta` describes the model (labels, max_length, temperature, ...); `export` the export in use; `stack`
    the stacked ensemble `predict_proba` applies (None: the model alone).
    """

    def __init__(self, path: str | Path, device: str = "auto", precision: str = "auto", batch_size: int = 64,
                 backend: str = "auto", threads: int | None = None):
        if backend not in BACKENDS:
            raise BertfitError(f"backend: unknown {backend!r}; use one of {', '.join(BACKENDS)}")
        if threads is not None and threads < 1:
            raise BertfitError(f"threads: must be >= 1, got {threads}")
        path = Path(path)
        folder = export_folder(path)
        export = read_export_meta(folder) if folder is not None else None
        if backend == "auto":
            use_export = export is not None and _runs_on_cpu(device)
            current = use_export and _export_is_current(path, folder, export)
            backend = export.default_variant() if current else "torch"  # the choice may be torch itself
        self.export: ExportMeta | None = None
        if backend == "torch":
            self._load_torch(path, device, precision, batch_size, threads)
            self.stack: Stack | None = open_stack(model_folder(path), self.meta)
        elif export is None:
            raise BertfitError(f"{path}: no export (expected {path / EXPORT_DIR / EXPORT_META}); "
                               "run `bertfit export RUN --target auto` (or --onnx) or use backend torch")
        else:
            self._load_export(folder, export, choose_variant(export, backend), path, batch_size, threads)
            self.stack = open_stack(folder, export.model)
        log.info("predictor for %s uses the %s backend", path, self.backend.name)
        if is_run_dir(path) and not (path / RESULTS_FILE).is_file():
            log.warning("%s has not finished (no %s): its model is the best one saved so far, with no test metrics; "
                        "finish it with `bertfit train --resume %s`", path, RESULTS_FILE, path)

    def _load_torch(self, path: Path, device: str, precision: str, batch_size: int, threads: int | None) -> None:
        from bertfit.infer.engine import InferenceContext
        from bertfit.runtime.device import set_cpu_threads

        loaded = load_model(path)
        if threads:
            set_cpu_threads(threads)
        self.tokenizer, self.meta = loaded.tokenizer, loaded.meta
        context = InferenceContext.create(loaded.tokenizer.pad_token_id, batch_size, device, precision)
        self.backend = TorchBackend(loaded.model, context)

    def _load_export(self, folder: Path, export: ExportMeta, variant: str, path: Path, batch_size: int,
                     threads: int | None) -> None:
        self.export, self.meta = export, export.model
        try:  # `bertfit evaluate` may calibrate after the export: the temperature is the model's, not the graph's
            self.meta = dataclasses.replace(self.meta, temperature=read_model_meta(path).temperature)
        except BertfitError:
            pass  # an export folder on its own carries the temperature it was exported with
        self.backend = open_export(folder, export, variant, batch_size, threads)
        self.tokenizer = TokenizerFile(folder)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def labels(self) -> LabelMap:
        return self.meta.label_map

    @property
    def temperature(self) -> float:
        return self.meta.temperature

    @property
    def multi_label(self) -> bool:
        return self.meta.multi_label

    def logits(self, texts: list[str]) -> np.ndarray:
        """One row per text; with sliding windows, the pooled logits of its windows (pooled here, outside
        the network, so every backend pools alike)."""
        split = tokenize_like_training(self.meta, self.tokenizer, texts)
        return split.document_logits(self.backend.logits(split))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities (rows sum to 1), or for multi-label models one independent probability per label;
        with a stack, the stack's (the model's mixed with TF-IDF's)."""
        _check_texts(texts)
        if self.stack is not None:
            return self.stack.probabilities(texts, self.logits(texts))
        return model_probabilities(self.logits(texts), self.temperature, self.multi_label)

    def model_proba(self, texts: list[str]) -> np.ndarray:
        """The fine-tuned model's probabilities alone (no stack), at the model's temperature."""
        _check_texts(texts)
        return model_probabilities(self.logits(texts), self.temperature, self.multi_label)

    def predict(self, texts: list[str]) -> list[Prediction]:
        probabilities = self.predict_proba(texts)
        names = self.meta.labels
        if self.multi_label:
            cuts = np.array(self.stack.label_thresholds(names) if self.stack else self.meta.label_thresholds())
            chosen = [tuple(n for n, p, c in zip(names, row, cuts) if p >= c) for row in probabilities]
            return [Prediction(text, "|".join(found), float(row.max()), dict(zip(names, map(float, row))), found)
                    for text, row, found in zip(texts, probabilities, chosen)]
        return [Prediction(text, names[int(row.argmax())], float(row.max()), dict(zip(names, map(float, row))))
                for text, row in zip(texts, probabilities)]


def _check_texts(texts: list[str]) -> None:
    for index, text in enumerate(texts):
        problem = text_problem(text)
        if problem is not None:
            raise BertfitError(f"texts: text {index} {problem}")


def _runs_on_cpu(device: str) -> bool:
    """Whether `device` means the CPU here; for auto, torch is asked only where an accelerator could exist
    (importing it takes seconds, and predicting on an export needs it nowhere else)."""
    if device != "auto":
        return device == "cpu"
    if not _accelerator_possible():
        return True
    from bertfit.runtime.device import choose_device

    return choose_device(device).type == "cpu"


def _accelerator_possible() -> bool:
    """A GPU device node (NVIDIA, AMD ROCm, WSL) or an Apple-silicon Mac: torch might find a GPU."""
    import glob
    import platform

    apple_silicon = platform.system() == "Darwin" and platform.machine() == "arm64"
    return apple_silicon or bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/kfd") or glob.glob("/dev/dxg"))


def _export_is_current(path: Path, folder: Path, export: ExportMeta) -> bool:
    """False when the model was retrained (or resumed) after the export, or its stack was built or rebuilt
    since: serving the export would be stale."""
    try:
        model = read_model_meta(path)
    except BertfitError:
        return True  # an export folder on its own: nothing to compare against
    export_step = export.model.step
    if export_step is not None and export_step != model.step:
        log.warning("%s is older than the model (step %s vs %s); using PyTorch. Re-run `bertfit export`",
                    folder, export_step, model.step)
        return False
    if export.model.stack != model.stack:
        log.warning("%s does not hold the model's current stacked ensemble; using PyTorch. Re-run `bertfit export`",
                    folder)
        return False
    return True
