"""Which backend a Predictor runs, and why: what serves is what passed the export's accuracy check.

`auto` on a CPU serves an exported variant only when its measured accuracy change against PyTorch is
within the export's bound (ExportMeta.served_variant: the rule `bertfit export --target auto` chooses by);
otherwise it keeps the exact PyTorch model and says why, with the measured figure. A named backend is used
as asked, with a warning when its check failed. On an accelerator, or when the export is older than the
model, PyTorch serves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bertfit.artifacts import read_model_meta
from bertfit.errors import BertfitError
from bertfit.infer import BACKEND_ALIASES, BACKENDS, STATIC, backend_name
from bertfit.meta import ExportMeta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendChoice:
    name: str  # pytorch, onnx-fp32, onnx-int8, openvino-fp32, ct2-int8, ...
    note: str | None = None  # why another backend than the one preferred, or a warning about this one


def choose_backend(asked: str, path: Path, folder: Path | None, export: ExportMeta | None, device: str) -> BackendChoice:
    """The backend for `asked` (auto, pytorch, a variant, or an alias: torch, onnx = onnx-fp32)."""
    name = backend_name(asked)
    if name not in BACKENDS:
        raise BertfitError(f"backend: unknown {asked!r}; use one of {', '.join((*BACKENDS, *BACKEND_ALIASES))}")
    if is_static_model(path):
        if name not in ("auto", STATIC):
            raise BertfitError(f"{path} is a static student: it has no network and runs in NumPy; use backend {STATIC} "
                               "(or auto)")
        return BackendChoice(STATIC)
    if name == "auto":
        if export is None or not runs_on_cpu(device) or not export_is_current(path, folder, export):
            return BackendChoice("pytorch")
        variant, passed_over = export.served_variant()
        chosen = backend_name(variant)
        if not passed_over:
            return BackendChoice(chosen)
        using = "the exact PyTorch model" if chosen == "pytorch" else chosen
        return BackendChoice(chosen, f"not serving {'; '.join(passed_over)}; using {using} instead "
                                     "(--backend NAME uses a variant anyway)")
    problem = export.accuracy_problem(name) if export is not None and name in export.files else None
    if problem is not None:
        return BackendChoice(name, f"{problem}; using it because backend {name} was asked for")
    return BackendChoice(name)


def is_static_model(path: Path) -> bool:
    """Whether `path` (a run or model folder) holds a static student (bertfit.infer.static) rather than a network."""
    try:
        return read_model_meta(path).static is not None
    except BertfitError:
        return False  # an export folder on its own, or a damaged model: the other backends say what is wrong


def runs_on_cpu(device: str) -> bool:
    """Whether `device` means the CPU here; for auto, torch is asked only where an accelerator could exist
    (importing it takes seconds, and predicting on an export needs it nowhere else)."""
    if device != "auto":
        return device == "cpu"
    if not _accelerator_possible():
        return True
    from bertfit.runtime.device import choose_device

    return choose_device(device).type == "cpu"


def _accelerator_possible() -> bool:
    """A GPU device node (NVIDIA, AMD ROCm, WSL) or an Apple-silicon Mac: torch might find a GPU."""
    import glob
    import platform

    apple_silicon = platform.system() == "Darwin" and platform.machine() == "arm64"
    return apple_silicon or bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/kfd") or glob.glob("/dev/dxg"))


def export_is_current(path: Path, folder: Path | None, export: ExportMeta) -> bool:
    """False when the model was retrained (or resumed) after the export, or its stack was built or rebuilt
    since: serving the export would be stale."""
    try:
        model = read_model_meta(path)
    except BertfitError:
        return True  # an export folder on its own: nothing to compare against
    export_step = export.model.step
    if export_step is not None and export_step != model.step:
        log.warning("%s is older than the model (step %s vs %s); using PyTorch. Re-run `bertfit export`",
                    folder, export_step, model.step)
        return False
    if export.model.stack != model.stack:
        log.warning("%s does not hold the model's current stacked ensemble; using PyTorch. Re-run `bertfit export`",
                    folder)
        return False
    return True
