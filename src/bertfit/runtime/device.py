"""Device, precision, autocast, gradient scaling and compilation: the only place that decides them."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass

import torch

from bertfit.errors import BertfitError

BF16_MIN_SPEEDUP = 3.0  # AMX tiles measure 4x and more; bf16 dot-product instructions 2x at most; emulation < 1
PROBE_ROWS, PROBE_IN, PROBE_OUT = 512, 384, 1536  # a feed-forward layer of a small encoder, 512 tokens


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


def choose_precision(spec: str, device: torch.device, training: bool = False) -> Precision:
    """auto: bf16 where the GPU supports it, else fp16 on GPU; fp32 on MPS and on the CPU, except for training on a CPU
    that multiplies bf16 at least BF16_MIN_SPEEDUP times as fast as fp32 (cpu_bf16_speedup, measured because the CPU's
    flags do not tell; docs/decisions.md). Weights and optimizer state stay fp32. Inference on the CPU stays fp32,
    evaluation during training too, so that a run scores what `bertfit evaluate` gives (its fast paths are the export
    backends, deploy.choose)."""
    if spec == "auto":
        if device.type == "cuda":
            spec = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            native = device.type == "cpu" and training and cpu_bf16_speedup() >= BF16_MIN_SPEEDUP
            spec = "bf16" if native else "fp32"
    if spec == "fp16" and device.type == "cpu":
        raise BertfitError("train.precision: fp16 needs a GPU; on CPU use fp32 or bf16")
    return Precision(spec, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[spec])


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """How many times as fast one core of this CPU computes a layer-sized matmul under bf16 autocast as in fp32: the
    best of 5 repeats each, about 0.05 s, once a process. One thread, so that other work on the machine does not decide
    it; constant inputs, so that the random number streams are left untouched."""
    inputs, weight = torch.full((PROBE_ROWS, PROBE_IN), 0.5), torch.full((PROBE_OUT, PROBE_IN), 0.25)

    def fastest(dtype: torch.dtype | None) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None), torch.no_grad():
                torch.nn.functional.linear(inputs, weight)
            times.append(time.perf_counter() - started)
        return min(times)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fastest(torch.bfloat16)  # warm-up: the first bf16 call builds its kernels
        return fastest(None) / max(fastest(torch.bfloat16), 1e-9)
    finally:
        torch.set_num_threads(threads)


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)


def wait_for_device(device: torch.device) -> float:
    """Block until the device has finished its queued work; the seconds waited (0 on CPU, which never queues)."""
    if device.type != "cuda":
        return 0.0
    started = time.perf_counter()
    torch.cuda.synchronize(device)
    return time.perf_counter() - started


def make_scaler(device: torch.device, precision: Precision) -> torch.amp.GradScaler:
    """A real scaler for fp16; a disabled one (a no-op with the same API) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)


def compile_model(model: torch.nn.Module) -> None:
    """torch.compile `model` in place (its state_dict keys, saving and loading stay as they are).

    dynamic=None: the first batch compiles for its exact shape, and a second shape recompiles with
    symbolic sizes. Length bucketing pads to a multiple of 8, so the few batch widths share one
    dynamic graph instead of one graph per width (dynamic=False would recompile per width and soon
    hit dynamo's recompile limit).
    """
    device = next(model.parameters()).device
    problem = compile_toolchain_problem(device)
    if problem is not None:
        raise BertfitError(f"train.compile: {problem}; install it or set train.compile false")
    model.compile(dynamic=None)


def compile_toolchain_problem(device: torch.device) -> str | None:
    """Why torch.compile's default backend (inductor) cannot build kernels here, or None when it can."""
    import importlib.util
    import shutil

    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "inductor needs Triton on GPU and it is not installed"
    if device.type == "cpu" and not any(shutil.which(name) for name in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        return "inductor needs a C++ compiler on CPU (g++ or clang++) and none is on PATH"
    if device.type == "mps":
        return "torch.compile is not supported on MPS by bertfit"
    return None


def set_cpu_threads(threads: int) -> None:
    """Threads PyTorch uses for one CPU operation (process-wide)."""
    if threads < 1:
        raise BertfitError(f"threads: must be >= 1, got {threads}")
    torch.set_num_threads(threads)
