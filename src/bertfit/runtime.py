"""The only place that decides device, precision, autocast, gradient scaling and seeding."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bertfit.errors import BertfitError

log = logging.getLogger(__name__)


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


def gather_rng_states(dist: "Distributed") -> list[dict[str, Any]] | None:
    """Every rank's rng_state() in rank order on rank 0, None elsewhere (a collective: every rank calls it).
    Ranks draw different dropout masks, so an exact resume needs each rank's own generators back."""
    if not dist.enabled:
        return [rng_state()]
    states: list[Any] | None = [None] * dist.world_size if dist.is_main else None
    torch.distributed.gather_object(rng_state(), states, dst=0)
    return states


def restore_rng_states(states: list[dict[str, Any]], dist: "Distributed", seed: int, step: int) -> None:
    """This rank's saved generators; when the world size changed, fresh ones per (seed, step, rank)."""
    if len(states) == dist.world_size:
        set_rng_state(states[dist.rank])
        return
    if dist.is_main:
        log.warning("checkpoint has random states of %d process(es), this run %d: reseeding from (seed, step, rank); "
                    "dropout will differ from an uninterrupted run", len(states), dist.world_size)
    seed_everything(mixed_seed(seed, step, dist.rank))


def mixed_seed(*parts: int) -> int:
    """One seed from several numbers, mixed (SeedSequence) so (5, 1) and (6, 0) do not share a seed as a sum would."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


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
        "world_size": distributed_from_env().world_size,  # processes of a torchrun / accelerate job
    }
    if torch.cuda.is_available():
        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return facts


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun / accelerate launch job (rank 0 of 1 when launched plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we created the process group, so we destroy it (not a caller's group)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# torchrun and `accelerate launch --multi_gpu` set RANK...; mpirun (`accelerate launch --cpu --mpirun_hostfile`)
# only its own names. Unread, they would leave N processes each training alone into one run directory.
_RANK_VARIABLES = {"rank": ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"),
                   "world_size": ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"),
                   "local_rank": ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")}


def distributed_from_env() -> Distributed:
    """This process's rank, world size and local rank, from torchrun, `accelerate launch` or mpirun."""
    found = {field: next(((name, os.environ[name]) for name in names if name in os.environ), None)
             for field, names in _RANK_VARIABLES.items()}
    try:
        return Distributed(**{field: int(value[1]) for field, value in found.items() if value is not None})
    except ValueError:
        raise BertfitError(f"{', '.join(v[0] for v in found.values() if v)} must be whole numbers") from None


def init_distributed(device_spec: str = "auto") -> tuple[Distributed, torch.device]:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU); pick this rank's device.

    On GPU each process takes the GPU of its LOCAL_RANK, so one process drives one device.
    """
    dist = distributed_from_env()
    if not dist.enabled:
        if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ:
            # `accelerate launch --cpu --num_processes N` without --mpirun_hostfile starts ONE process.
            log.warning("accelerate launch --cpu started a single process; for N processes on CPU use "
                        "`accelerate launch --multi_gpu --num_processes N` (gloo when no GPU) or torchrun")
        return dist, choose_device(device_spec)
    if device_spec in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    else:
        device = choose_device(device_spec)
    if not torch.distributed.is_initialized():
        # Rank and world size given: env:// alone reads only RANK and WORLD_SIZE (not mpirun's names).
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=dist.rank,
                                             world_size=dist.world_size)
        dist = dataclasses.replace(dist, owns_group=True)
    return dist, device


def close_distributed(dist: Distributed) -> None:
    if dist.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(dist: Distributed) -> None:
    if dist.enabled:
        torch.distributed.barrier()


def broadcast_object(value: Any, dist: Distributed) -> Any:
    """Rank 0's `value` on every rank."""
    if not dist.enabled:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one."""
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def shard_rows(rows: np.ndarray, dist: Distributed) -> np.ndarray:
    """This rank's share of one global batch: the ranks together take every row exactly once."""
    return rows[dist.rank::dist.world_size]


def broadcast_parameters(model: torch.nn.Module, dist: Distributed) -> None:
    """Every rank starts from rank 0's weights (they are equal already when seeds match; this makes sure)."""
    if dist.enabled:
        for tensor in model.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)


def all_reduce_sum(parameters: list[torch.nn.Parameter], extra: torch.Tensor) -> None:
    """Sum the gradients (and `extra`, e.g. the step loss) over ranks, in place, in one collective.

    Each rank's loss is already divided by the global batch size, so the sum is the gradient of the
    global batch's mean loss: the same as one process training on the whole batch.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads] + [extra.reshape(-1).to(grads[0].dtype)])
    torch.distributed.all_reduce(flat)
    offset = 0
    for parameter, grad in zip(parameters, grads):
        parameter.grad = flat[offset:offset + grad.numel()].view_as(grad)
        offset += grad.numel()
    extra.copy_(flat[offset:].view_as(extra))
