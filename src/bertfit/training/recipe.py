"""The training recipe: setup -> fit -> save -> test. `train(config)` is the public entry point."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertfit import artifacts
from bertfit.atomic import recover_stale, write_json_atomic
from bertfit.config import RunConfig, config_to_dict, flatten, replace
from bertfit.data.batching import FeatureSplit, TokenizedSplit
from bertfit.data.labels import LabelMap
from bertfit.data.splits import TextDataset
from bertfit.data.streaming import StreamedSplit
from bertfit.data.tables import with_table_files
from bertfit.errors import BertfitError
from bertfit.infer.engine import InferenceContext, split_logits
from bertfit.meta import ModelMeta
from bertfit.metrics import classification_metrics, overfitting_warning, sigmoid, tune_thresholds
from bertfit.model import count_parameters
from bertfit.runtime.device import Precision, compile_model, make_scaler
from bertfit.runtime.distributed import (
    Distributed,
    barrier,
    broadcast_object,
    close_distributed,
    init_distributed,
)
from bertfit.runtime.env import environment
from bertfit.training.checkpoint import check_resumable, drop_checkpoint
from bertfit.training.contrastive import tune_encoder
from bertfit.training.features import encode_splits
from bertfit.training.growth import forgetting
from bertfit.training.loop import LoopState, Trainer
from bertfit.training.losses import loss_function
from bertfit.training.optim import build_optimizer, build_scheduler
from bertfit.training.plan import RunPlan, save_plan
from bertfit.training.setup import Prepared, Splits, cache_dir, prepare
from bertfit.training.stack import stack_at_end_of_training
from bertfit.training.steps import Session, Steps, total_steps
from bertfit.training.trackers import Tracker, open_trackers
from bertfit.training.writer import EvalCallback, RunFiles, RunWriter, SilentWriter, restore_session

log = logging.getLogger(__name__)


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
    overfitting_warning: str | None = None  # the rule `bertfit evaluate` applies, on this run's evaluations
    stack: dict[str, Any] | None = None  # results.json's stack record: TF-IDF vs the model, and whether a stack was built
    kept: str = "best"  # train.keep: the weights kept are the best evaluation's, or the last step's
    plan: RunPlan | None = None  # what the run was planned to do and cost (training.plan)

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's held-out scores: the test split's, or the best checkpoint's validation scores when the run has
        no test data; "split" says which (None: the run held out no rows)."""
        if self.test is not None:
            return {"split": "test", **self.test}
        return {"split": "validation" if self.validation else None, **self.validation}


def train(config: RunConfig | None = None, resume: str | Path | None = None, overwrite: bool = False,
          on_eval: EvalCallback | None = None, data: dict[str, Any] | None = None) -> TrainResult:
    """Fine-tune `config.model` on `config.data` into a run directory, or continue the run at `resume`.

    `on_eval(state, record)` runs after every evaluation; an exception it raises stops training.
    `data` gives splits as pandas DataFrames or datasets.Datasets ({"train": frame, "test": ...}) in place of
    config.data's files: each is saved once as Parquet (bertfit.data.tables), which config.yaml then names.
    """
    if data is not None:
        if config is None or resume is not None:
            raise BertfitError("data: tables go with a config for a new run; a resumed run reads the files it names")
        config = with_table_files(config, data)
    if resume is not None:
        config = artifacts.read_run_config(Path(resume))
        check_resumable(Path(resume))
    elif config is None:
        raise BertfitError("train() needs a config or a run directory to resume")
    dist, device = init_distributed(config.train.device)
    try:
        if config.name is None:  # every rank must agree on the name: rank 0's clock decides
            config = replace(config, name=broadcast_object(time.strftime("%Y%m%d-%H%M%S"), dist))
        if resume is None:
            _check_run_dir_free(config, overwrite, dist)
        return _train(config, dist, device, resume, overwrite, on_eval)
    finally:
        close_distributed(dist)


def plan_run(config: RunConfig) -> RunPlan:
    """What `train(config)` would do and what it would cost here, decided and logged without training or writing."""
    dist, device = init_distributed(config.train.device)
    try:
        return prepare(config, dist, device, None, keep_validation=False).plan
    finally:
        close_distributed(dist)



def _train(config: RunConfig, dist: Distributed, device: torch.device, resume: str | Path | None, overwrite: bool,
           on_eval: EvalCallback | None) -> TrainResult:
    # A search compares its trials on validation scores (on_eval): its runs always hold rows out.
    ready = prepare(config, dist, device, resume, keep_validation=on_eval is not None)
    run_dir = _open_run_dir(ready.plan.config, ready.dataset.labels, resume, overwrite, dist)
    if resume is None and dist.is_main:  # with the config as config.yaml keeps it (data paths made absolute)
        save_plan(dataclasses.replace(ready.plan, config=artifacts.read_run_config(run_dir)), run_dir)
    return dataclasses.replace(_run(ready, run_dir, dist, resume is not None, on_eval), plan=ready.plan)


def _run(ready: Prepared, run_dir: Path, dist: Distributed, resumed: bool, on_eval: EvalCallback | None) -> TrainResult:
    """The plan carried out: the contrastive encoder stage (if planned), the loop, the test evaluation."""
    config, tokenizer, context, training = ready.plan.config, ready.tokenizer, ready.context, ready.training
    dataset, tokens, model, device = ready.dataset, ready.tokens, ready.model, ready.context.device
    stage = tune_encoder(model, tokens["train"], config, training, run_dir, resumed, dist) \
        if config.train.method == "contrastive" else None
    if stage is not None and stage.interrupted:
        log.warning("interrupted in the contrastive stage; continue with: bertfit train --resume %s", run_dir)
        return TrainResult(run_dir, 0, 0, {}, None, stage.seconds, 0.0, True)
    tokens = _prepare_splits(model, tokens, config, context, training)
    session = _setup_session(model, tokens["train"], config, context, training.precision, dist)
    resumes_loop = resumed and (stage is None or stage.loop_checkpoint)
    state = restore_session(run_dir, session, config.train.seed) if resumes_loop else LoopState()
    state.train_seconds += stage.seconds if stage is not None else 0.0  # the contrastive encoder stage is training too
    trainable, total = count_parameters(model)
    evaluation = "" if training.precision == context.precision else f" ({context.precision.name} evaluation)"
    log.info("run %s: %d train / %d validation %s, %s of %s parameters train, %s %s%s", run_dir,
             len(tokens["train"]), len(tokens.get("validation", ())), "windows" if config.model.window_stride else "rows",
             f"{trainable:,}", f"{total:,}", device, training.precision.name + evaluation,
             f", rank {dist.rank} of {dist.world_size}" if dist.enabled else "")
    # Only rank 0 writes the run directory; the others train and evaluate identically but silently.
    files = RunFiles(run_dir, tokenizer, ModelMeta.for_run(config, dataset.labels, state.step))
    writer = RunWriter(files, session, _trackers(config, run_dir, state.step or None), on_eval) if dist.is_main \
        else SilentWriter(dist)
    try:
        steps = Steps.over_split(session, tokens["train"], config.train)
        trainer = Trainer(session, steps, tokens.get("validation"), dataset.labels.names, config.train, writer)
        state = trainer.fit(state)
    finally:
        writer.close()
    barrier(dist)  # rank 0's model/ folder is complete before anyone reads it
    if not dist.is_main:
        return TrainResult(run_dir, state.step, state.best_step, _best_validation(state), None, state.train_seconds, 0.0,
                           state.interrupted)
    return _finish(run_dir, session, tokens, dataset, config, state)


def _trackers(config: RunConfig, run_dir: Path, purge_step: int | None) -> list[Tracker]:
    """train.report_to's trackers; train.tensorboard false leaves TensorBoard out (the field predates report_to)."""
    names = tuple(n for n in config.train.report_to if n != "tensorboard" or config.train.tensorboard)
    return open_trackers(names, run_dir, flatten(config_to_dict(config)), purge_step, config.train.mlflow_uri)


def _prepare_splits(model: torch.nn.Module, tokens: Splits, config: RunConfig, context: InferenceContext,
                    training: InferenceContext) -> Splits:
    """With a frozen encoder, every split as its pooled vectors (the train split in `training`'s precision); else
    the tokens, the model compiled when asked."""
    if config.uses_cached_features:
        return encode_splits(model, tokens, context, cache_dir(config) if config.train.cache_features == "disk" else None,
                             training)
    if config.train.compile:
        compile_model(model)
    return tokens


def _open_run_dir(config: RunConfig, labels: LabelMap, resume: str | Path | None, overwrite: bool,
                  dist: Distributed) -> Path:
    """The run directory: created (rank 0), or the resumed one with what a crash mid-save left cleared away."""
    if resume is not None:
        if dist.is_main:  # a crash mid-save leaves staging folders (and, rarely, model/ as .model.old)
            for folder in (artifacts.MODEL_DIR, artifacts.CHECKPOINT_DIR):
                recover_stale(Path(resume) / folder)
        barrier(dist)
        return Path(resume)
    run_dir = Path(config.output_dir) / config.name
    if dist.is_main:
        run_dir = artifacts.create_run_dir(config, labels, environment(config.train.device, config.train.precision),
                                           overwrite)
    return run_dir


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


def _setup_session(model: torch.nn.Module, train_split: TokenizedSplit | FeatureSplit | StreamedSplit,
                   config: RunConfig, context: InferenceContext, precision: Precision,
                   dist: Distributed = Distributed()) -> Session:
    cfg, device = config.train, context.device
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, device)
    scheduler = build_scheduler(optimizer, cfg.warmup_ratio, total_steps(len(train_split), cfg))
    loss_fn = loss_function(cfg, train_split.labels, model.head.out_features, device, config.distill)
    return Session(model, optimizer, scheduler, make_scaler(device, precision), loss_fn, context, cfg.max_grad_norm, dist,
                   precision)


def _finish(run_dir: Path, session: Session, tokens: Splits, dataset: TextDataset, config: RunConfig,
            state: LoopState) -> TrainResult:
    """Reload the best weights, evaluate them on the test split, fit the TF-IDF reference (and stack), write results.json."""
    labels = dataset.labels
    rate = state.samples_seen / max(state.train_seconds, 1e-9)
    validation = _best_validation(state)
    if state.interrupted:
        log.warning("interrupted at step %d; continue with: bertfit train --resume %s", state.step, run_dir)
        return TrainResult(run_dir, state.step, state.best_step, validation, None, state.train_seconds, rate, True)
    artifacts.load_saved_weights(run_dir, session.model)
    logits = {name: split_logits(session.model, tokens[name], session.context) for name in ("validation", "test")
              if name in tokens}
    thresholds = tune_label_thresholds(run_dir, logits["validation"], tokens["validation"], labels) \
        if config.data.multi_label else None
    test = None
    if "test" in tokens:
        test = classification_metrics(logits["test"], tokens["test"].document_labels, labels.names, thresholds)
        if config.model.init_from is not None:
            test |= forgetting(config.model.init_from, session, tokens["test"], logits["test"])
    warning = overfitting_warning(state.history)
    if warning:
        log.warning("%s", warning)
    stacking = stack_at_end_of_training(run_dir, config, dataset, logits)
    result = TrainResult(run_dir, state.step, state.best_step, validation, test, state.train_seconds, rate, False, warning,
                         stacking["stack"], config.train.keep)
    write_json_atomic(run_dir / artifacts.RESULTS_FILE, {
        "best_step": state.best_step, "steps": state.step, "validation": validation, "test": test,
        **({"thresholds": dict(zip(labels.names, thresholds.tolist()))} if thresholds is not None else {}),
        "train_seconds": round(state.train_seconds, 2), "train_samples_per_second": round(rate, 2),
        "rows": {name: split.documents for name, split in tokens.items()}, **stacking})
    if not config.train.keep_checkpoint:  # finished: the checkpoint could only resume what is done
        drop_checkpoint(run_dir)
    return result


def _best_validation(state: LoopState) -> dict[str, float]:
    """The validation metrics of the best evaluation, without the eval/ prefix."""
    best = next((r for r in state.history if r["step"] == state.best_step), {})
    return {k.removeprefix("eval/"): v for k, v in best.items() if k.startswith("eval/")}


def tune_label_thresholds(run_dir: Path, logits: np.ndarray, validation: TokenizedSplit | FeatureSplit,
                          labels: LabelMap) -> np.ndarray:
    """Per-label probability cut-offs that maximise validation F1 (from the model's validation logits), stored
    in model/bertfit.json."""
    thresholds = tune_thresholds(sigmoid(logits), validation.document_labels)
    artifacts.update_model_meta(run_dir, thresholds=dict(zip(labels.names, thresholds.tolist())))
    log.info("tuned thresholds: %s", ", ".join(f"{n}={t:.2f}" for n, t in zip(labels.names, thresholds)))
    return thresholds
