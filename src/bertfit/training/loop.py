"""The training loop of every stage: steps (training.steps), evaluation, and `fit` with checkpoints and early stopping.

The loop's position is plain data (`LoopState`): epoch, micro-batches consumed in that epoch, step.
Batches are a pure function of (seed, epoch), so a checkpoint taken between steps, with the RNG
states, resumes to the same weights as a run that never stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from bertfit.config import TrainConfig
from bertfit.data.batching import FeatureSplit, TokenizedSplit
from bertfit.infer.engine import split_logits
from bertfit.metrics import classification_metrics, is_improvement
from bertfit.runtime.device import wait_for_device
from bertfit.runtime.distributed import Distributed, any_rank
from bertfit.training.interrupt import StopRequest
from bertfit.training.steps import Session, Steps, train_step

log = logging.getLogger(__name__)

LOG_EVERY_STEPS = 10  # the loss is read back from the device this often, not every step


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    batches_done: int = 0  # micro-batches of the current epoch already trained on
    best_score: float | None = None
    best_step: int = -1
    stale_evals: int = 0
    samples_seen: int = 0
    train_seconds: float = 0.0
    # Training loss and accuracy summed since the last evaluation (for train/* in its record); kept in
    # the checkpoint so a resumed run writes the same record as one that never stopped.
    since_eval: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "steps": 0, "correct": 0, "samples": 0})
    finished: bool = False
    interrupted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


class RunHooks(Protocol):
    """What the Trainer asks of the run directory (see training.writer.RunWriter)."""

    def on_eval(self, state: LoopState, record: dict[str, Any], improved: bool) -> None: ...
    def on_checkpoint(self, state: LoopState, with_model: bool) -> None: ...
    def on_scalars(self, step: int, scalars: dict[str, float]) -> None: ...


def evaluate(session: Session, split: TokenizedSplit | FeatureSplit, names: tuple[str, ...],
             thresholds: np.ndarray | None = None) -> dict[str, float]:
    logits = split_logits(session.model, split, session.context)
    return classification_metrics(logits, split.document_labels, names, thresholds)


class Trainer:
    """One run's loop: the session, its data and hooks, and the meters its steps share; `fit` runs it."""

    def __init__(self, session: Session, steps: Steps, validation: TokenizedSplit | FeatureSplit | None,
                 names: tuple[str, ...], config: TrainConfig, hooks: RunHooks):
        self.session, self.steps, self.validation, self.names = session, steps, validation, names
        self.config, self.hooks = config, hooks
        self.total_steps = steps.total
        # train.keep last (auto: on < 100 validation rows, or a contrastive head), or no validation split to choose on:
        # model/ is the latest checkpoint's weights, written with it, not at every evaluation.
        self.keeps_last = config.keep == "last" or validation is None

    def fit(self, state: LoopState) -> LoopState:
        """Train from `state` to the end (or early stop, or Ctrl-C), evaluating and checkpointing on the way."""
        session, config = self.session, self.config
        self.state, self.meters = state, _Meters(session.device, state.since_eval)
        self.progress = tqdm(total=self.total_steps, initial=state.step, unit="step", dynamic_ncols=True, desc=self.steps.name,
                             disable=not (config.progress and session.dist.is_main))
        stop = StopRequest()
        session.model.train()
        with stop.installed():
            while state.step < self.total_steps and not state.finished and not state.interrupted:
                self._epoch(stop)
        state.finished = not state.interrupted
        self.progress.close()
        return state

    def _epoch(self, stop: StopRequest) -> None:
        """The rest of the current epoch (until its end, an early stop or an agreed Ctrl-C)."""
        state, config = self.state, self.config
        sizes, data = self.steps.epoch(state.epoch, state.batches_done)
        last = time.perf_counter()
        while state.batches_done < len(sizes):
            group = [next(data) for _ in range(min(config.grad_accum_steps, len(sizes) - state.batches_done))]
            samples = sum(sizes[state.batches_done:state.batches_done + len(group)])
            step_loss = train_step(self.session, group, samples, self.meters.correct)
            self.meters.add(step_loss, sum(len(batch["labels"]) for batch in group))  # this rank's rows, as `correct`
            state.train_seconds += time.perf_counter() - last
            state.step, state.batches_done = state.step + 1, state.batches_done + len(group)
            state.samples_seen += samples
            self.progress.update(1)
            end_of_epoch = state.batches_done == len(sizes)
            if end_of_epoch:
                state.epoch, state.batches_done = state.epoch + 1, 0
            stopping = stop_agreed(self.session.dist, self.session.device, stop.requested, state.step)
            state.interrupted = stopping
            self._after_step(end_of_epoch, stopping)
            if stopping or state.finished or end_of_epoch or state.step == self.total_steps:
                return
            last = time.perf_counter()  # evaluation and checkpoints do not count as training time

    def _after_step(self, end_of_epoch: bool, stopping: bool) -> None:
        """Log, evaluate and checkpoint when they are due after a step."""
        state, config, session = self.state, self.config, self.session
        eval_due = self.steps.evaluates and ((end_of_epoch and config.eval_every_steps == 0) or
                                             state.step == self.total_steps or
                                             bool(config.eval_every_steps and state.step % config.eval_every_steps == 0))
        # An evaluation is a checkpoint when it scores validation rows (it may be the best); without them it records
        # the training scores alone, and a few-shot head's 4-step epochs would write the whole model every 4 steps.
        checkpoint_due = (eval_due and self.validation is not None) or state.step == self.total_steps or \
            bool(config.checkpoint_every_steps and state.step % config.checkpoint_every_steps == 0)
        if self.meters.running_steps == LOG_EVERY_STEPS or end_of_epoch or state.step == self.total_steps:
            # The GPU runs behind the host: wait for the queued steps here and count that wait as
            # training time, or train_seconds would miss most of the device's work.
            state.train_seconds += wait_for_device(session.device)
            train_loss = self.meters.take_logged_loss()
            rate = state.samples_seen / max(state.train_seconds, 1e-9)
            self.progress.set_postfix(loss=f"{train_loss:.4f}", samples_s=f"{rate:.1f}")
            self.hooks.on_scalars(state.step, {"train/loss": train_loss, "train/lr": session.scheduler.get_last_lr()[0],
                                               "train/samples_per_second": rate})
        if checkpoint_due:
            state.train_seconds += wait_for_device(session.device)  # as above, before untimed work
        if eval_due:
            self._evaluate_and_record(self.meters.take_train_scores())
        if checkpoint_due or stopping or state.finished:
            state.since_eval = self.meters.snapshot()
            self.hooks.on_checkpoint(state, self.keeps_last)

    def _evaluate_and_record(self, train_scores: dict[str, float]) -> None:
        state, config = self.state, self.config
        # Without a validation split (data.validation_fraction 0) an evaluation records the training scores alone.
        metrics = evaluate(self.session, self.validation, self.names) if self.validation is not None else {}
        score = metrics.get(config.metric)
        improved = self.keeps_last or is_improvement(config.metric, score, state.best_score)  # keep last: no best to trust
        if improved:
            state.best_score, state.best_step, state.stale_evals = score, state.step, 0
        else:
            state.stale_evals += 1
        record = {"step": state.step, "epoch": state.epoch, **train_scores, **{f"eval/{k}": v for k, v in metrics.items()}}
        state.history.append(record)
        if score is None:  # said once: a few-shot head evaluates (its training scores) every few steps
            level = logging.INFO if len(state.history) == 1 else logging.DEBUG
            log.log(level, "step %d: no validation split, the last weights are kept", state.step)
        else:
            mark = " (kept: train.keep last)" if self.keeps_last else " (best)" if improved else ""
            log.info("step %d: eval/%s=%.4f%s", state.step, config.metric, score, mark)
        self.hooks.on_eval(state, record, improved and not self.keeps_last)
        if config.early_stopping_patience and state.stale_evals >= config.early_stopping_patience:
            log.info("early stop: no improvement in %d evaluations", state.stale_evals)
            state.finished = True


def stop_agreed(dist: Distributed, device: torch.device, requested: bool, step: int) -> bool:
    """Whether to stop after this step. Under DDP all ranks stop together (one stopping alone would leave
    the others waiting in the next collective): they compare their Ctrl-C flags after every step on CPU,
    and every LOG_EVERY_STEPS on GPU, where reading the flag back waits for the device (as logging does)."""
    if not dist.enabled:
        return requested
    if device.type == "cuda" and step % LOG_EVERY_STEPS:
        return False
    return any_rank(requested, device)


class _Meters:
    """Device-side sums read back rarely: the logged loss (every LOG_EVERY_STEPS) and the training
    loss and accuracy since the last evaluation (stored with it, so curves compare train vs validation)."""

    def __init__(self, device: torch.device, since_eval: dict[str, float]):
        self.running_loss, self.running_steps = torch.zeros((), device=device), 0
        self.loss = torch.tensor(float(since_eval["loss"]), device=device)
        self.correct = torch.tensor(int(since_eval["correct"]), device=device)
        self.steps, self.samples = int(since_eval["steps"]), int(since_eval["samples"])

    def add(self, step_loss: torch.Tensor, samples: int) -> None:
        self.running_loss += step_loss
        self.loss += step_loss
        self.running_steps, self.steps, self.samples = self.running_steps + 1, self.steps + 1, self.samples + samples

    def take_logged_loss(self) -> float:
        value = self.running_loss.item() / max(1, self.running_steps)
        self.running_loss.zero_()
        self.running_steps = 0
        return value

    def take_train_scores(self) -> dict[str, float]:
        scores = {"train/loss": self.loss.item() / max(1, self.steps),
                  "train/accuracy": self.correct.item() / max(1, self.samples)}
        self.loss.zero_()
        self.correct.zero_()
        self.steps = self.samples = 0
        return scores

    def snapshot(self) -> dict[str, float]:
        """Plain numbers for the checkpoint, so a resumed run continues the same averages."""
        return {"loss": self.loss.item(), "steps": self.steps, "correct": int(self.correct.item()), "samples": self.samples}


def state_dict(state: LoopState) -> dict[str, Any]:
    return asdict(state)


def state_from_dict(data: dict[str, Any]) -> LoopState:
    return LoopState(**data)
