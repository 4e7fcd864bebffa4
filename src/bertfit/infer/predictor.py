"""Batch prediction from a run directory, model folder or export folder (imports nothing from training).

`Predictor(path).predict(texts)` picks a backend (bertfit.infer.choice): when the run has an export (RUN/export,
written by `bertfit export`) and the device is the CPU, the variant the export chose (--target auto) or else
int8 then fp32 ONNX, the first whose measured accuracy passed the export's check; PyTorch otherwise, and the
log says why. `backend=` names one (pytorch, onnx-fp32, onnx-int8, openvino-fp32, ct2-int8, ...; torch and
onnx = onnx-fp32 too). `texts` may be a list, a pandas DataFrame or Series or a datasets.Dataset, whose
text columns (the run's own, or `text_columns`) are joined as training joined them. All backends run
through the inference engine and return rows in input order. The exported backends import neither torch
nor transformers (tokenizer.json is read by `tokenizers` alone), so a cold `bertfit predict` on an export
starts in about a second of CPU; so does a static student (`bertfit distill RUN --student static`), which
runs in NumPy alone (backend static), as its own run or as a variant in its teacher's export. A run with a
stacked ensemble (model + TF-IDF, bertfit.infer.stack) gives the stack's probabilities on every backend.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    read_run_config,
)
from bertfit.data.labels import LabelMap
from bertfit.data.tables import is_table, table_texts
from bertfit.errors import BertfitError
from bertfit.infer.backends import TorchBackend, open_export
from bertfit.infer.choice import choose_backend, is_static_model
from bertfit.infer.stack import Stack, model_probabilities, open_stack
from bertfit.infer.static import StaticBackend, load_static
from bertfit.infer.tokens import TokenizerFile, tokenize_like_training
from bertfit.meta import ExportMeta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One text's prediction. Single-label: `label` is the most probable class and `confidence` its probability.
    Multi-label: `labels` holds every label at or above its threshold, `label` joins them with "|",
    `label_probabilities` gives each of them with its probability, and `confidence` is the probability of the
    least likely of them (each predicted label is at least that likely); with no label predicted, it is
    1 minus the highest probability (how likely even the likeliest label is absent)."""

    text: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    labels: tuple[str, ...] | None = None  # multi-label models: every label at or above its threshold
    label_probabilities: dict[str, float] | None = None  # multi-label models: each predicted label's probability


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
        if threads is not None and threads < 1:
            raise BertfitError(f"threads: must be >= 1, got {threads}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BertfitError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
        path = Path(path)
        folder = export_folder(path)
        export = read_export_meta(folder) if folder is not None else None
        choice = choose_backend(backend, path, folder, export, device)
        self.export: ExportMeta | None = None
        self.backend_note = choice.note  # why this backend (a variant failed its accuracy check, ...), or None
        if choice.name == "pytorch":
            self._load_torch(path, device, precision, batch_size, threads)
            self.stack: Stack | None = open_stack(model_folder(path), self.meta)
        elif is_static_model(path):
            self._load_static(model_folder(path))
            self.stack = open_stack(model_folder(path), self.meta)
        elif export is None:
            raise BertfitError(f"{path}: no export (expected {path / EXPORT_DIR / EXPORT_META}); "
                               "run `bertfit export RUN --target auto` (or --onnx) or use backend pytorch")
        else:
            self._load_export(folder, export, choice.name, path, batch_size, threads)
            self.stack = open_stack(folder, export.model)
        self.text_columns = run_text_columns(path)
        log.info("predictor for %s uses the %s backend", path, self.backend.name)
        if self.backend_note:
            log.warning("%s", self.backend_note)
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

    def _load_static(self, folder: Path) -> None:
        """A static student: its vectors and head in NumPy, texts read by its teacher's tokenizer (`tokenizers` alone)."""
        self.meta = read_model_meta(folder)
        self.backend = StaticBackend(load_static(folder / self.meta.static, len(self.meta.labels)))
        self.tokenizer = TokenizerFile(folder)

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

    def predict_proba(self, texts: Any, text_columns: tuple[str, ...] | None = None) -> np.ndarray:
        """Class probabilities (rows sum to 1), or for multi-label models one independent probability per label;
        with a stack, the stack's (the model's mixed with TF-IDF's). `texts`: see `texts_of`."""
        texts = self.texts_of(texts, text_columns)
        if self.stack is not None:
            return self.stack.probabilities(texts, self.logits(texts))
        return model_probabilities(self.logits(texts), self.temperature, self.multi_label)

    def model_proba(self, texts: Any, text_columns: tuple[str, ...] | None = None) -> np.ndarray:
        """The fine-tuned model's probabilities alone (no stack), at the model's temperature."""
        return model_probabilities(self.logits(self.texts_of(texts, text_columns)), self.temperature, self.multi_label)

    def predict(self, texts: Any, text_columns: tuple[str, ...] | None = None) -> list[Prediction]:
        """One Prediction per text, in input order; `texts`: see `texts_of`."""
        texts = self.texts_of(texts, text_columns)
        return self.decide(texts, self.predict_proba(texts))

    def texts_of(self, texts: Any, text_columns: tuple[str, ...] | None = None) -> list[str]:
        """A list of texts as given, or the texts of a pandas DataFrame / Series or a datasets.Dataset: its
        `text_columns` (default: the run's data.text_columns) joined with a space as training joined them."""
        if is_table(texts):
            texts = table_texts(texts, tuple(text_columns or self.text_columns))
        elif isinstance(texts, str):
            raise BertfitError("texts: give a list of texts, not one string (wrap it: [text])")
        texts = list(texts)
        _check_texts(texts)
        return texts

    def decide(self, texts: list[str], probabilities: np.ndarray) -> list[Prediction]:
        """Predictions from probability rows (predict_proba's): the likeliest class, or for multi-label models
        every label at or above its threshold (Prediction says what `confidence` means for each)."""
        names = self.meta.labels
        if not self.multi_label:
            return [Prediction(text, names[int(row.argmax())], float(row.max()), dict(zip(names, map(float, row))))
                    for text, row in zip(texts, probabilities)]
        cuts = np.array(self.stack.label_thresholds(names) if self.stack else self.meta.label_thresholds())
        predictions = []
        for text, row in zip(texts, probabilities):
            chosen = {name: float(p) for name, p, cut in zip(names, row, cuts) if p >= cut}
            confidence = min(chosen.values()) if chosen else 1.0 - float(row.max())
            predictions.append(Prediction(text, "|".join(chosen), confidence, dict(zip(names, map(float, row))),
                                          tuple(chosen), chosen))
        return predictions


def _check_texts(texts: list[str]) -> None:
    for index, text in enumerate(texts):
        problem = text_problem(text)
        if problem is not None:
            raise BertfitError(f"texts: text {index} {problem}")


def run_text_columns(path: Path) -> tuple[str, ...]:
    """The text columns the run trained on (its config.yaml's data.text_columns); ("text",) for a model or
    export folder outside a run."""
    for folder in (path, path.parent):
        if is_run_dir(folder):
            try:
                return read_run_config(folder).data.text_columns
            except BertfitError:
                break
    return ("text",)
