"""checkpoint/: the last resumable state, stored so that loading it can never run code.

    checkpoint/model.safetensors     the model's weights
    checkpoint/state.safetensors     every tensor of the training state (optimizer moments, RNG states)
    checkpoint/training_state.pt     the rest of it (loop position, scheduler, scaler, numbers), each
                                     tensor replaced by its key in state.safetensors; a plain-data pickle
                                     read with torch.load(weights_only=True), which refuses any object
                                     that could run code

Tensors round-trip bit for bit, so a resumed run stays identical to one that never stopped.
Checkpoints of bertfit before this format (a training.pt of arbitrary pickled objects) are refused.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bertfit.artifacts import CHECKPOINT_DIR, RESULTS_FILE, WEIGHTS_FILE, read_results
from bertfit.atomic import atomic_dir
from bertfit.errors import BertfitError

STATE_TENSORS, STATE_FILE, OLD_STATE_FILE = "state.safetensors", "training_state.pt", "training.pt"
TENSOR_KEY = "__tensor__"


def save_checkpoint(run_dir: Path, model: torch.nn.Module, training_state: dict[str, Any]) -> None:
    """Model weights plus the training state (optimizer, scheduler, scaler, RNG, loop), replaced atomically."""
    with atomic_dir(Path(run_dir) / CHECKPOINT_DIR) as staging:
        save_file(_cpu(model.state_dict()), staging / WEIGHTS_FILE)
        tensors: dict[str, torch.Tensor] = {}
        skeleton = _take_tensors(training_state, tensors)
        save_file(tensors, staging / STATE_TENSORS)
        torch.save(skeleton, staging / STATE_FILE)


def load_checkpoint(run_dir: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load the weights into `model`; return the training state. Damaged files raise one clear line."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not (folder / STATE_FILE).is_file():
        if (folder / OLD_STATE_FILE).is_file():
            raise BertfitError(f"{folder / OLD_STATE_FILE}: a checkpoint of an older bertfit, whose format can run code "
                               "when loaded, so it is not read; start the run again with --overwrite")
        raise BertfitError(f"{run_dir}: no checkpoint to resume from ({folder / STATE_FILE} is missing); "
                           "the run stopped before its first checkpoint, so start it again with --overwrite")
    weights, tensors = _read_tensors(folder / WEIGHTS_FILE), _read_tensors(folder / STATE_TENSORS)
    try:
        # map_location: a GPU run's state resumes on a CPU too (load_state_dict moves it to the parameters).
        skeleton = torch.load(folder / STATE_FILE, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise BertfitError(f"{folder / STATE_FILE}: damaged checkpoint (it holds objects that could run code when "
                           "loaded, so it is not read); start the run again with --overwrite") from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise BertfitError(f"{folder / STATE_FILE}: damaged checkpoint ({_first_line(error)}); "
                           "start the run again with --overwrite") from None
    try:
        state = _put_tensors(skeleton, tensors)
        model.load_state_dict(weights)
    except (RuntimeError, EOFError, KeyError, ValueError, TypeError, AttributeError, OSError) as error:
        raise BertfitError(f"{folder}: damaged checkpoint ({_first_line(error)}); "
                           "start the run again with --overwrite") from None
    state.setdefault("rng_ranks", [state["rng"]])  # checkpoints before per-rank states: one process's
    return state


def drop_checkpoint(run_dir: Path) -> None:
    """A finished run needs no resumable state: remove checkpoint/ (train.keep_checkpoint keeps it)."""
    shutil.rmtree(Path(run_dir) / CHECKPOINT_DIR, ignore_errors=True)


def check_resumable(run_dir: Path) -> None:
    """Refuse to resume a finished run whose checkpoint was dropped (train.keep_checkpoint: false)."""
    results = read_results(run_dir)
    if results and not (Path(run_dir) / CHECKPOINT_DIR).is_dir():
        raise BertfitError(f"resume: {run_dir} has finished (step {results.get('steps', '?')}, see "
                           f"{Path(run_dir) / RESULTS_FILE}) and kept no checkpoint; nothing to resume. Train further "
                           f"from its weights in a new run with model.init_from={run_dir}, or start it again with overwrite")


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _take_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` with every tensor moved into `tensors` and replaced by {TENSOR_KEY: its key}."""
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
        return {TENSOR_KEY: key}
    if isinstance(value, dict):
        return {k: _take_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_take_tensors(v, tensors) for v in value)
    return value


def _put_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {TENSOR_KEY}:
            return tensors[value[TENSOR_KEY]]
        return {k: _put_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_put_tensors(v, tensors) for v in value)
    return value


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise BertfitError(f"{path} is missing; the checkpoint is incomplete, start the run again with --overwrite")
    try:
        return load_file(path)
    except (SafetensorError, OSError, RuntimeError) as error:
        raise BertfitError(f"{path}: damaged ({_first_line(error)}); start the run again with --overwrite") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
