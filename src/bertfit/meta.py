"""The typed records a saved model and an export carry: model/bertfit.json (ModelMeta), export/export.json (ExportMeta).

Only bertfit.artifacts reads and writes the files; everything else receives these frozen records.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertfit import __version__
from bertfit.config import MULTI_LABEL, SINGLE_LABEL, RunConfig, config_to_dict
from bertfit.data.labels import LabelMap
from bertfit.data.windows import TextCut, WindowSettings
from bertfit.errors import BertfitError


@dataclass(frozen=True)
class StackMeta:
    """bertfit.json's `stack`: the model's probabilities mixed with a TF-IDF + logistic regression's
    (bertfit.infer.stack): p = model_weight * p_model + (1 - model_weight) * p_tfidf, the weight chosen on validation."""

    file: str  # the TF-IDF part (.npz of plain arrays), relative to the folder holding bertfit.json / export.json
    model_weight: float
    temperature: float = 1.0  # the model part's logits are divided by this: the temperature the weight was chosen at
    metric: str = "f1_macro"  # the validation metric the weight maximises (train.metric)
    validation: dict[str, dict[str, float]] | None = None  # model, tfidf, stack -> their validation metrics
    thresholds: dict[str, float] | None = None  # multi-label: cut-offs tuned on the stack's validation probabilities
    tfidf_thresholds: dict[str, float] | None = None  # multi-label: the TF-IDF part's own (to report it fairly)

    @classmethod
    def from_dict(cls, data: Any, source: Path | str) -> "StackMeta":
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            meta = cls(**{k: v for k, v in dict(data).items() if k in known})
            weight, temperature = float(meta.model_weight), float(meta.temperature)
        except (TypeError, ValueError) as error:
            raise BertfitError(f"{source}: bad stack record ({error}); rebuild it with `bertfit stack RUN`") from None
        if not 0 <= weight <= 1 or not temperature > 0:
            raise BertfitError(f"{source}: stack.model_weight must be in [0, 1] and stack.temperature > 0, got "
                               f"{weight} and {temperature}; rebuild it with `bertfit stack RUN`")
        confined_path(meta.file, "stack.file", source)
        return dataclasses.replace(meta, model_weight=weight, temperature=temperature)


@dataclass(frozen=True)
class ModelMeta:
    """model/bertfit.json: what a saved model needs beyond its weights to read text as it was trained.

    Files written by earlier bertfit versions lack some fields; they load with these defaults.
    """

    labels: tuple[str, ...]
    base_model: str | None
    max_length: int
    pooling: str = "mean"
    dropout: float = 0.1
    keep_head: float = 1.0
    window_stride: int = 0
    window_pooling: str = "mean"
    problem_type: str = SINGLE_LABEL
    temperature: float = 1.0  # fitted by `bertfit evaluate`; logits are divided by it
    step: int | None = None  # the optimizer step the weights are from
    thresholds: dict[str, float] | None = None  # multi-label: per-label cut-offs tuned on validation
    lora: dict[str, Any] | None = None  # the LoRA settings trained with
    adapter: str | None = None  # the PEFT adapter's folder inside the model folder
    merged_from: str | None = None
    stack: StackMeta | None = None  # a stacked ensemble with TF-IDF (`bertfit stack`, train.stack)
    static: str | None = None  # a static student's vectors and head (bertfit.infer.static): no network to load
    bertfit_version: str = __version__

    @classmethod
    def for_run(cls, config: RunConfig, labels: LabelMap, step: int) -> "ModelMeta":
        """The meta of a model trained with `config`, saved at `step`."""
        model = config.model
        return cls(tuple(labels.names), model.name, model.max_length, model.pooling, model.dropout, model.keep_head,
                   model.window_stride, model.window_pooling, config.data.problem_type, step=step,
                   lora=config_to_dict(config.lora) if config.lora.r > 0 else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path | str) -> "ModelMeta":
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            meta = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as error:  # a required field is missing
            raise BertfitError(f"{source}: {error}; the file is damaged, train the model again") from None
        problems = _field_problems(meta)
        if problems:
            raise BertfitError(f"{source}: {'; '.join(problems)}; the file is damaged, train the model again "
                               "(or restore the file from a copy)")
        for field in ("adapter", "static"):
            if getattr(meta, field) is not None:
                confined_path(getattr(meta, field), field, source)
        stack = StackMeta.from_dict(meta.stack, source) if meta.stack is not None else None
        return dataclasses.replace(meta, labels=tuple(meta.labels), temperature=float(meta.temperature), stack=stack)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items() if v is not None}

    @property
    def label_map(self) -> LabelMap:
        return LabelMap(self.labels)

    @property
    def multi_label(self) -> bool:
        return self.problem_type == MULTI_LABEL

    @property
    def windows(self) -> WindowSettings | None:
        """Sliding-window settings for reading texts (None: one row per text)."""
        return WindowSettings(self.window_stride, self.window_pooling) if self.window_stride > 0 else None

    @property
    def cut(self) -> TextCut:
        """How the model reads a text: the cut it was trained with (every window, where it reads windows)."""
        return TextCut(self.max_length, self.keep_head, self.windows)

    def label_thresholds(self) -> list[float]:
        """Multi-label cut-offs in label order (0.5 where none was tuned)."""
        return [(self.thresholds or {}).get(name, 0.5) for name in self.labels]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_problems(meta: ModelMeta) -> list[str]:
    """Every field of a bertfit.json of the wrong type or range, so a damaged file is refused rather than read
    as something else (labels as a string would be split into one class a character)."""
    checks = [
        ("labels", isinstance(meta.labels, (list, tuple)) and bool(meta.labels)
         and all(isinstance(name, str) for name in meta.labels), "a non-empty list of label names"),
        ("base_model", meta.base_model is None or isinstance(meta.base_model, str), "a model name"),
        ("max_length", _is_int(meta.max_length) and meta.max_length > 0, "a positive integer"),
        ("pooling", meta.pooling in ("cls", "mean"), "cls or mean"),
        ("dropout", _is_number(meta.dropout) and 0 <= meta.dropout < 1, "a number in [0, 1)"),
        ("keep_head", _is_number(meta.keep_head) and 0 <= meta.keep_head <= 1, "a number in [0, 1]"),
        ("window_stride", _is_int(meta.window_stride) and meta.window_stride >= 0, "an integer >= 0"),
        ("window_pooling", meta.window_pooling in ("mean", "max"), "mean or max"),
        ("problem_type", meta.problem_type in (SINGLE_LABEL, MULTI_LABEL), f"{SINGLE_LABEL} or {MULTI_LABEL}"),
        ("temperature", _is_number(meta.temperature) and meta.temperature > 0, "a number > 0"),
        ("step", meta.step is None or _is_int(meta.step), "an integer"),
        ("thresholds", meta.thresholds is None or (isinstance(meta.thresholds, dict)
                                                   and all(_is_number(v) for v in meta.thresholds.values())),
         "a mapping of label to number"),
    ]
    problems = [f"{name} must be {expected}, got {getattr(meta, name)!r}"[:200] for name, ok, expected in checks if not ok]
    if not problems and len(set(meta.labels)) != len(meta.labels):
        problems.append("labels: a label name occurs twice")
    return problems


OLD_FILE_KEYS = {"fp32": "onnx-fp32", "int8": "onnx-int8"}  # export.json before more engines: precision -> ONNX file


@dataclass(frozen=True)
class ExportMeta:
    """export/export.json: the exported variants, what they need to be fed, their check against PyTorch and,
    after `bertfit export --target auto`, the variant chosen for this machine and why."""

    model: ModelMeta  # the exported model's labels, tokenising settings and temperature
    pad_token_id: int
    files: dict[str, str]  # variant (onnx-fp32, openvino-int8, ct2-int8, ...) -> file or folder in the export folder
    opset: int
    export_seconds: float | None = None
    check: dict[str, Any] | None = None  # the self-check: accuracy of PyTorch and of every variant
    choice: str | None = None  # the variant `--target auto` chose, or the --target's own (see served_variant)
    selection: dict[str, Any] | None = None  # how the choice was made: CPU features, timings, bound, skipped

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path | str) -> "ExportMeta":
        model = ModelMeta.from_dict({**data, "step": data.get("model_step")}, source)
        try:
            files = {OLD_FILE_KEYS.get(k, k): v for k, v in dict(data["files"]).items()}
            check = data.get("check")
            if check is not None:
                check = {OLD_FILE_KEYS.get(k, k): v for k, v in check.items()}
            meta = cls(model, int(data["pad_token_id"]), files, int(data.get("opset", 0)),
                       data.get("export_seconds"), check, data.get("choice"), data.get("selection"))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise BertfitError(f"{source}: missing or bad field {error}; export the run again") from None
        for kind, name in meta.files.items():
            confined_path(name, f"files.{kind}", source)
        return meta

    def to_dict(self) -> dict[str, Any]:
        model = {k: v for k, v in self.model.to_dict().items() if k not in ("step", "pooling", "dropout")}
        return {**model, "model_step": self.model.step, "pad_token_id": self.pad_token_id, "opset": self.opset,
                "files": self.files, "export_seconds": self.export_seconds, "check": self.check,
                "choice": self.choice, "selection": self.selection}

    @property
    def max_accuracy_loss(self) -> float:
        """The accuracy points a variant may lose against PyTorch and still serve (`bertfit export --max-accuracy-loss`)."""
        return float((self.check or {}).get("max_accuracy_loss", DEFAULT_MAX_ACCURACY_LOSS))

    def accuracy_problem(self, variant: str) -> str | None:
        """Why `variant` may not stand in for PyTorch (`accuracy_loss_problem` at this export's bound), or None."""
        return accuracy_loss_problem(self.check, variant, self.max_accuracy_loss)

    def served_variant(self) -> tuple[str, list[str]]:
        """What `auto` serves on a CPU, and why each variant before it was passed over: the recorded choice, else
        onnx-int8 then onnx-fp32, the first that passed the accuracy check; torch (PyTorch) when none did."""
        if self.choice == "torch":
            return "torch", []
        candidates = [self.choice] if self.choice else []
        candidates += [v for v in ("onnx-int8", "onnx-fp32") if v in self.files and v not in candidates]
        passed_over = []
        for variant in candidates:
            problem = self.accuracy_problem(variant)
            if problem is None:
                return variant, passed_over
            passed_over.append(problem)
        return "torch", passed_over

    def default_variant(self) -> str:
        """What `auto` serves on a CPU (`served_variant`)."""
        return self.served_variant()[0]


DEFAULT_MAX_ACCURACY_LOSS = 0.5  # accuracy points an exported variant may lose against PyTorch and still serve


def accuracy_loss_problem(check: dict[str, Any] | None, variant: str, max_accuracy_loss: float) -> str | None:
    """Why `variant` may not stand in for PyTorch, or None: its measured accuracy change on the export's check is
    below -max_accuracy_loss points, or it was never checked. `bertfit export --target auto` chooses and `predict`
    and `serve` pick by this one rule, so what serves is what passed."""
    record = (check or {}).get(variant)
    if not isinstance(record, dict) or "accuracy" not in record:
        return f"{variant} has no accuracy check against PyTorch in export.json; run `bertfit export` again"
    change = record.get("accuracy_change_points")
    if change is None:  # export.json of the ONNX-only exporter: plain accuracies
        change = 100 * (record["accuracy"] - check.get("torch_accuracy", record["accuracy"]))
    if change >= -max_accuracy_loss:
        return None
    low, high = record.get("accuracy_change_interval_points") or (change, change)
    return (f"{variant} measured {change:+.2f} accuracy points (95% [{low:+.2f}, {high:+.2f}]) against PyTorch on "
            f"{check.get('rows', '?')} held-out rows, beyond the {max_accuracy_loss:g} points allowed "
            "(bertfit export --max-accuracy-loss)")


def confined_path(value: Any, field: str, source: Path | str) -> Path:
    """A path a file names inside its own folder: relative, without `..`; anything else is refused, so a
    planted bertfit.json or export.json cannot point a load at files elsewhere."""
    path = Path(str(value))
    if not isinstance(value, str) or not value or path.is_absolute() or path.drive or ".." in path.parts:
        raise BertfitError(f"{source}: {field} {value!r} must be a path inside its folder; "
                           "the file is damaged or was tampered with, so it is not used")
    return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BertfitError(f"{path}: cannot be read ({error}); the file is damaged") from None
    if not isinstance(data, dict):
        raise BertfitError(f"{path}: expected a JSON object; the file is damaged")
    return data
