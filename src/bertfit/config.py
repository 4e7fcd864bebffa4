"""Run configuration: frozen dataclasses, loaded from YAML plus dotted overrides.

`load_config("run.yaml", ["--train.lr", "3e-5"])` returns a validated `RunConfig`. Every problem
(unknown field, wrong type, value out of range) is collected and raised together as one
`ConfigError`, so a user fixes a config in one pass instead of one error per run.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bertfit.config_distill import DistillConfig
from bertfit.config_rules import combination_problems
from bertfit.config_values import build_dataclass, duration_seconds, parse_overrides, read_yaml, set_dotted
from bertfit.config_values import config_field as _field
from bertfit.errors import ConfigError

EMBEDDED_MODEL = "embedded"
AUTO_MODEL = "auto"  # model.name chosen when training starts (training.encoders)
EMBEDDED_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # what the embedded model is, for cards and reports
FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
SINGLE_LABEL, MULTI_LABEL = "single_label_classification", "multi_label_classification"  # Hugging Face's problem_type


@dataclass(frozen=True)
class DataConfig:
    train: str = _field("ag_news", "training data: a file, a preset name (ag_news, imdb, sst2, ...) or a hub dataset")
    validation: str | None = _field(None, "validation data; when absent, split off train (see validation_fraction)")
    test: str | None = _field(None, "test data, evaluated with the best model at the end of training")
    text_columns: tuple[str, ...] = _field(("text",), "column(s) holding the text; several are joined with a space")
    label_column: str = _field("label", "column holding the label (an integer or a string)")
    label_names: tuple[str, ...] | None = _field(None, "label names in id order; integer labels index into this list")
    validation_fraction: float | None = _field(None, "share of train held out when no validation data is given; 0 holds "
                                                     "out none (unset: 0.1-0.2, none in a few-shot run, where every "
                                                     "labelled row should train)",
                                               lambda v: 0 <= v < 1, "must be >= 0 and < 1")
    max_train_rows: int | None = _field(None, "use only the first N training rows (after a seeded shuffle)",
                                        lambda v: v is None or v > 0, "must be > 0")
    max_eval_rows: int | None = _field(None, "use only the first N validation and test rows",
                                       lambda v: v is None or v > 0, "must be > 0")
    format: Literal["auto", "csv", "tsv", "json", "jsonl", "parquet"] = _field("auto", "file format; auto uses the extension")
    header: bool = _field(True, "CSV/TSV files have a header row; without one, columns are named 0, 1, 2, ...")
    hub_config: str | None = _field(None, "configuration name of a hub dataset (the second argument of load_dataset)")
    multi_label: bool = _field(False, "each row may carry several labels (a list, or names joined by label_separator)")
    streaming: bool = _field(False, "read the training file lazily in chunks instead of whole (data too large for "
                                    "memory); needs data.validation and data.label_names, see docs/scale.md")
    shuffle_buffer_rows: int = _field(10000, "streaming: training rows held, shuffled and length-bucketed at a time",
                                      lambda v: v >= 1, "must be >= 1")
    label_separator: str = _field("|", "separator between label names in a multi-label text column, e.g. 'a|b'",
                                  lambda v: len(v) >= 1, "must not be empty")
    label_map: dict[str, str | None] | None = _field(
        None, "rename, merge or drop labels as read, e.g. {0: negative, 4: positive, 2: null}; null drops the rows "
              "(counted in the log); every key must occur in train")

    @property
    def holds_out_none(self) -> bool:
        """No validation data named and validation_fraction 0: no rows are split off train (a preset's own
        validation split, if it has one, still validates)."""
        return self.validation is None and self.validation_fraction == 0

    @property
    def problem_type(self) -> str:
        """The task as a run's model meta names it (Hugging Face's problem_type values)."""
        return MULTI_LABEL if self.multi_label else SINGLE_LABEL

    def file_format(self, path: Path) -> str | None:
        """csv, tsv, json, jsonl or parquet: data.format, else from the file's extension (None: unknown)."""
        return self.format if self.format != "auto" else FILE_FORMATS.get(Path(path).suffix.lower())


@dataclass(frozen=True)
class ModelConfig:
    name: str = _field(AUTO_MODEL, "checkpoint folder, hub name, or a registry name (`bertfit models`): minilm-l6 "
                                   "(= embedded, the packaged all-MiniLM-L6-v2), mpnet-base, minilm-l3; auto: the "
                                   "embedded MiniLM-L6, or for few labelled rows the largest installed registry "
                                   "encoder whose training fits train.time_budget (the plan says which and why)")
    max_length: int = _field(128, "tokens kept per text; longer texts are truncated",
                             lambda v: 8 <= v <= 8192, "must be in 8..8192")
    keep_head: float = _field(1.0, "share of max_length kept from the start of a longer text, the rest from its end "
                                   "(1: cut the end; 0.25: head+tail truncation)", lambda v: 0 <= v <= 1, "must be in [0, 1]")
    window_stride: int | None = _field(None, "sliding windows: 0 off; N > 0: windows of max_length tokens every N tokens, "
                                             "logits pooled per text (unset: half-overlapping when most training texts "
                                             "are longer, so a long text is read whole)",
                                       lambda v: v >= 0, "must be >= 0")
    window_pooling: Literal["mean", "max"] = _field("mean", "how the windows' logits become one text's logits")
    max_windows: int = _field(8, "windows per training text, spread evenly over it (0: all); evaluation uses all",
                              lambda v: v >= 0, "must be >= 0")
    pooling: Literal["cls", "mean"] = _field("mean", "how token vectors become one text vector")
    dropout: float = _field(0.1, "dropout before the classification head", lambda v: 0 <= v < 1, "must be in [0, 1)")
    freeze: str = _field("none", "none, embeddings, encoder, or N (embeddings and the first N layers)",
                         lambda v: v in ("none", "embeddings", "encoder") or (v.isdigit() and int(v) >= 0),
                         "must be none, embeddings, encoder or a whole number")
    init_from: str | None = _field(None, "start from this run's (or model folder's) weights; its labels keep their "
                                         "ids and new labels get new head rows")


@dataclass(frozen=True)
class LoraConfig:
    r: int = _field(0, "LoRA rank; 0 trains the whole encoder, > 0 trains low-rank adapters (the head always trains)",
                    lambda v: 0 <= v <= 1024, "must be in 0..1024")
    alpha: float = _field(16.0, "LoRA scaling numerator (updates are scaled by alpha / r)", lambda v: v > 0, "must be > 0")
    dropout: float = _field(0.1, "dropout on the adapter input", lambda v: 0 <= v < 1, "must be in [0, 1)")
    target_modules: tuple[str, ...] = _field(("query", "value"), "encoder Linear layers (name suffixes) that get adapters",
                                             lambda v: len(v) >= 1, "must name at least one module")


@dataclass(frozen=True)
class TrainConfig:
    method: Literal["auto", "standard", "contrastive"] = _field("auto", "contrastive: encoder on same/different-label "
        "pairs, then the head (SetFit-style); auto: contrastive below 100 train rows a class and 512 in all (single-label), "
        "where pairs multiply what few labels say")
    time_budget: str = _field("10m", "training time that model.name auto chooses the encoder and method within "
                                     "(90s, 10m, 2h): the largest installed encoder whose estimate here fits, for "
                                     "few labelled rows; it bounds the choice, not the run", lambda v: duration_seconds(v)
                              is not None, "must be a duration such as 90s, 10m or 2h")
    epochs: int | None = _field(None, "passes over the data (unset: 3, more until 150 optimizer steps: a fresh head "
                                      "barely moves in fewer)", lambda v: v >= 1, "must be >= 1")
    batch_size: int | None = _field(None, "rows a step, all devices together (unset: 32, at most 1/8 of the rows so an "
                                          "epoch has ~8 steps)",
                                    lambda v: v >= 1, "must be >= 1")
    eval_batch_size: int = _field(128, "samples per batch when evaluating", lambda v: v >= 1, "must be >= 1")
    lr: float | None = _field(None, "peak learning rate (unset: 1e-4 below 40M encoder parameters, 5e-5 below 150M, "
                                    "else 2e-5: smaller encoders take larger steps)", lambda v: 0 < v < 1,
                              "must be between 0 and 1")
    weight_decay: float = _field(0.01, "decoupled weight decay (not applied to biases and LayerNorm)",
                                 lambda v: v >= 0, "must be >= 0")
    warmup_ratio: float | None = _field(None, "share of steps warming up (unset: 0.06, up to 0.1 so a short run warms "
                                              "up over ~10 steps)", lambda v: 0 <= v < 1, "in [0, 1)")
    contrastive_steps: int | None = _field(None, "contrastive: steps of the encoder stage, each on every pair of 8 texts "
                                                 "(unset: SetFit's count of pairs / 28, >= 2.5 a row, so the steps grow "
                                                 "with the pairs the rows offer)",
                                           lambda v: v >= 1, "must be >= 1")
    contrastive_lr: float | None = _field(None, "contrastive: peak learning rate of the encoder stage (unset: SetFit's 2e-5, "
                                                "4e-5 below 40M encoder parameters, since smaller encoders take larger "
                                                "steps)", lambda v: 0 < v < 1,
                                          "must be between 0 and 1")
    grad_accum_steps: int = _field(1, "micro-batches accumulated per optimizer step", lambda v: v >= 1, "must be >= 1")
    max_grad_norm: float = _field(1.0, "gradient clipping norm; 0 disables clipping", lambda v: v >= 0, "must be >= 0")
    label_smoothing: float = _field(0.0, "label smoothing of the loss (multi-label: targets move eps/2 towards 0.5)",
                                    lambda v: 0 <= v < 1, "must be in [0, 1)")
    class_weights: Literal["none", "balanced"] = _field(
        "none", "balanced weighs each class by n_samples / (n_classes * count); multi-label: positives by negatives / positives")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _field(
        "auto", "auto: bf16 (or fp16) on GPU; on CPU bf16 training only where one core measures it 3x as fast as fp32 "
                "(AMX), since the CPU's flags do not tell, else fp32")
    device: str = _field("auto", "auto, cpu, cuda, cuda:N or mps")
    seed: int = _field(42, "seed for splits, shuffling, dropout and head initialisation")
    eval_every_steps: int = _field(0, "evaluate every N optimizer steps; 0 evaluates once per epoch",
                                   lambda v: v >= 0, "must be >= 0")
    checkpoint_every_steps: int = _field(200, "save a resumable checkpoint every N steps (and at each evaluation), "
                                              "the contrastive stage's steps too; 0: evaluations only",
                                         lambda v: v >= 0, "must be >= 0")
    metric: Literal["accuracy", "f1_macro", "f1_micro", "loss"] = _field(
        "f1_macro", "validation metric that picks the best checkpoint (multi-label accuracy is exact match)")
    keep: Literal["auto", "best", "last"] = _field(
        "auto", "weights the run keeps: best (by train.metric) or last; auto: best on 100 validation rows or more or "
                "with early stopping, else last, since on fewer rows the best evaluation is the luckiest one")
    early_stopping_patience: int = _field(0, "stop after N evaluations without improvement; 0 never stops early",
                                          lambda v: v >= 0, "must be >= 0")
    bucket_batches: int = _field(50, "batches per length-sorted mega-batch (1 disables length bucketing)",
                                 lambda v: v >= 1, "must be >= 1")
    # 0 by default: padding a batch is ~40 us of numpy (32 texts, 128 tokens), far below a step's time, and on a
    # CPU machine worker processes would compete with torch's own threads for the same few cores.
    num_workers: int = _field(0, "data-loader worker processes (0 builds batches in the training process)",
                              lambda v: v >= 0, "must be >= 0")
    cache_features: Literal["memory", "disk", "none"] = _field(
        "memory", "with model.freeze encoder (no LoRA): encode each text once (encoder in eval mode) and train the head "
                  "on the cached vectors; disk also keeps them beside the token cache for later runs; none: encode every step")
    compile: bool = _field(False, "torch.compile the model (first steps are slow while it compiles; "
                                  "needs a C++ compiler on CPU, Triton on GPU)")
    tensorboard: bool = _field(True, "write TensorBoard scalars under RUN/tensorboard (false: as if tensorboard were "
                                     "left out of train.report_to)")
    report_to: tuple[Literal["tensorboard", "mlflow", "wandb"], ...] = _field(
        ("tensorboard",), "where scalars and the config go, any of tensorboard, mlflow, wandb (WANDB_MODE=offline "
                          "needs no account); [] for none")
    mlflow_uri: str | None = _field(None, "MLflow tracking URI (default: the SQLite store OUTPUT_DIR/mlflow.db)")
    max_steps: int = _field(0, "stop after N optimizer steps, the schedule ending there (a short probe run, e.g. to "
                               "compare learning rates); 0: train.epochs decides", lambda v: v >= 0, "must be >= 0")
    progress: bool = _field(True, "show a progress bar")
    keep_checkpoint: bool = _field(False, "keep RUN/checkpoint (optimizer state, hundreds of MB) after the run "
                                          "finishes; it is only needed to resume an unfinished run")
    onnx_copy: bool = _field(True, "when `bertfit train` finishes, write and check the fp32 ONNX copy (RUN/export) so "
                                   "predict and serve start in about a second instead of loading PyTorch; said and "
                                   "skipped without onnxruntime (the serve extra) or for multi-label runs; from Python: "
                                   "bertfit.export_run(run, int8=False)")
    stack: Literal["auto", "never", "always"] = _field(
        "auto", "stacked ensemble of the model and TF-IDF + logistic regression, mixed at the weight best on validation: "
                "auto builds it when TF-IDF beats the model on 100 validation rows or more (on fewer the weight is "
                "noise), always whoever wins, never only reports (`bertfit stack RUN` adds it later)")


MAX_NAME_BYTES = 200  # a file system allows 255 a folder name; staging folders add a prefix and a suffix


@dataclass(frozen=True)
class RunConfig:
    name: str | None = _field(None, "run name; the run directory is OUTPUT_DIR/NAME (default: a timestamp)",
                              lambda v: is_run_name(v), "must be one folder name (no / or \\, not . or .., "
                              f"at most {MAX_NAME_BYTES} bytes)")
    output_dir: str = _field("runs", "folder holding run directories")
    cache_dir: str | None = _field(None, "token cache folder (default: $BERTFIT_CACHE or ~/.cache/bertfit)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    @property
    def time_budget_seconds(self) -> float:
        return duration_seconds(self.train.time_budget)

    @property
    def uses_cached_features(self) -> bool:
        """The head trains on encoder outputs computed once (frozen encoder, no LoRA; see training.features)."""
        return self.model.freeze == "encoder" and self.lora.r == 0 and self.train.cache_features != "none"


def is_run_name(name: str) -> bool:
    """One path component: a run directory is always a direct child of output_dir, never a parent or root."""
    return (bool(name) and not set(name) & {"/", "\\", "\0"} and name.strip(".") != "" and name == name.strip()
            and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (optional), apply `--section.field value` overrides, validate everything."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(Path(path))
    for dotted, value in parse_overrides(overrides or []):
        set_dotted(raw, dotted, value)
    return build_config(raw)


def build_config(raw: dict[str, Any]) -> RunConfig:
    """Turn nested plain data into a validated RunConfig, or raise ConfigError listing every problem."""
    problems: list[str] = []
    config = build_dataclass(RunConfig, raw, "", problems)
    if not problems:
        problems += combination_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested data (tuples as lists) suitable for YAML and JSON."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(config))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys: {"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


def replace(config: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """A copy of `config` with some fields changed, validated: replace(cfg, train={"lr": 1e-4})."""
    raw = config_to_dict(config)
    for section, values in sections.items():
        if isinstance(values, dict):
            raw[section].update(values)
        else:
            raw[section] = values
    return build_config(raw)


def override(config: RunConfig, dotted: dict[str, Any], **top: Any) -> RunConfig:
    """A copy of `config` with dotted fields (and top-level ones such as name) set, validated:
    override(cfg, {"train.lr": 1e-4}, name="trial-1")."""
    raw = {**config_to_dict(config), **top}
    for key, value in dotted.items():
        set_dotted(raw, key, value)
    return build_config(raw)


def top_level_fields() -> list[str]:
    """The fields of RunConfig that are not sections: name, output_dir, cache_dir."""
    hints = typing.get_type_hints(RunConfig)
    return [f.name for f in dataclasses.fields(RunConfig) if not dataclasses.is_dataclass(hints[f.name])]
