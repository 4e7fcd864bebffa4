"""What a training run leaves as it goes (evaluations, scalars, the best model and checkpoints; rank 0 only), and the
checkpoint read back to resume."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bertfit import artifacts
from bertfit.config import RunConfig
from bertfit.errors import BertfitError
from bertfit.meta import ModelMeta, read_json
from bertfit.runtime.device import Precision, choose_precision
from bertfit.runtime.distributed import Distributed, broadcast_object
from bertfit.runtime.seed import gather_rng_states, restore_rng_states
from bertfit.training.checkpoint import load_checkpoint, save_checkpoint
from bertfit.training.loop import LoopState, Session, state_dict, state_from_dict
from bertfit.training.trackers import Tracker

log = logging.getLogger(__name__)

EvalCallback = Callable[[LoopState, dict[str, Any]], None]  # (loop state, metrics record) after each evaluation


@dataclass(frozen=True)
class RunFiles:
    """Where a run writes, and what its saved model carries besides the weights."""

    run_dir: Path
    tokenizer: Any
    meta: ModelMeta  # the step is filled in when a model is saved


class RunWriter:
    """Writes evaluations, scalars, the best model and checkpoints into the run directory."""

    def __init__(self, files: RunFiles, session: Session, trackers: list[Tracker], on_eval: EvalCallback | None = None):
        self.files, self.run_dir, self.session, self.on_eval_callback = files, files.run_dir, session, on_eval
        self.trackers = trackers  # train.report_to: TensorBoard, MLflow, W&B

    def on_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log(step, scalars)

    def on_eval(self, state: LoopState, record: dict[str, Any], improved: bool) -> None:
        artifacts.append_metrics(self.run_dir, record)
        self.on_scalars(state.step, {k: v for k, v in record.items() if k.startswith("eval/")})
        if improved:
            self._save_model(state)
        if self.on_eval_callback is not None:  # last: it may raise to stop the run (search pruning)
            self.on_eval_callback(state, record)

    def on_checkpoint(self, state: LoopState, with_model: bool) -> None:
        """A resumable checkpoint; with_model: model/ too (train.keep last: the latest weights are the ones kept)."""
        if with_model:
            self._save_model(state)
        save_session(self.run_dir, self.session, state)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()

    def _save_model(self, state: LoopState) -> None:
        artifacts.save_model(self.run_dir / artifacts.MODEL_DIR, self.session.model, self.files.tokenizer,
                             dataclasses.replace(self.files.meta, step=state.step))


class SilentWriter:
    """RunHooks for ranks other than 0: they keep no files, but send rank 0 their RNG state at checkpoints."""

    def __init__(self, dist: Distributed):
        self.dist = dist

    def on_eval(self, state: LoopState, record: dict[str, Any], improved: bool) -> None: ...
    def on_checkpoint(self, state: LoopState, with_model: bool) -> None: gather_rng_states(self.dist)
    def on_scalars(self, step: int, scalars: dict[str, float]) -> None: ...
    def close(self) -> None: ...


def save_session(run_dir: Path, session: Session, state: LoopState, stage: str | None = None) -> None:
    """A resumable checkpoint of a stage's loop: the weights, the session's optimizer, schedule and scaler, the loop
    state and every rank's random streams (rank 0 writes it). `stage`: the key of a stage before the loop's."""
    rng_ranks = gather_rng_states(session.dist)
    if not session.dist.is_main:
        return
    parts = {"loop": state_dict(state), "optimizer": session.optimizer.state_dict(),
             "scheduler": session.scheduler.state_dict(), "scaler": session.scaler.state_dict()}
    # "rng" (rank 0's) stays for bertfit versions that read only that key.
    save_checkpoint(run_dir, session.model, {**({stage: parts} if stage else parts), "rng": rng_ranks[0],
                                             "rng_ranks": rng_ranks})


def restore_session(run_dir: Path, session: Session, seed: int, saved: dict[str, Any] | None = None,
                    stage: str | None = None) -> LoopState:
    """The optimizer, schedule, scaler, loop state and random streams of the checkpoint in `run_dir` (or `saved`, read
    from it already), into `session`. `stage`: the key of a stage before the loop's."""
    saved = saved if saved is not None else load_checkpoint(run_dir, session.model)
    parts = saved[stage] if stage else saved
    if "loop" not in parts:
        raise BertfitError(f"{run_dir}: its checkpoint was written by an earlier bertfit that this one cannot resume; "
                           "start the run again")
    session.optimizer.load_state_dict(parts["optimizer"])
    session.scheduler.load_state_dict(parts["scheduler"])
    session.scaler.load_state_dict(parts["scaler"])
    state = state_from_dict(parts["loop"])
    restore_rng_states(saved["rng_ranks"], session.dist, seed, state.step)
    state.interrupted = False
    if stage is None:  # a stage before the loop writes no evaluations, and says where it resumes itself
        if session.dist.is_main:
            artifacts.truncate_metrics(run_dir, state.step)
        log.info("resuming %s at step %d (epoch %d)", run_dir, state.step, state.epoch)
    return state


def training_precision(config: RunConfig, device: torch.device, resume: str | Path | None, dist: Distributed) -> Precision:
    """What training steps autocast to: train.precision, auto decided once for the run. On a CPU auto measures a core
    (runtime.device.choose_precision), so rank 0's measurement holds for every rank, and a resumed run keeps what it
    started with (its env.json): a busy core measuring otherwise would break the exact resume."""
    spec, started = config.train.precision, Path(resume or "") / "env.json"
    if resume is not None and spec == "auto" and device.type == "cpu" and started.is_file():
        spec = {"fp32": "fp32", "bf16": "bf16"}.get(read_json(started).get("precision"), spec)
    return choose_precision(broadcast_object(choose_precision(spec, device, training=True).name, dist), device, training=True)
