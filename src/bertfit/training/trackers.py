"""Where a run's scalars and config go besides metrics.jsonl: TensorBoard, MLflow, Weights & Biases (train.report_to).

One small class per backend, each imported only when named, so a run that reports to TensorBoard
alone never imports mlflow or wandb. All receive the same scalars (train/*, eval/*) at the same
steps, and the same flattened config (`train.lr`, `model.name`, ...) as parameters. The MLflow and W&B
run ids are kept in RUN/trackers.json, so a resumed bertfit run goes on logging into the same tracker
runs instead of opening new ones.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

from bertfit.atomic import write_json_atomic
from bertfit.errors import BertfitError, brief

log = logging.getLogger(__name__)

MLFLOW_DB = "mlflow.db"  # the default local store, beside the runs: one file compares them all
MLFLOW_PARAMS_PER_CALL = 100  # the most parameters one MLflow log_batch request takes
WANDB_PROJECT = "bertfit"  # unless WANDB_PROJECT says otherwise
IDS_FILE = "trackers.json"  # {"mlflow": run id, "wandb": run id}: what a resumed run reopens


class Tracker(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class TensorBoardTracker:
    def __init__(self, run_dir: Path, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class MlflowTracker:
    """One MLflow run per bertfit run, named like it, in the experiment `bertfit`; `run_id`: reopen that run
    (a resumed bertfit run), whose parameters are already logged."""

    def __init__(self, run_dir: Path, params: dict[str, Any], uri: str | None, run_id: str | None = None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.uri = uri or default_mlflow_uri(run_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        if run_id is not None:
            try:
                self.client.update_run(run_id, status="RUNNING")
            except Exception as error:  # deleted, or kept in another store: logged into a new run, said so
                log.warning("MLflow run %s could not be reopened in %s (%s); logging into a new run", run_id, self.uri,
                            brief(error))
            else:
                self.run_id = run_id
                log.info("MLflow run %s in %s, resumed", self.run_id, self.uri)
                return
        experiment = self.client.get_experiment_by_name("bertfit")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("bertfit")
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), MLFLOW_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[start:start + MLFLOW_PARAMS_PER_CALL])
        log.info("MLflow run %s in %s", self.run_id, self.uri)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in scalars.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """A W&B run under RUN/wandb/; WANDB_MODE=offline writes it there without an account (`wandb sync` uploads it).
    `run_id`: go on with that run (a resumed bertfit run)."""

    def __init__(self, run_dir: Path, params: dict[str, Any], run_id: str | None = None):
        import wandb

        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=run_dir.name,
                                  dir=str(run_dir.resolve()), config=params, reinit="create_new",
                                  **({"id": run_id, "resume": "allow"} if run_id else {}))
        except Exception as error:  # wandb raises several types: no login, no network, bad settings
            raise BertfitError(f"train.report_to: W&B could not start ({brief(error)}); run `wandb login`, or set "
                               "WANDB_MODE=offline to write the run under RUN/wandb without an account") from None

    @property
    def run_id(self) -> str:
        return self.run.id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


def default_mlflow_uri(run_dir: Path) -> str:
    """MLflow's SQLite store beside the run directories (its file store is frozen and refused by default)."""
    return f"sqlite:///{(run_dir.parent / MLFLOW_DB).resolve()}"


def open_trackers(names: tuple[str, ...], run_dir: Path, params: dict[str, Any], purge_step: int | None = None,
                  mlflow_uri: str | None = None) -> list[Tracker]:
    """The trackers `names` asks for (train.report_to); a missing package is a BertfitError saying what to install.
    A resumed run (`purge_step` set) reopens the MLflow and W&B runs named in RUN/trackers.json."""
    ids = _read_ids(run_dir) if purge_step is not None else {}
    openers = {"tensorboard": lambda: TensorBoardTracker(run_dir, purge_step),
               "mlflow": lambda: MlflowTracker(run_dir, params, mlflow_uri, ids.get("mlflow")),
               "wandb": lambda: WandbTracker(run_dir, params, ids.get("wandb"))}
    trackers: list[Tracker] = []
    try:
        for name in dict.fromkeys(names):
            try:
                trackers.append(openers[name]())
            except ImportError as error:
                raise BertfitError(f"train.report_to: {name} needs its package ({error.name} is missing); "
                                   "pip install 'bertfit[track]'") from None
    except BaseException:  # the ones already open are finished, not left running
        for tracker in trackers:
            tracker.close()
        raise
    opened = {name: tracker.run_id for name, tracker in zip(dict.fromkeys(names), trackers) if hasattr(tracker, "run_id")}
    if opened:
        write_json_atomic(run_dir / IDS_FILE, opened)
    return trackers


def _read_ids(run_dir: Path) -> dict[str, str]:
    """The tracker run ids an earlier start of this run kept (none if it kept none)."""
    path = run_dir / IDS_FILE
    try:
        ids = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as error:
        ids = None
        log.warning("%s: unreadable (%s); MLflow and W&B start new runs", path, brief(error))
    if not isinstance(ids, dict):
        return {}
    return {key: value for key, value in ids.items() if isinstance(value, str)}
