"""Rules across config fields: values valid alone but not together, every one checked before any file is read.

`combination_problems(config)` lists them for a built RunConfig (bertfit.config raises them with the field
problems, as one ConfigError); each names the field to change and how.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertfit.config_distill import distill_problems

STREAMABLE_FORMATS = ("csv", "tsv", "jsonl", "parquet")


def combination_problems(config: Any) -> list[str]:
    """Fields that are valid alone but not together: every such rule of bertfit, checked before any file is read."""
    model, problems = config.model, []
    if (model.window_stride or 0) > 0 and model.keep_head < 1:
        problems.append("model.window_stride: sliding windows read the whole text, so model.keep_head must stay 1 "
                        f"(got {model.keep_head}); set one of them")
    if (model.window_stride or 0) > model.max_length - 2:
        problems.append(f"model.window_stride: {model.window_stride} would skip tokens between windows of "
                        f"{model.max_length - 2} text tokens (max_length minus [CLS] and [SEP]); "
                        f"use at most {model.max_length - 2}, e.g. {(model.max_length - 2) // 2} for half overlap")
    if config.lora.r > 0 and model.freeze != "none":
        problems.append("model.freeze: LoRA (lora.r > 0) already freezes the encoder; set model.freeze none")
    if config.data.streaming:
        problems += _streaming_problems(config)
    if config.data.label_map and (config.data.multi_label or config.data.streaming):
        problems.append("data.label_map: not supported with data.multi_label or data.streaming; relabel the file instead")
    if config.data.holds_out_none:
        needs = {"train.early_stopping_patience": config.train.early_stopping_patience > 0,
                 "data.multi_label": config.data.multi_label, "train.stack": config.train.stack == "always"}
        problems += [f"{k}: needs validation rows, and data.validation_fraction 0 holds out none; hold some out "
                     "(e.g. data.validation_fraction 0.1), give data.validation, or, for a preset with a validation "
                     "split of its own, leave data.validation_fraction unset" for k, on in needs.items() if on]
    if config.train.keep == "last" and config.train.early_stopping_patience > 0:
        problems.append("train.early_stopping_patience: stops when train.metric stops improving, which train.keep last "
                        "does not follow; set train.keep best (or auto), or early stopping 0")
    if config.train.method == "contrastive":
        problems += [f"{field}: not supported with train.method contrastive, use method standard"
                     for field in contrastive_clashes(config)]
    return problems + distill_problems(config)


def contrastive_clashes(config: Any) -> list[str]:
    """The set fields the contrastive method cannot take (pairs of one label per text, drawn from the whole set, every
    layer tuned): train.method contrastive refuses them, and auto never chooses contrastive beside them."""
    model = config.model
    clashes = {"data.multi_label": config.data.multi_label, "data.streaming": config.data.streaming,
               "lora.r": config.lora.r, "model.init_from": model.init_from,
               "model.freeze": model.freeze not in ("none", "encoder"), "distill.teacher": config.distill.teacher}
    return [field for field, on in clashes.items() if on]


def _streaming_problems(config: Any) -> list[str]:
    """Everything data.streaming cannot do (see data.streaming)."""
    data, problems = config.data, []
    if not data.label_names:
        problems.append("data.label_names: required with data.streaming (the label set is not scanned for); "
                        "list the names in id order, e.g. --data.label_names World,Sports")
    if data.validation is None:
        problems.append("data.validation: required with data.streaming (a stream cannot hold out a seeded "
                        "validation split); give a separate validation file")
    if data.file_format(Path(data.train).expanduser()) not in STREAMABLE_FORMATS:
        problems.append(f"data.train: {data.train} is not a CSV, TSV, JSONL or Parquet file; data.streaming reads "
                        "only those (convert JSON to JSONL: one object per line)")
    if config.train.class_weights == "balanced":
        problems.append("train.class_weights: balanced needs every label up front; use none with data.streaming")
    if config.model.init_from is not None:
        problems.append("model.init_from: not supported with data.streaming")
    if config.uses_cached_features:
        problems.append("train.cache_features: set none with data.streaming and model.freeze encoder")
    if config.train.stack == "always":
        problems.append("train.stack: always fits TF-IDF on the whole training split, which data.streaming does not hold")
    if (config.model.window_stride or 0) > 0:  # windows per text are unknown until read: batch sizes need them up front
        problems.append("model.window_stride: sliding windows are not supported with data.streaming; "
                        "use model.keep_head (head+tail truncation) for long texts")
    return problems
