"""The environment report: versions and the device and precision a run would use (`bertfit env`, RUN/env.json)."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
import torch

from bertfit.runtime.cpu import cpu_features
from bertfit.runtime.device import BF16_MIN_SPEEDUP, choose_device, choose_precision, cpu_bf16_speedup
from bertfit.runtime.distributed import distributed_from_env


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
        "precision": choose_precision(precision_spec, device, training=True).name,  # what training uses
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_features()["bf16_matmul"],  # from the CPU's flags
        "cpu_bf16_speedup": round(cpu_bf16_speedup(), 1),  # measured: bf16 matmul speed over fp32's, one core
        "world_size": distributed_from_env().world_size,  # processes of a torchrun / accelerate job
    }
    if torch.cuda.is_available():
        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return facts


def precision_advice(facts: dict[str, Any]) -> str | None:
    """What `bertfit env` says about precision on a machine without a GPU (see runtime.device.choose_precision)."""
    if facts["cuda_available"]:
        return None
    speed = f"{facts['cpu_bf16_speedup']}x as fast as fp32 on one core"
    if facts["precision"] == "bf16":
        return (f"no GPU: training runs on the CPU in bf16 autocast, which this CPU ({facts['cpu_bf16']}) computes {speed}; "
                "set train.precision=fp32 to train in fp32")
    if facts["cpu_bf16"] != "emulated":
        return (f"no GPU: training runs on the CPU in fp32; this CPU has {facts['cpu_bf16']} but computes bf16 only {speed} "
                f"(auto takes bf16 from {BF16_MIN_SPEEDUP:g}x): train.precision=bf16 may still be faster, compare samples/s "
                "on a short run (train.max_steps)")
    return ("no GPU: training runs on the CPU in fp32, the fastest choice here (this CPU has no native bf16, "
            "avx512_bf16 or AMX, so bf16 autocast would be emulated and slower)")
