"""A run made ready for its first step: data read, texts cut and tokenised, the model built, the run planned."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertfit.config import AUTO_MODEL, EMBEDDED_MODEL, RunConfig, override
from bertfit.data.batching import FeatureSplit, TokenizedSplit, default_cache_dir, tokenize
from bertfit.data.splits import TextDataset, load_dataset
from bertfit.data.streaming import StreamedSplit, load_streamed
from bertfit.data.windows import TextCut
from bertfit.infer.engine import InferenceContext
from bertfit.model import build_classifier, count_parameters, load_tokenizer
from bertfit.runtime.device import choose_precision
from bertfit.runtime.distributed import Distributed, broadcast_object, broadcast_parameters
from bertfit.runtime.seed import seed_everything
from bertfit.training import defaults, encoders
from bertfit.training.distill import with_teacher_targets
from bertfit.training.growth import initial_weights
from bertfit.training.plan import RunPlan, log_plan, make_plan, measure_cost, read_plan
from bertfit.training.writer import training_precision

Splits = dict[str, TokenizedSplit | FeatureSplit | StreamedSplit]  # train (maybe streamed), validation, test


@dataclass(frozen=True)
class Prepared:
    """What a run holds before its first step: its plan, data and model, and how it trains and evaluates."""

    plan: RunPlan
    tokenizer: Any
    context: InferenceContext  # evaluation
    training: InferenceContext  # training steps
    dataset: TextDataset
    tokens: Splits
    model: torch.nn.Module


def prepare(config: RunConfig, dist: Distributed, device: torch.device, resume: str | Path | None,
            keep_validation: bool) -> Prepared:
    """The data read, the encoder chosen (model.name auto), the model built and the run planned (a resumed run keeps
    the plan it started with)."""
    if config.model.name != AUTO_MODEL:
        return _prepare(config, dist, device, resume, keep_validation)
    if config.data.streaming:  # its rows are not counted up front: the embedded encoder, the default before auto
        return _prepare(override(config, {"model.name": EMBEDDED_MODEL}), dist, device, resume, keep_validation)

    def estimate(candidate: encoders.Candidate) -> encoders.Estimate:
        plan = _prepare(encoders.with_candidate(config, candidate), dist, device, None, keep_validation, quiet=True).plan
        seconds = plan.training_seconds  # the budget bounds training: scoring the held-out texts is a stage of its own
        return encoders.Estimate(seconds if seconds is not None else math.nan, plan.texts_per_second or 0.0)

    choice = encoders.choose(config, load_dataset(config.data, config.train.seed), estimate)
    # Prepared afresh, not kept from its estimate: seeded the same way, the run is the one `--model.name` would make
    # (its probe is cached and its tokens are on disk, so this costs the model's building only).
    ready = _prepare(encoders.with_candidate(config, choice.chosen), dist, device, resume, keep_validation, quiet=True)
    late = encoders.over_budget(choice, ready.plan.training_seconds)
    plan = dataclasses.replace(ready.plan, encoder=tuple(choice.lines()), notes=ready.plan.notes + ((late,) if late else ()))
    log_plan(plan, resumed=resume is not None)
    return dataclasses.replace(ready, plan=plan)


def _prepare(config: RunConfig, dist: Distributed, device: torch.device, resume: str | Path | None,
             keep_validation: bool, quiet: bool = False) -> Prepared:
    seed_everything(config.train.seed + dist.rank)  # ranks draw different dropout masks, like one big batch
    tokenizer = load_tokenizer(config.model.name)
    # Training steps may autocast where evaluation does not (bf16 on a CPU with AMX): the run's scores are those
    # `bertfit evaluate` gives (runtime.device.choose_precision).
    context = InferenceContext(device, choose_precision(config.train.precision, device), tokenizer.pad_token_id,
                               config.train.eval_batch_size)
    training = dataclasses.replace(context, precision=training_precision(config, device, resume, dist))
    # A resumed run keeps the plan it started with (on the config it saved): its cost is not measured again.
    started = read_plan(Path(resume)) if resume is not None else None
    plan, dataset, tokens, model = setup_data_and_model(config, tokenizer, context, training, dist, keep_validation,
                                                        measure=started is None)
    plan = dataclasses.replace(started, config=plan.config) if started is not None else plan
    if not quiet:
        log_plan(plan, resumed=resume is not None)
    return Prepared(plan, tokenizer, context, training, dataset, tokens, model)


def setup_data_and_model(config: RunConfig, tokenizer: Any, context: InferenceContext, training: InferenceContext,
                         dist: Distributed, keep_validation: bool = False, measure: bool = True
                         ) -> tuple[RunPlan, TextDataset, Splits, torch.nn.Module]:
    """The run's plan (training.plan: every unset field chosen from the data, the cost measured here unless not
    `measure`), the tokenised splits and the model on its device. `keep_validation`: a default validation share is
    held out even for a few-shot run."""
    if config.data.streaming:  # the training split is read chunk by chunk during fit (data.streaming)
        # A stream cuts its batches as it reads: their size is needed now; its windows are refused (config).
        config = override(config, {"train.batch_size": config.train.batch_size or defaults.batch_size(None),
                                   "model.window_stride": config.model.window_stride or 0})
        dataset, stream = load_streamed(config, tokenizer)
    else:
        dataset, stream = load_dataset(config.data, config.train.seed), None
        if not keep_validation and defaults.holds_out_nothing(config, dataset):
            config = defaults.every_row_trains(config, dataset)
            dataset = load_dataset(config.data, config.train.seed)  # read as a resume will, from config.yaml's 0
        if config.model.window_stride is None:
            config = defaults.choose_windows(config, dataset.splits["train"].texts, tokenizer)
    # Before tokenising: with model.init_from the labels take the earlier run's ids.
    dataset, initial, label_rows = initial_weights(config, dataset)
    if config.distill.teacher is not None:  # the training targets become the teacher's logits beside the gold labels
        dataset = with_teacher_targets(config, dataset, context, cache_dir(config))
    tokens = ({"train": stream} if stream is not None else {}) | tokenize_dataset(dataset, tokenizer, config)
    model = build_classifier(config.model, len(dataset.labels), config.train.seed, config.lora, initial, label_rows)
    facts = defaults.DataFacts(len(tokens["train"]), None if stream is not None else len(dataset.splits["train"]),
                               len(dataset.labels), count_parameters(model.encoder)[1],
                               len(dataset.splits["validation"]) if "validation" in dataset.splits else 0,
                               () if stream is not None or config.data.multi_label  # texts, not windows, a label
                               else tuple(np.unique(tokens["train"].document_labels, return_counts=True)[1].tolist()))
    model = model.to(context.device)
    broadcast_parameters(model, dist)
    cost = measure_cost(model, tokens["train"], training) if stream is None and measure else None
    plan = broadcast_object(make_plan(config, facts, tokens, cost, dataset.validation_fraction), dist)
    return plan, dataset, tokens, model


def tokenize_dataset(dataset: TextDataset, tokenizer: Any, config: RunConfig) -> dict[str, TokenizedSplit]:
    cache = cache_dir(config)
    return {name: tokenize(split.texts, split.labels, tokenizer, TextCut.of_model(config.model, name), cache)
            for name, split in dataset.splits.items()}


def cache_dir(config: RunConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()
