"""The stacked ensemble at prediction time: the fine-tuned model's probabilities mixed with TF-IDF's.

    p = w * p_model + (1 - w) * p_tfidf        (per class; multi-label: per label, each a sigmoid)

w (`StackMeta.model_weight`) was chosen on validation by bertfit.training.stack. The model part is the
network's document probabilities (sliding windows already pooled) at the temperature w was chosen at,
so a later calibration cannot move the mix away from what was measured; the TF-IDF part is
bertfit.infer.tfidf in NumPy, the same code on every backend. The Predictor applies the stack whenever
a model's metadata has one: `predict`, `serve` and every exported variant give the stack's probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertfit.errors import BertfitError
from bertfit.infer.tfidf import TfidfModel, load_tfidf
from bertfit.meta import ModelMeta, StackMeta, confined_path
from bertfit.metrics import probability_metrics, sigmoid, softmax

STACK_DIR, STACK_FILE = "stack", "tfidf.npz"  # model/stack/tfidf.npz (and export/stack/tfidf.npz)
PARTS = ("model", "tfidf", "stack")
REPORTED = ("accuracy", "f1_macro", "f1_micro", "loss")  # the metrics a stack record keeps per part


def model_probabilities(logits: np.ndarray, temperature: float, multi_label: bool) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    return sigmoid(scaled) if multi_label else softmax(scaled)


def mix(model: np.ndarray, tfidf: np.ndarray, model_weight: float) -> np.ndarray:
    """w * model + (1 - w) * tfidf; w = 1 gives `model` itself, bit for bit."""
    return model_weight * model + (1.0 - model_weight) * tfidf


def cut_offs(thresholds: dict[str, float] | None, names: tuple[str, ...]) -> np.ndarray | None:
    return None if thresholds is None else np.array([thresholds.get(name, 0.5) for name in names])


class Stack:
    """A model's stack record with its loaded TF-IDF part."""

    def __init__(self, meta: StackMeta, tfidf: TfidfModel, multi_label: bool):
        self.meta, self.tfidf, self.multi_label = meta, tfidf, multi_label

    def parts(self, texts: list[str], logits: np.ndarray) -> dict[str, np.ndarray]:
        """model, tfidf and stack probabilities of `texts`, given the model's raw document logits."""
        model = model_probabilities(logits, self.meta.temperature, self.multi_label)
        tfidf = self.tfidf.proba(texts)
        return {"model": model, "tfidf": tfidf, "stack": mix(model, tfidf, self.meta.model_weight)}

    def probabilities(self, texts: list[str], logits: np.ndarray) -> np.ndarray:
        return self.parts(texts, logits)["stack"]

    def label_thresholds(self, names: tuple[str, ...]) -> list[float]:
        """Multi-label cut-offs of the stack's probabilities, in label order (0.5 where none was tuned)."""
        return [(self.meta.thresholds or {}).get(name, 0.5) for name in names]

    def scores(self, texts: list[str], logits: np.ndarray, labels: np.ndarray, meta: ModelMeta) -> dict[str, dict]:
        """Metrics of each part and of the stack on labelled texts (multi-label: each at its own cut-offs)."""
        cuts = {"model": np.array(meta.label_thresholds()), "tfidf": cut_offs(self.meta.tfidf_thresholds, meta.labels),
                "stack": np.array(self.label_thresholds(meta.labels))} if self.multi_label else {}
        return {part: summary(probability_metrics(probabilities, labels, meta.labels, cuts.get(part)))
                for part, probabilities in self.parts(texts, logits).items()}


def summary(metrics: dict[str, float]) -> dict[str, float]:
    return {key: float(metrics[key]) for key in REPORTED if key in metrics}


def open_stack(folder: Path, meta: ModelMeta) -> Stack | None:
    """The stack of the model described by `meta`, whose files are in `folder` (a model or export folder)."""
    if meta.stack is None:
        return None
    path = Path(folder) / confined_path(meta.stack.file, "stack.file", folder)
    if not path.is_file():
        raise BertfitError(f"{path}: missing, though the model's metadata names it as its stack's TF-IDF part; "
                           "rebuild it with `bertfit stack RUN` (or export the run again)")
    return Stack(meta.stack, load_tfidf(path, len(meta.labels), meta.multi_label), meta.multi_label)
