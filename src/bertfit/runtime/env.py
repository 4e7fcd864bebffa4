"""The environment report: versions and the device and precision a run would use (`bertfit env`, RUN/env.json)."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
import torch

from bertfit.runtime.device import choose_device, choose_precision
from bertfit.runtime.distributed import distributed_from_env


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


def precision_advice(facts: dict[str, Any]) -> str | None:
    """What `bertfit env` says about precision on a machine without a GPU. bf16 autocast is suggested only where
    the CPU computes bf16 natively (avx512_bf16 or AMX); without it bf16 is emulated and measured slower than fp32."""
    if facts["cuda_available"]:
        return None
    if facts["cpu_bf16"]:
        return ("no GPU: training runs on the CPU in fp32; this CPU computes bf16 natively (avx512_bf16/AMX), "
                "so train.precision=bf16 may be faster: compare samples/s on a short run (train.max_steps)")
    return ("no GPU: training runs on the CPU in fp32, the fastest choice here (this CPU has no native bf16, "
            "avx512_bf16 or AMX, so bf16 autocast would be emulated and slower)")
