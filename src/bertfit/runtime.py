"""The only place that decides device, precision, autocast, gradient scaling and seeding."""

from __future__ import annotations

import contextlib
import os
import platform
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bertfit.errors import BertfitError


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    autocast_dtype: torch.dtype | None  # None: no autocast

    @property
    def needs_scaler(self) -> bool:
        return self.name == "fp16"


def choose_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise BertfitError(f"train.device: unknown device {spec!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BertfitError("train.device: cuda asked for, but no CUDA GPU is visible to torch "
                           f"(torch {torch.__version__}); use train.device=cpu or install a CUDA build of torch")
    return device


def choose_precision(spec: str, device: torch.device) -> Precision:
    """auto: bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU and MPS."""
    if spec == "auto":
        if device.type != "cuda":
            spec = "fp32"
        else:
            spec = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if spec == "fp16" and device.type == "cpu":
        raise BertfitError("train.precision: fp16 needs a GPU; on CPU use fp32 or bf16")
    return Precision(spec, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[spec])


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)


def make_scaler(device: torch.device, precision: Precision) -> torch.amp.GradScaler:
    """A real scaler for fp16; a disabled one (a no-op with the same API) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)


def set_cpu_threads(threads: int) -> None:
    """Threads PyTorch uses for one CPU operation (process-wide)."""
    if threads < 1:
        raise BertfitError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator the training step touches, for an exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_supports_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = cpuinfo.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def environment(device_spec: str = "auto", precision_spec: str = "auto") -> dict[str, Any]:
    """Versions and the device/precision a run would use, for `bertfit env` and RUN/env.json."""
    import tokenizers
    import transformers

    device = choose_device(device_spec)
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda_build": torch.version.cuda,
        "device": str(device),
        "precision": choose_precision(precision_spec, device).name,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_supports_bf16(),
    }
    if torch.cuda.is_available():
        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return facts
