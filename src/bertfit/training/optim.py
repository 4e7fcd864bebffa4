"""AdamW with decoupled weight decay, and the learning-rate schedule as a pure function."""

from __future__ import annotations

import math

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases and normalisation weights (1-D tensors) are not decayed."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    # The fused kernel: one launch for all parameters on GPU; on CPU 5x faster a step than the default per-tensor
    # loop (MiniLM-L6 on 2 cores: 19 ms against 89-98 ms), which took half of a contrastive step of 8 texts.
    # torch before 2.4 has no CPU fused kernel: the per-tensor loop there.
    fused = device.type == "cuda" or (device.type == "cpu" and torch_version() >= (2, 4))
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, fused=fused)


def torch_version() -> tuple[int, int]:
    """The installed torch as (major, minor), so a feature newer than bertfit's lowest torch is used only where it exists."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: 0 -> 1 over warmup_steps, then 1 -> 0 linearly at total_steps."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    remaining = total_steps - step
    return max(0.0, remaining / max(1, total_steps - warmup_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_ratio: float, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = math.ceil(warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_warmup_decay(step, warmup_steps, total_steps))
