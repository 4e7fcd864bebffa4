"""This process's place in a torchrun / accelerate / mpirun job, and the few collectives training uses."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bertfit.errors import BertfitError
from bertfit.runtime.device import choose_device

log = logging.getLogger(__name__)


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
    if not dist.enabled and not _started_by_torchrun():
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
        # device_id binds NCCL to this rank's GPU and creates its communicator now, so a broken NCCL
        # set-up fails here, at the start, rather than at the first all-reduce.
        nccl = device.type == "cuda"
        torch.distributed.init_process_group("nccl" if nccl else "gloo", rank=dist.rank, world_size=dist.world_size,
                                             **({"device_id": device} if nccl else {}))
        dist = dataclasses.replace(dist, owns_group=True)
    return dist, device


def _started_by_torchrun() -> bool:
    """torchrun (or `accelerate launch`, which runs it) started this process, also as a job of one process.

    A 1-process torchrun job joins its process group (nccl on GPU) like an N-process one, so a launch
    tested on one GPU goes through the same start as on eight; it then trains as a single process.
    """
    return "TORCHELASTIC_RUN_ID" in os.environ and "MASTER_ADDR" in os.environ


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
