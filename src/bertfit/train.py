"""The training recipe: setup -> fit -> save -> test. `train(config)` is the public entry point."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bertfit import artifacts
from bertfit.batching import FeatureSplit, TokenizedSplit, default_cache_dir, tokenize
from bertfit.config import RunConfig, TrainConfig, config_to_dict, replace
from bertfit.data import LabelMap, TextDataset, load_dataset
from bertfit.errors import BertfitError
from bertfit.features import encode_splits, use_cached_features
from bertfit.growth import forgetting, initial_weights
from bertfit.loop import (LoopState, Session, class_weights, fit, split_logits, state_dict, state_from_dict,
                          steps_per_epoch)
from bertfit.metrics import classification_metrics, sigmoid, tune_thresholds
from bertfit.model import build_classifier, count_parameters, load_tokenizer
from bertfit.optim import build_optimizer, build_scheduler
from bertfit.runtime import (Distributed, barrier, broadcast_object, broadcast_parameters, choose_precision,
                             close_distributed, compile_model, environment, gather_rng_states, init_distributed,
                             make_scaler, restore_rng_states, seed_everything)
from bertfit.streaming import load_streamed
from bertfit.windows import WindowSettings

log = logging.getLogger(__name__)

EvalCallback = Callable[[LoopState, dict[str, Any]], None]  # (loop state, metrics record) after each evaluation


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int  # optimizer steps done
    best_step: int
    validation: dict[str, float]  # metrics of the best checkpoint
    test: dict[str, float] | None
    train_seconds: float
    samples_per_second: float
    interrupted: bool


class RunWriter:
    """Writes evaluations, scalars, the best model and checkpoints into the run directory."""

    def __init__(self, run_dir: Path, session: Session, tokenizer: Any, labels: LabelMap, config: RunConfig,
                 tensorboard: bool, purge_step: int | None = None, on_eval: EvalCallback | None = None):
        self.run_dir, self.session, self.tokenizer, self.labels, self.config = run_dir, session, tokenizer, labels, config
        self.on_eval_callback = on_eval
        self.scalars = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.scalars = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)

    def on_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if self.scalars is not None:
            for key, value in scalars.items():
                self.scalars.add_scalar(key, value, step)

    def on_eval(self, state: LoopState, record: dict[str, Any], improved: bool) -> None:
        artifacts.append_metrics(self.run_dir, record)
        self.on_scalars(state.step, {k: v for k, v in record.items() if k.startswith("eval/")})
        if improved:
            artifacts.save_model(self.run_dir / artifacts.MODEL_DIR, self.session.model, self.tokenizer, self.labels,
                                 model_meta(self.config, state))
        if self.on_eval_callback is not None:  # last: it may raise to stop the run (search pruning)
            self.on_eval_callback(state, record)

    def on_checkpoint(self, state: LoopState) -> None:
        session, rng_ranks = self.session, gather_rng_states(self.session.dist)
        # "rng" (rank 0's) stays for bertfit versions that read only that key.
        artifacts.save_checkpoint(self.run_dir, session.model, {
            "loop": state_dict(state), "optimizer": session.optimizer.state_dict(),
            "scheduler": session.scheduler.state_dict(), "scaler": session.scaler.state_dict(),
            "rng": rng_ranks[0], "rng_ranks": rng_ranks})

    def close(self) -> None:
        if self.scalars is not None:
            self.scalars.close()


def model_meta(config: RunConfig, state: LoopState) -> dict[str, Any]:
    return {"base_model": config.model.name, "pooling": config.model.pooling, "dropout": config.model.dropout,
            "max_length": config.model.max_length, "keep_head": config.model.keep_head,
            "window_stride": config.model.window_stride, "window_pooling": config.model.window_pooling,
            "problem_type": config.data.problem_type,
            "temperature": 1.0, "step": state.step,
            **({"lora": config_to_dict(config.lora)} if config.lora.r > 0 else {})}


def train(config: RunConfig | None = None, resume: str | Path | None = None, overwrite: bool = False,
          on_eval: EvalCallback | None = None) -> TrainResult:
    """Fine-tune `config.model` on `config.data` into a run directory, or continue the run at `resume`.

    `on_eval(state, record)` runs after every evaluation; an exception it raises stops training.
    """
    if resume is not None:
        run_dir = Path(resume)
        config = artifacts.read_run_config(run_dir)
    elif config is None:
        raise BertfitError("train() needs a config or a run directory to resume")
    dist, device = init_distributed(config.train.device)
    try:
        return _train(config, dist, device, resume, overwrite, on_eval)
    finally:
        close_distributed(dist)


def _train(config: RunConfig, dist: Distributed, device: torch.device, resume: str | Path | None, overwrite: bool,
           on_eval: EvalCallback | None) -> TrainResult:
    if config.name is None:  # every rank must agree on the name: rank 0's clock decides
        config = _with_name(config, broadcast_object(time.strftime("%Y%m%d-%H%M%S"), dist))
    if resume is None:
        _check_run_dir_free(config, overwrite, dist)
    seed_everything(config.train.seed + dist.rank)  # ranks draw different dropout masks, like one big batch
    precision = choose_precision(config.train.precision, device)
    tokenizer = load_tokenizer(config.model.name)
    if config.data.streaming:  # the training split is read chunk by chunk during fit (bertfit.streaming)
        dataset, stream = load_streamed(config, tokenizer)
    else:
        dataset, stream = load_dataset(config.data, config.train.seed), None
    # Before tokenising: with model.init_from the labels take the earlier run's ids.
    dataset, initial, label_rows = initial_weights(config, dataset)
    tokens = ({"train": stream} if stream is not None else {}) | tokenize_dataset(dataset, tokenizer, config)
    model = build_classifier(config.model, len(dataset.labels), config.train.seed, config.lora, initial, label_rows)
    model = model.to(device)
    broadcast_parameters(model, dist)
    if use_cached_features(config):  # from here on the splits are pooled vectors, not tokens
        tokens = encode_splits(model, tokens, tokenizer.pad_token_id, config.train.eval_batch_size, device, precision,
                               _cache_dir(config) if config.train.cache_features == "disk" else None)
    elif config.train.compile:
        compile_model(model)
    session = _session(model, tokens["train"], config, device, precision, tokenizer.pad_token_id, dist)
    state = LoopState()
    if resume is not None:
        run_dir = Path(resume)
        state = _restore(run_dir, session, config.train.seed)
    elif dist.is_main:
        run_dir = artifacts.create_run_dir(config, dataset.labels, environment(config.train.device, config.train.precision), overwrite)
    else:
        run_dir = Path(config.output_dir) / config.name
    trainable, total = count_parameters(model)
    log.info("run %s: %d train / %d validation %s, %s of %s parameters train, %s %s%s", run_dir,
             len(tokens["train"]), len(tokens["validation"]), "windows" if config.model.window_stride else "rows", f"{trainable:,}", f"{total:,}", device, precision.name,
             f", rank {dist.rank} of {dist.world_size}" if dist.enabled else "")
    # Only rank 0 writes the run directory; the others train and evaluate identically but silently.
    writer = RunWriter(run_dir, session, tokenizer, dataset.labels, config, config.train.tensorboard, state.step or None,
                       on_eval) if dist.is_main else _SilentWriter(dist)
    try:
        state = fit(session, tokens["train"], tokens["validation"], dataset.labels.names, config.train, state, writer)
    finally:
        writer.close()
    barrier(dist)  # rank 0's model/ folder is complete before anyone reads it
    if not dist.is_main:
        return TrainResult(run_dir, state.step, state.best_step, _best_validation(state), None, state.train_seconds, 0.0,
                           state.interrupted)
    return _finish(run_dir, session, tokens, dataset.labels, config, state)


def _check_run_dir_free(config: RunConfig, overwrite: bool, dist: Distributed) -> None:
    """Rank 0 decides (other ranks may not share its disk, or may look after it created the folder)."""
    problem = None
    if dist.is_main:
        try:
            artifacts.check_run_dir_free(config, overwrite)
        except BertfitError as error:
            problem = str(error)
    problem = broadcast_object(problem, dist)
    if problem is not None:
        raise BertfitError(problem)


class _SilentWriter:
    """RunHooks for ranks other than 0: they keep no files, but send rank 0 their RNG state at checkpoints."""

    def __init__(self, dist: Distributed):
        self.dist = dist

    def on_eval(self, state: LoopState, record: dict[str, Any], improved: bool) -> None: ...
    def on_checkpoint(self, state: LoopState) -> None: gather_rng_states(self.dist)
    def on_scalars(self, step: int, scalars: dict[str, float]) -> None: ...
    def close(self) -> None: ...


def tokenize_dataset(dataset: TextDataset, tokenizer: Any, config: RunConfig) -> dict[str, TokenizedSplit]:
    cache = _cache_dir(config)
    return {name: tokenize(split.texts, split.labels, tokenizer, config.model.max_length, cache, config.model.keep_head,
                           WindowSettings.for_split(config.model, name))
            for name, split in dataset.splits.items()}


def _cache_dir(config: RunConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()


def _session(model: torch.nn.Module, train_split: TokenizedSplit, config: RunConfig, device: torch.device,
             precision, pad_id: int, dist: Distributed = Distributed()) -> Session:
    cfg = config.train
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, device)
    scheduler = build_scheduler(optimizer, cfg.warmup_ratio, steps_per_epoch(len(train_split), cfg) * cfg.epochs)
    loss_fn = loss_function(cfg, train_split.labels, model.head.out_features, device)
    return Session(model, optimizer, scheduler, make_scaler(device, precision), loss_fn, device, precision,
                   cfg.max_grad_norm, pad_id, dist)


def loss_function(cfg: TrainConfig, labels: np.ndarray, num_labels: int, device: torch.device) -> Callable:
    """Summed cross-entropy, or for multi-label data (a 0/1 matrix) summed binary cross-entropy per label."""
    balanced = cfg.class_weights == "balanced"
    if labels.ndim == 1:
        weights = class_weights(labels, num_labels).to(device) if balanced else None
        return torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing, reduction="sum")
    positives = labels.sum(0)
    # balanced: each label's positives weigh negatives / positives, so rare labels are not ignored.
    pos_weight = torch.tensor(np.where(positives > 0, (len(labels) - positives) / np.maximum(positives, 1), 1.0),
                              dtype=torch.float32, device=device) if balanced else None
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="sum")
    smoothing = cfg.label_smoothing

    def multi_label_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return bce(logits, targets * (1 - smoothing) + smoothing / 2)
    return multi_label_loss


def _restore(run_dir: Path, session: Session, seed: int) -> LoopState:
    saved = artifacts.load_checkpoint(run_dir, session.model)
    session.optimizer.load_state_dict(saved["optimizer"])
    session.scheduler.load_state_dict(saved["scheduler"])
    session.scaler.load_state_dict(saved["scaler"])
    state = state_from_dict(saved["loop"])
    restore_rng_states(saved["rng_ranks"], session.dist, seed, state.step)
    state.interrupted = False
    if session.dist.is_main:
        artifacts.truncate_metrics(run_dir, state.step)
    log.info("resuming %s at step %d (epoch %d)", run_dir, state.step, state.epoch)
    return state


def _finish(run_dir: Path, session: Session, tokens: dict[str, TokenizedSplit | FeatureSplit], labels: LabelMap,
            config: RunConfig, state: LoopState) -> TrainResult:
    """Reload the best weights, evaluate them on the test split, write results.json."""
    rate = state.samples_seen / max(state.train_seconds, 1e-9)
    validation = _best_validation(state)
    if state.interrupted:
        log.warning("interrupted at step %d; continue with: bertfit train --resume %s", state.step, run_dir)
        return TrainResult(run_dir, state.step, state.best_step, validation, None, state.train_seconds, rate, True)
    artifacts.load_saved_weights(run_dir, session.model)
    thresholds = tune_label_thresholds(run_dir, session, tokens["validation"], labels, config) \
        if config.data.multi_label else None
    test = None
    if "test" in tokens:
        logits = split_logits(session, tokens["test"], config.train.eval_batch_size)
        test = classification_metrics(logits, tokens["test"].document_labels, labels.names, thresholds)
        if config.model.init_from is not None:
            test |= forgetting(config.model.init_from, session, tokens["test"], logits, config.train.eval_batch_size)
    result = TrainResult(run_dir, state.step, state.best_step, validation, test, state.train_seconds, rate, False)
    artifacts.write_json_atomic(run_dir / "results.json", {
        "best_step": state.best_step, "steps": state.step, "validation": validation, "test": test,
        **({"thresholds": dict(zip(labels.names, thresholds.tolist()))} if thresholds is not None else {}),
        "train_seconds": round(state.train_seconds, 2), "train_samples_per_second": round(rate, 2),
        "rows": {name: split.documents for name, split in tokens.items()}})
    return result


def _best_validation(state: LoopState) -> dict[str, float]:
    """The validation metrics of the best evaluation, without the eval/ prefix."""
    best = next((r for r in state.history if r["step"] == state.best_step), {})
    return {k.removeprefix("eval/"): v for k, v in best.items() if k.startswith("eval/")}


def tune_label_thresholds(run_dir: Path, session: Session, validation: TokenizedSplit | FeatureSplit, labels: LabelMap,
                          config: RunConfig) -> np.ndarray:
    """Per-label probability cut-offs that maximise validation F1, stored in model/bertfit.json."""
    logits = split_logits(session, validation, config.train.eval_batch_size)
    thresholds = tune_thresholds(sigmoid(logits), validation.document_labels)
    artifacts.update_model_meta(run_dir, thresholds=dict(zip(labels.names, thresholds.tolist())))
    log.info("tuned thresholds: %s", ", ".join(f"{n}={t:.2f}" for n, t in zip(labels.names, thresholds)))
    return thresholds


def _with_name(config: RunConfig, name: str) -> RunConfig:
    return replace(config, name=name)
